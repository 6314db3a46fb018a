/** The on-disk NAR store: one download per NAR, verified before kept, bounded, and surviving restarts and crashes. */
import assert from 'node:assert/strict'
import { execFileSync, spawn } from 'node:child_process'
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, describe, it } from 'node:test'
import { cacheDir, fixturePath } from '../helpers/fixtures.js'
import { getArriving } from '../helpers/raw-http.js'
import { startTestUpstream, type TestUpstream } from '../helpers/test-upstream.js'
import { encodeRel, sha256Hex, startUnnar, type TestUnnar } from '../helpers/unnar.js'
import { eventually, gate } from '../helpers/wait.js'

const basic = fixturePath('basic')
const tricky = fixturePath('tricky')
const site = fixturePath('site')
const basicBase = `${basic.hash}-${basic.name}`
const trickyBase = `${tricky.hash}-${tricky.name}`
const NAR = /^\/nar\//

async function narKeyOf(cache: string, hash: string): Promise<string> {
  const text = await readFile(path.join(cacheDir(cache), `${hash}.narinfo`), 'utf8')
  return '/' + /^URL: (.*)$/m.exec(text)![1]!
}

async function cachedNars(dir: string): Promise<string[]> {
  return (await readdir(path.join(dir, 'nar')).catch(() => [] as string[])).filter((n) => n.endsWith('.nar'))
}

async function fetchSha(url: string): Promise<string> {
  const res = await fetch(url)
  assert.equal(res.status, 200, url)
  return sha256Hex(await res.arrayBuffer())
}

