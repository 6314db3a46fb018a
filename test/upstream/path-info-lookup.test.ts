/** The narinfo and `.ls` caches of PathInfoLookup against a real HTTP test upstream: what is remembered, and for how long. */
import assert from 'node:assert/strict'
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, describe, it } from 'node:test'
import { maxListingBytes } from '../../src/formats/listing.js'
import { createLogger } from '../../src/log.js'
import { HttpUpstream } from '../../src/upstream/http-upstream.js'
import { EARLY_MAX_BYTES } from '../../src/upstream/listings.js'
import { PathInfoLookup } from '../../src/upstream/path-info-lookup.js'
import { cacheDir, fixturePath } from '../helpers/fixtures.js'
import { startTestUpstream, type TestUpstream } from '../helpers/test-upstream.js'
import { elapse, gate } from '../helpers/wait.js'

const basic = fixturePath('basic')
const site = fixturePath('site')
const log = createLogger('silent')

describe('PathInfoLookup caches', () => {
  const upstreams: TestUpstream[] = []
  const start = async (root = cacheDir('xz')) => {
    const upstream = await startTestUpstream({ root })
    upstreams.push(upstream)
    return { upstream, http: new HttpUpstream(new URL(upstream.url), { userAgent: 'test', timeoutMs: 2000 }) }
  }
  const lookupOf = (http: readonly HttpUpstream[], options: { negativeTtlMs?: number; maxEntries?: number } = {}) =>
    new PathInfoLookup(http, {
      log,
      negativeTtlMs: options.negativeTtlMs ?? 60_000,
      maxEntries: options.maxEntries ?? 100,
      trustedKeys: () => undefined,
    })
  const dirs: string[] = []
  after(async () => {
    for (const upstream of upstreams) await upstream.close()
    for (const dir of dirs) await rm(dir, { recursive: true })
  })

  it('asks for a `.ls` again once the upstream that failed it may have recovered', async () => {
    const { upstream, http } = await start()
    const lookup = lookupOf([http], { negativeTtlMs: 100 })
    // Before the lookup: its `.ls` is requested beside the narinfo.
    upstream.setFault(`/${basic.hash}.ls`, { kind: 'status', status: 503 })
    const info = await lookup.find(basic.hash)
    assert.ok(info !== undefined)
    assert.equal(await lookup.listing(info), undefined, 'no listing while the upstream fails')
    upstream.clearFaults()
    await elapse(150) // time is the subject: past the negative TTL
    assert.ok((await lookup.listing(info)) !== undefined, 'the listing once it answers again')
  })

  it('requests the `.ls` beside the narinfo, once, and listing() uses that answer', async () => {
    const { upstream, http } = await start()
    const lookup = lookupOf([http])
    const held = gate()
    upstream.setFault(`/${basic.hash}.narinfo`, { kind: 'hold', until: held.opened })
    const finding = lookup.find(basic.hash)
    await upstream.arrived(`/${basic.hash}.ls`) // asked while the narinfo is still on its way
    held.open()
    const info = await finding
    assert.ok(info !== undefined)
    const listing = await lookup.listing(info)
    assert.equal(listing?.root.type, 'directory')
    assert.equal(upstream.count(`/${basic.hash}.ls`), 1, 'not asked a second time')
  })

  it('asks only the first upstream for a `.ls` beside the narinfo, and takes the listing from the one that has the path', async () => {
    const { upstream: empty, http: first } = await start(cacheDir('zstd'))
    empty.setFault(/\.(narinfo|ls)$/, { kind: 'status', status: 404 })
    const { upstream, http } = await start()
    const lookup = lookupOf([first, http])
    const info = await lookup.find(basic.hash)
    assert.equal(info?.upstream, http)
    assert.equal((await lookup.listing(info))?.root.type, 'directory')
    assert.equal(empty.count(`/${basic.hash}.ls`), 1, 'the first upstream, beside its narinfo')
    assert.equal(upstream.count(`/${basic.hash}.ls`), 1, 'the second, once its narinfo answered')
  })

  /** A copy of the xz cache with `kind`'s `.ls` padded (still valid JSON) to `bytes(NarSize)` bytes, served over HTTP. */
  const padded = async (kind: string, bytes: (narSize: number) => number) => {
    const hash = fixturePath(kind).hash
    const dir = await mkdtemp(path.join(os.tmpdir(), 'unnar-long-ls-'))
    dirs.push(dir)
    await cp(cacheDir('xz'), dir, { recursive: true })
    const narSize = Number(/^NarSize: (\d+)$/m.exec(await readFile(path.join(dir, `${hash}.narinfo`), 'utf8'))![1])
    const ls = path.join(dir, `${hash}.ls`)
    const text = await readFile(ls, 'utf8')
    await writeFile(ls, text + ' '.repeat(bytes(narSize) - Buffer.byteLength(text)))
    const { upstream, http } = await start(dir)
    return { hash, upstream, lookup: lookupOf([http]) }
  }

  it('refuses a `.ls` fetched beside the narinfo that is too long for the NAR the narinfo describes', async () => {
    const { hash, upstream, lookup } = await padded('dep', (narSize) => maxListingBytes(narSize) + 1)
    const info = await lookup.find(hash)
    assert.ok(info !== undefined)
    assert.equal(await lookup.listing(info), undefined)
    assert.equal(upstream.count(`/${hash}.ls`), 1, 'the body fetched beside the narinfo was the one refused')
  })

  it('asks again for a `.ls` too big to be kept beside its narinfo, and takes it when its NarSize allows', async () => {
    const { hash, upstream, lookup } = await padded('basic', () => EARLY_MAX_BYTES + 1)
    const info = await lookup.find(hash)
    assert.ok(info !== undefined)
    assert.equal((await lookup.listing(info))?.root.type, 'directory')
    assert.equal(upstream.count(`/${hash}.ls`), 2)
  })

  it('still answers the requests waiting for a lookup whose entry was pushed out of the cache meanwhile', async () => {
    const { upstream, http } = await start()
    const lookup = lookupOf([http], { maxEntries: 1 })
    const held = gate()
    upstream.setFault(`/${basic.hash}.narinfo`, { kind: 'hold', until: held.opened })
    const slow = lookup.find(basic.hash)
    await upstream.arrived(`/${basic.hash}.narinfo`)
    await lookup.find(site.hash) // the only slot goes to another path while the first lookup runs
    held.open()
    assert.equal((await slow)?.storePath.hash, basic.hash)
  })
})
