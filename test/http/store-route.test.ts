/**
 * The store route through `app.request()`, without a node:http server: a NAR lease ends when the
 * response body is read to its end or cancelled, and right away when the answer has no stream.
 */
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { DISK_BODY_READ_BYTES } from '../../src/http/disk-body.js'
import { ReadBuffers } from '../../src/http/read-buffers.js'
import { createApp } from '../../src/http/app.js'
import { createRequestReporter } from '../../src/http/request-log.js'
import { storeFileSources, type HotStoreFile } from '../../src/http/store-route.js'
import { createLogger } from '../../src/log.js'
import { createMetrics } from '../../src/metrics.js'
import { PUBLIC_DIR } from '../../src/server.js'
import { HotFiles } from '../../src/store/hot-files.js'
import { NarStore } from '../../src/store/nar-store.js'
import { HttpUpstream } from '../../src/upstream/http-upstream.js'
import { PathInfoLookup } from '../../src/upstream/path-info-lookup.js'
import { cacheDir, fixturePath } from '../helpers/fixtures.js'
import { startTestUpstream, type TestUpstream } from '../helpers/test-upstream.js'
import { eventually } from '../helpers/wait.js'

const log = createLogger('silent')
const basic = fixturePath('basic')
const base = `/nix/store/${basic.hash}-${basic.name}`

function sha256(bytes: ArrayBuffer): string {
  return createHash('sha256').update(new Uint8Array(bytes)).digest('hex')
}

describe('store route through app.request()', () => {
  let upstream: TestUpstream
  let dir: string
  let store: NarStore
  let sources: ReturnType<typeof storeFileSources>
  let lookup: PathInfoLookup
  let hotFiles: HotFiles<HotStoreFile>
  let app: ReturnType<typeof createApp>

  before(async () => {
    upstream = await startTestUpstream({ root: cacheDir('xz') })
    dir = await mkdtemp(path.join(os.tmpdir(), 'unnar-route-'))
    store = new NarStore({ dir, maxBytes: 1024 ** 3, maxNarBytes: 1024 ** 3, log })
    await store.init()
    lookup = new PathInfoLookup([new HttpUpstream(new URL(upstream.url), { userAgent: 'test', timeoutMs: 5000 })], {
      log,
      negativeTtlMs: 1000,
      maxEntries: 100,
      trustedKeys: () => undefined,
    })
    hotFiles = new HotFiles<HotStoreFile>({ maxBytes: 64 * 1024 ** 2 })
    const metrics = createMetrics()
    sources = storeFileSources({ store, lookup, hotFiles, log })
    app = createApp({
      lookup,
      store,
      log,
      storeDir: '/nix/store',
      publicDir: PUBLIC_DIR,
      domain: undefined,
      metrics,
      reporter: createRequestReporter(log, metrics),
      hotFiles,
      readBuffers: new ReadBuffers({ bufferBytes: DISK_BODY_READ_BYTES, maxBytes: 16 * 1024 ** 2 }),
      sources,
      serveMetrics: false,
      maxUrlLength: 8192,
      accepting: () => true,
    })
  })

  after(async () => {
    await store.close()
    await upstream.close()
    await rm(dir, { recursive: true, force: true })
  })

  it('holds the NAR while a streamed file body is unread, and lets go once it is read', async () => {
    const res = await app.request(`${base}/lib/blob.bin`)
    assert.equal(res.status, 200)
    assert.equal(res.headers.get('content-length'), '3000000')
    assert.equal(sources.leases, 1, 'the unread body holds its NAR')
    assert.equal(sha256(await res.arrayBuffer()), basic.entries['lib/blob.bin']!.sha256)
    assert.equal(sources.leases, 0)
  })

  it('lets go when the body is cancelled', async () => {
    const res = await app.request(`${base}/lib/blob.bin`)
    assert.equal(res.status, 200)
    assert.equal(sources.leases, 1)
    await res.body!.cancel()
    assert.equal(sources.leases, 0)
  })

  it('holds nothing after a listing, a small file, a HEAD or a redirect', async () => {
    const listing = await app.request(`${base}/bin/`, { headers: { accept: 'text/plain' } })
    assert.equal(listing.status, 200)
    assert.equal(sources.leases, 0)
    assert.match(await listing.text(), /hello/)
    const hello = await app.request(`${base}/bin/hello`)
    assert.equal(sources.leases, 0)
    assert.equal(sha256(await hello.arrayBuffer()), basic.entries['bin/hello']!.sha256)
    const head = await app.request(`${base}/lib/blob.bin`, { method: 'HEAD' })
    assert.equal(head.status, 200)
    assert.equal(sources.leases, 0)
    const redirect = await app.request(`${base}/bin`)
    assert.equal(redirect.status, 301)
    assert.equal(sources.leases, 0)
  })

  it('keeps a small file in memory from its second GET on, so files asked for once (a crawl) take none', async () => {
    const info = (await lookup.find(basic.hash))!
    await (await app.request(`${base}/bin/hello`)).arrayBuffer()
    await eventually(() => store.has(info), 'the NAR cached')
    const readme = `${base}/share/doc/README`
    const before = hotFiles.size
    assert.equal(sha256(await (await app.request(readme)).arrayBuffer()), basic.entries['share/doc/README']!.sha256)
    assert.equal(hotFiles.size, before, 'asked for once: not kept')
    assert.equal(sources.inMemory(info, ['share', 'doc', 'README']), undefined)
    await (await app.request(readme)).arrayBuffer()
    assert.ok(hotFiles.size > before, 'asked for again: kept')
    assert.ok(sources.inMemory(info, ['share', 'doc', 'README']) !== undefined)
  })
})
