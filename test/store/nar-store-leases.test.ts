/** A request's lease on a NAR: its bytes stay readable however the download or the LRU moves on meanwhile. */
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { access, mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { after, describe, it } from 'node:test'
import { createLogger } from '../../src/log.js'
import type { NarSource } from '../../src/store/nar-source.js'
import { NarStore, narKey } from '../../src/store/nar-store.js'
import { FileUpstream } from '../../src/upstream/file-upstream.js'
import { PathInfoLookup, type PathInfo } from '../../src/upstream/path-info-lookup.js'
import { cacheDir, fixturePath } from '../helpers/fixtures.js'
import { eventually } from '../helpers/wait.js'

const log = createLogger('silent')
const basic = fixturePath('basic')
const site = fixturePath('site')

async function infoOf(kind: { hash: string }): Promise<PathInfo> {
  const lookup = new PathInfoLookup([new FileUpstream(pathToFileURL(cacheDir('none')))], {
    log,
    negativeTtlMs: 1000,
    maxEntries: 10,
    trustedKeys: () => undefined,
  })
  const info = await lookup.find(kind.hash)
  assert.ok(info !== undefined)
  return info
}

/** The sha256 of `bin/hello` of the basic fixture, read through `source`. */
async function helloSha(source: NarSource): Promise<string> {
  const node = await source.node(['bin', 'hello'])
  assert.ok(node?.type === 'regular' && node.narOffset !== undefined)
  return createHash('sha256')
    .update(await source.readBytes(node.narOffset, node.narOffset + node.size))
    .digest('hex')
}

describe('NarStore leases', () => {
  const dirs: string[] = []
  after(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true })
  })
  const storeOf = async (maxBytes: number) => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'unnar-leases-'))
    dirs.push(dir)
    const store = new NarStore({ dir, maxBytes, maxNarBytes: maxBytes, log })
    await store.init()
    return { store, dir }
  }

  it('a download held by a request stays readable after it was committed and every read ended', async () => {
    const { store } = await storeOf(1024 ** 3)
    const info = await infoOf(basic)
    const lease = await store.open(info)
    await lease.source.listing()
    await store.idle(10_000)
    assert.ok(store.has(info), 'committed')
    // Two reads, one after the other, as a request sniffing a type and then sending the body does.
    assert.equal(await helloSha(lease.source), basic.entries['bin/hello']!.sha256)
    assert.equal(await helloSha(lease.source), basic.entries['bin/hello']!.sha256)
    lease.release()
    lease.release()
    await store.close()
  })

  it('an evicted NAR stays on disk while a request holds it, and goes once released', async () => {
    const [basicInfo, siteInfo] = await Promise.all([infoOf(basic), infoOf(site)])
    // Room for either NAR, not both.
    const { store, dir } = await storeOf(Math.max(basicInfo.narInfo.narSize, siteInfo.narInfo.narSize) + 1)
    const first = await store.open(basicInfo)
    await first.source.listing()
    first.release()
    await store.idle(10_000)
    const held = await store.open(basicInfo)
    assert.equal(held.source.verified, true, 'the cached copy')
    const other = await store.open(siteInfo)
    await other.source.listing()
    other.release()
    await store.idle(10_000)
    assert.equal(store.has(basicInfo), false, 'evicted')
    assert.equal(await helloSha(held.source), basic.entries['bin/hello']!.sha256)
    const file = path.join(dir, 'nar', `${narKey(basicInfo)}.nar`)
    await access(file)
    held.release()
    await eventually(
      async () =>
        access(file).then(
          () => false,
          () => true,
        ),
      'the evicted NAR is unlinked once released',
    )
    await store.close()
  })
})