describe('the NAR store', { timeout: 120_000 }, () => {
  const cleanups: Array<() => Promise<void>> = []
  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup()
  })
  const upstreamFor = async (cache = 'xz') => {
    const u = await startTestUpstream({ root: cacheDir(cache) })
    cleanups.push(() => u.close())
    return u
  }
  const unnarFor = async (u: TestUpstream, env: Record<string, string> = {}) => {
    const unnar = await startUnnar([u.url], env)
    cleanups.push(() => unnar.stop())
    return unnar
  }

  it('downloads a NAR once: later requests for any of its files read the disk, also after a restart', async () => {
    const u = await upstreamFor()
    const unnar = await startUnnar([u.url])
    assert.equal(await fetchSha(unnar.store(`${basicBase}/bin/hello`)), basic.entries['bin/hello']!.sha256)
    await eventually(async () => (await cachedNars(unnar.cacheDir)).length === 1, 'the NAR is committed')
    for (const [rel, entry] of Object.entries(basic.entries)) {
      if (entry.type === 'regular') assert.equal(await fetchSha(unnar.store(`${basicBase}/${rel}`)), entry.sha256, rel)
    }
    assert.equal(u.count(NAR), 1)
    await unnar.stop({ keepCache: true })

    const again = await startUnnar([u.url], { UNNAR_CACHE_DIR: unnar.cacheDir })
    cleanups.push(() => again.stop())
    assert.equal(await fetchSha(again.store(`${basicBase}/lib/blob.bin`)), basic.entries['lib/blob.bin']!.sha256)
    assert.equal(u.count(NAR), 1, 'no NAR download after the restart')
  })

  it('shares one upstream download among 50 concurrent requests for different files', async () => {
    const u = await upstreamFor()
    const unnar = await unnarFor(u)
    const files = Object.entries(tricky.entries)
      .filter(([, e]) => e.type === 'regular')
      .slice(0, 50)
    const shas = await Promise.all(files.map(([rel]) => fetchSha(unnar.store(`${trickyBase}/${encodeRel(rel)}`))))
    assert.deepEqual(
      shas,
      files.map(([, e]) => e.sha256),
    )
    assert.equal(u.count(NAR), 1)
    assert.equal(u.count(`/${tricky.hash}.narinfo`), 1, 'concurrent lookups share one narinfo request')
  })

  /**
   * An uncompressed cache, so the bytes up to bin/hello's end are known, whose upstream holds back
   * the rest of the NAR once they are sent, until `rest` opens.
   */
  async function upstreamPausedAfterHello() {
    const u = await upstreamFor('none')
    const listing = JSON.parse(await readFile(path.join(cacheDir('none'), `${basic.hash}.ls`), 'utf8'))
    const hello = listing.root.entries.bin.entries.hello as { narOffset: number; size: number }
    const rest = gate()
    u.setFault(NAR, { kind: 'pause-after', bytes: hello.narOffset + hello.size, until: rest.opened })
    return { u, hello, rest }
  }

  it('sends the first file of a NAR before the NAR has finished downloading', async () => {
    // Stream mode: in strict mode its last byte waits for the whole NAR (the next test).
    const { u, rest } = await upstreamPausedAfterHello()
    const unnar = await unnarFor(u, { UNNAR_VERIFY: 'stream' })
    assert.equal(await fetchSha(unnar.store(`${basicBase}/bin/hello`)), basic.entries['bin/hello']!.sha256)
    assert.deepEqual(await cachedNars(unnar.cacheDir), [], 'the NAR is still downloading')
    rest.open()
    await eventually(async () => (await cachedNars(unnar.cacheDir)).length === 1, 'the download completes')
  })

  it('in strict mode sends all of a small file but its last byte while the rest of the NAR is on its way', async () => {
    const { u, hello, rest } = await upstreamPausedAfterHello()
    const unnar = await unnarFor(u)
    const body = getArriving(unnar.store(`${basicBase}/bin/hello`))
    await eventually(() => body.received() === hello.size - 1, 'all but the last byte')
    // The NAR cannot be verified before the rest of it arrives: the last byte cannot either.
    await new Promise((resolve) => setImmediate(resolve))
    assert.equal(body.received(), hello.size - 1)
    assert.equal(body.ended(), false)
    rest.open()
    await body.done
    assert.equal(await sha256Hex(body.bytes()), basic.entries['bin/hello']!.sha256)
    assert.ok(unnar.logs.some((l) => l.msg === 'request' && l.verification === 'held'))
  })

  it('finishes and keeps a download that every client walked away from', async () => {
    const u = await upstreamFor()
    u.setFault(NAR, { kind: 'throttle', bytesPerSecond: 2_000_000 })
    const unnar = await unnarFor(u)
    const controller = new AbortController()
    const res = await fetch(unnar.store(`${basicBase}/lib/blob.bin`), { signal: controller.signal })
    assert.equal(res.status, 200)
    controller.abort()
    await eventually(async () => (await cachedNars(unnar.cacheDir)).length === 1, 'the abandoned download is kept')
    assert.equal(await fetchSha(unnar.store(`${basicBase}/lib/blob.bin`)), basic.entries['lib/blob.bin']!.sha256)
    assert.equal(u.count(NAR), 1)
  })

  it('aborts the client transfer when the upstream connection breaks mid-NAR, keeps nothing, and retries next time', async () => {
    const u = await upstreamFor('none')
    u.setFault(NAR, { kind: 'reset-after', bytes: 1_000_000 })
    const unnar = await unnarFor(u)
    const res = await fetch(unnar.store(`${basicBase}/lib/blob.bin`))
    assert.equal(res.status, 200)
    await assert.rejects(res.arrayBuffer(), 'the body must not look complete')
    await eventually(() => unnar.logs.some((l) => l.msg === 'NAR download failed'), 'the failure is logged')
    assert.deepEqual(await cachedNars(unnar.cacheDir), [])
    await eventually(
      async () => (await readdir(path.join(unnar.cacheDir, 'tmp'))).length === 0,
      'no temp file is left behind',
    )
    u.clearFaults()
    assert.equal(await fetchSha(unnar.store(`${basicBase}/lib/blob.bin`)), basic.entries['lib/blob.bin']!.sha256)
    assert.equal(u.count(NAR), 2)
  })

  it('never keeps a NAR that does not match its NarHash, and logs which upstream sent it', async () => {
    const u = await upstreamFor('none')
    const narKey = await narKeyOf('none', basic.hash)
    const nar = await readFile(path.join(cacheDir('none'), narKey))
    const listing = JSON.parse(await readFile(path.join(cacheDir('none'), `${basic.hash}.ls`), 'utf8'))
    const blob = listing.root.entries.lib.entries['blob.bin'] as { narOffset: number }
    const corrupt = Buffer.from(nar)
    corrupt[blob.narOffset + 1000]! ^= 0xff // inside lib/blob.bin's contents: still a well-formed NAR
    u.setFault(narKey, { kind: 'replace', body: corrupt })
    const unnar = await unnarFor(u)
    const res = await fetch(unnar.store(`${basicBase}/bin/hello`))
    await res.arrayBuffer().catch(() => undefined)
    await eventually(() => unnar.logs.some((l) => l.msg === 'NAR download failed'), 'the mismatch is logged')
    const failure = unnar.logs.find((l) => l.msg === 'NAR download failed')!
    assert.equal(failure.upstream, u.url)
    assert.match(String(failure.error), /does not match its NarHash/)
    assert.deepEqual(await cachedNars(unnar.cacheDir), [])
    u.clearFaults()
    assert.equal(await fetchSha(unnar.store(`${basicBase}/bin/hello`)), basic.entries['bin/hello']!.sha256)
    await eventually(async () => (await cachedNars(unnar.cacheDir)).length === 1, 'the good NAR is kept')
  })

  it('keeps no file of a NAR that failed its NarHash in memory either: each request downloads again', async () => {
    const u = await upstreamFor('none')
    const narKey = await narKeyOf('none', basic.hash)
    const corrupt = Buffer.from(await readFile(path.join(cacheDir('none'), narKey)))
    const listing = JSON.parse(await readFile(path.join(cacheDir('none'), `${basic.hash}.ls`), 'utf8'))
    corrupt[listing.root.entries.lib.entries['blob.bin'].narOffset + 1000]! ^= 0xff // bin/hello's bytes stay intact
    u.setFault(narKey, { kind: 'replace', body: corrupt })
    const unnar = await unnarFor(u)
    for (let i = 1; i <= 2; i++) {
      const res = await fetch(unnar.store(`${basicBase}/bin/hello`))
      await res.arrayBuffer().catch(() => undefined)
      await eventually(
        () => unnar.logs.filter((l) => l.msg === 'NAR download failed').length === i,
        `download ${i} fails`,
      )
    }
    assert.equal(u.count(NAR), 2)
  })

  it('cuts off a NAR that grows past its NarSize', async () => {
    const u = await upstreamFor('none')
    const narKey = await narKeyOf('none', site.hash)
    const nar = await readFile(path.join(cacheDir('none'), narKey))
    u.setFault(narKey, { kind: 'replace', body: Buffer.concat([nar, Buffer.alloc(10_000_000)]) })
    const unnar = await unnarFor(u)
    const res = await fetch(unnar.store(`${site.hash}-${site.name}/index.html`))
    await res.arrayBuffer().catch(() => undefined)
    await eventually(() => unnar.logs.some((l) => l.msg === 'NAR download failed'), 'the oversize NAR is refused')
    assert.match(String(unnar.logs.find((l) => l.msg === 'NAR download failed')!.error), /larger than its NarSize/)
    assert.deepEqual(await cachedNars(unnar.cacheDir), [])
  })

  it('stays under its size bound by evicting the least recently used NARs', async () => {
    const u = await upstreamFor()
    const bound = 3_650_000 // basic (3,304,184) + tricky (323,280) fit; adding site (55,776) does not
    const unnar = await unnarFor(u, { UNNAR_CACHE_SIZE: String(bound), UNNAR_MAX_NAR_SIZE: '4M' })
    const used = async () => {
      let total = 0
      for (const name of await cachedNars(unnar.cacheDir))
        total += (await stat(path.join(unnar.cacheDir, 'nar', name))).size
      return total
    }
    const siteFile = `${site.hash}-${site.name}/index.html`
    await fetchSha(unnar.store(`${trickyBase}/chain/target.txt`))
    await eventually(async () => (await cachedNars(unnar.cacheDir)).length === 1, 'tricky cached')
    await fetchSha(unnar.store(`${basicBase}/bin/hello`))
    await eventually(async () => (await cachedNars(unnar.cacheDir)).length === 2, 'basic cached')
    await fetchSha(unnar.store(`${trickyBase}/chain/target.txt`)) // tricky is now more recent than basic
    await fetchSha(unnar.store(siteFile))
    await eventually(async () => (await cachedNars(unnar.cacheDir)).length === 2, 'basic evicted')
    assert.ok((await used()) <= bound, `${await used()} bytes on disk`)
    const before = u.count(NAR)
    await fetchSha(unnar.store(`${trickyBase}/chain/target.txt`))
    await fetchSha(unnar.store(siteFile))
    assert.equal(u.count(NAR), before, 'tricky and site are still cached')
    await fetchSha(unnar.store(`${basicBase}/bin/hello`))
    assert.equal(u.count(NAR), before + 1, 'basic was the one evicted')
  })

  it('streams a NAR larger than UNNAR_MAX_NAR_SIZE through without keeping it', async () => {
    const u = await upstreamFor()
    const unnar = await unnarFor(u, { UNNAR_MAX_NAR_SIZE: '1M' })
    assert.equal(await fetchSha(unnar.store(`${basicBase}/lib/blob.bin`)), basic.entries['lib/blob.bin']!.sha256)
    await eventually(
      async () => (await readdir(path.join(unnar.cacheDir, 'tmp'))).length === 0,
      'the temp file is removed',
    )
    assert.deepEqual(await cachedNars(unnar.cacheDir), [])
  })

  it('keeps serving straight from the upstream when the cache directory is unusable', async () => {
    const u = await upstreamFor()
    const unnar = await unnarFor(u, { UNNAR_CACHE_DIR: '/dev/null/unnar-cannot-exist' })
    assert.equal(
      await fetchSha(unnar.store(`${basicBase}/lib/libfoo.so.1.2`)),
      basic.entries['lib/libfoo.so.1.2']!.sha256,
    )
    assert.equal(await fetchSha(unnar.store(`${basicBase}/bin/hello`)), basic.entries['bin/hello']!.sha256)
    assert.ok(unnar.logs.some((l) => l.level === 'error' && /cache directory/.test(String(l.msg))))
  })

  it('keeps answering when the cache filesystem is full', async (t) => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'unnar-full-'))
    cleanups.push(() => rm(dir, { recursive: true, force: true }))
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', dir], { stdio: 'ignore' })
    } catch {
      t.skip('mounting a small tmpfs needs root')
      return
    }
    cleanups.push(async () => {
      execFileSync('umount', ['-l', dir])
    })
    const u = await upstreamFor()
    const unnar = await unnarFor(u, { UNNAR_CACHE_DIR: dir, UNNAR_CACHE_SIZE: '100M', UNNAR_MAX_NAR_SIZE: '100M' })
    // basic's NAR (3.3 MB) cannot fit in 2 MB: served straight from the upstream, and said so.
    assert.equal(await fetchSha(unnar.store(`${basicBase}/lib/blob.bin`)), basic.entries['lib/blob.bin']!.sha256)
    assert.ok(unnar.logs.some((l) => /not enough free space/.test(String(l.msg))))
    // A NAR that fits is still cached.
    assert.equal(
      await fetchSha(unnar.store(`${trickyBase}/chain/target.txt`)),
      tricky.entries['chain/target.txt']!.sha256,
    )
    await eventually(async () => (await cachedNars(dir)).length === 1, 'the small NAR is cached')
    assert.deepEqual(
      await readdir(path.join(dir, 'tmp')),
      [],
      'the temp file opened beside the failed free-space check is gone',
    )
  })

  it('recovers from kill -9 in the middle of a download: no partial entry is ever used', async () => {
    const u = await upstreamFor()
    u.setFault(NAR, { kind: 'throttle', bytesPerSecond: 500_000 })
    const dir = await mkdtemp(path.join(os.tmpdir(), 'unnar-crash-'))
    cleanups.push(() => rm(dir, { recursive: true, force: true }))
    const child = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        'src/main.ts',
        '--port',
        '0',
        '--listen',
        '127.0.0.1:0',
        '--upstream',
        u.url,
        '--cache-dir',
        dir,
      ],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    )
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    await eventually(() => /unnar listening/.test(stderr), 'the child starts', 20_000)
    const url = /"url":"([^"]+)"/.exec(stderr)![1]!
    const res = await fetch(`${url}/nix/store/${basicBase}/lib/blob.bin`)
    assert.equal(res.status, 200)
    await eventually(async () => (await readdir(path.join(dir, 'tmp'))).length > 0, 'a temp file exists')
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.kill('SIGKILL')
    await res.arrayBuffer().catch(() => undefined)
    await exited

    u.clearFaults()
    const unnar: TestUnnar = await startUnnar([u.url], { UNNAR_CACHE_DIR: dir })
    cleanups.push(() => unnar.stop({ keepCache: true }))
    assert.deepEqual(await readdir(path.join(dir, 'tmp')), [], 'leftover temp files are deleted at start')
    assert.deepEqual(await cachedNars(dir), [])
    assert.equal(await fetchSha(unnar.store(`${basicBase}/lib/blob.bin`)), basic.entries['lib/blob.bin']!.sha256)
  })
})
