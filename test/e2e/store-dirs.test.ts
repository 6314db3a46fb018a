/** Upstreams for other store dirs: a cache declaring `StoreDir: /opt/store` answers `/opt/store/<hash>-…`. */
import assert from 'node:assert/strict'
import { cp, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { cacheDir, fixturePath } from '../helpers/fixtures.js'
import { startTestUpstream, type TestUpstream } from '../helpers/test-upstream.js'
import { sha256Hex, startUnnar } from '../helpers/unnar.js'
import { eventually } from '../helpers/wait.js'

const basic = fixturePath('basic')
const LIB = 'lib/libfoo.so.1.2'

/**
 * The `none` fixture cache moved to /opt/store: nix-cache-info and every StorePath say so. NAR bytes
 * do not depend on the store dir; signatures are dropped (they cover the store path).
 */
async function optStoreCache(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'unnar-opt-store-'))
  await cp(cacheDir('none'), dir, { recursive: true })
  await writeFile(path.join(dir, 'nix-cache-info'), 'StoreDir: /opt/store\n')
  for (const name of (await readdir(dir)).filter((n) => n.endsWith('.narinfo'))) {
    const text = await readFile(path.join(dir, name), 'utf8')
    await writeFile(
      path.join(dir, name),
      text.replace(/^StorePath: \/nix\/store\//m, 'StorePath: /opt/store/').replace(/^Sig: .*\n/gm, ''),
    )
  }
  return dir
}

describe('other store dirs', { timeout: 60_000 }, () => {
  let optDir: string
  let nixUpstream: TestUpstream
  let optUpstream: TestUpstream
  const cleanups: Array<() => Promise<void>> = []
  before(async () => {
    optDir = await optStoreCache()
    nixUpstream = await startTestUpstream({ root: cacheDir('xz') })
    optUpstream = await startTestUpstream({ root: optDir })
    cleanups.push(
      () => nixUpstream.close(),
      () => optUpstream.close(),
      () => rm(optDir, { recursive: true, force: true }),
    )
  })
  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup()
  })

  it('serves each store dir from the upstreams that declare it', async () => {
    const unnar = await startUnnar([nixUpstream.url, optUpstream.url])
    cleanups.push(() => unnar.stop())
    await eventually(
      () => unnar.logs.some((l) => l.msg === 'serving another store dir' && l.storeDir === '/opt/store'),
      'the /opt/store route',
    )
    const opt = await fetch(`${unnar.url}/opt/store/${basic.hash}-${basic.name}/${LIB}`)
    assert.equal(opt.status, 200)
    assert.equal(await sha256Hex(await opt.arrayBuffer()), basic.entries[LIB]!.sha256)
    assert.equal(optUpstream.count(`/${basic.hash}.narinfo`), 1)
    assert.equal(
      nixUpstream.count(`/${basic.hash}.narinfo`),
      0,
      'the /nix/store upstream is not asked for /opt/store paths',
    )

    const nix = await fetch(`${unnar.url}/nix/store/${basic.hash}-${basic.name}/${LIB}`)
    assert.equal(nix.status, 200)
    await nix.arrayBuffer()
    assert.equal(
      optUpstream.count(`/${basic.hash}.narinfo`),
      1,
      'the /opt/store upstream is not asked for /nix/store paths',
    )

    const listing = await (
      await fetch(`${unnar.url}/opt/store/${basic.hash}-${basic.name}/`, { headers: { accept: 'text/html' } })
    ).text()
    assert.match(listing, /\/opt\/store\//)
    assert.equal((await fetch(`${unnar.url}/opt/store/${'0'.repeat(32)}-x/`)).status, 404)
  })

  it('reports an upstream whose store dir is not in UNNAR_STORE_DIRS, and does not serve it', async () => {
    const unnar = await startUnnar([nixUpstream.url, optUpstream.url], { UNNAR_STORE_DIRS: '/nix/store' })
    cleanups.push(() => unnar.stop())
    await eventually(
      () =>
        unnar.logs.some(
          (l) => l.msg === 'upstream is for a store dir that is not served (UNNAR_STORE_DIRS)' && l.level === 'error',
        ),
      'the start-up error',
    )
    assert.equal((await fetch(`${unnar.url}/opt/store/${basic.hash}-${basic.name}/${LIB}`)).status, 404)
  })
})
