/**
 * A NAR from an upstream body the test controls: one download on its own (stopped, refused,
 * short-written, encoded) and the no-disk path (direct-file-stream.ts).
 */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtemp, open, readFile, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { PassThrough, type Readable } from 'node:stream'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { promisify } from 'node:util'
import { gzipSync } from 'node:zlib'
import { after, before, describe, it } from 'node:test'
import { createLogger } from '../../src/log.js'
import { openDirectFile } from '../../src/store/direct-file-stream.js'
import { NarDownload } from '../../src/store/nar-download.js'
import { FileUpstream } from '../../src/upstream/file-upstream.js'
import { PathInfoLookup, type PathInfo } from '../../src/upstream/path-info-lookup.js'
import type { Upstream } from '../../src/upstream/upstream.js'
import { cacheDir, fixturePath } from '../helpers/fixtures.js'

const basic = fixturePath('basic') // its NAR is 3.2 MiB: several 1 MiB write batches

async function basicInfo(): Promise<PathInfo> {
  const lookup = new PathInfoLookup([new FileUpstream(pathToFileURL(cacheDir('none')))], { log: createLogger('silent'), negativeTtlMs: 1000, maxEntries: 10, trustedKeys: () => undefined })
  const info = await lookup.find(basic.hash)
  assert.ok(info !== undefined)
  return info
}

/** `info` with its NAR (and compression) coming from `body` instead of the cache. */
function fedBy(info: PathInfo, body: Readable, options: { compression?: string; contentEncoding?: string } = {}): PathInfo {
  const upstream: Upstream = { name: 'test-upstream', get: async () => ({ body, size: undefined, contentEncoding: options.contentEncoding }) }
  return { ...info, upstream, narInfo: { ...info.narInfo, compression: options.compression ?? info.narInfo.compression } }
}

describe('NarDownload', () => {
  let dir: string
  let info: PathInfo
  let nar: Buffer
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'unnar-download-'))
    info = await basicInfo()
    nar = await readFile(path.join(cacheDir('none'), info.narKey))
  })
  after(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it('fails (and the process goes on) when stopped while its last bytes are being written', async () => {
    // With the bug this guards against, the event loop spun forever: run it where a hang is a timeout.
    const script = `
      import { open } from 'node:fs/promises'
      import { PassThrough } from 'node:stream'
      import { NarDownload } from ${JSON.stringify(pathToFileURL(fileURLToPath(new URL('../../src/store/nar-download.ts', import.meta.url))).href)}
      const [narPath, filePath, infoJson] = process.argv.slice(1)
      const nar = await (await import('node:fs/promises')).readFile(narPath)
      const body = new PassThrough()
      const base = JSON.parse(infoJson)
      const info = { ...base, upstream: { name: 'test-upstream', get: async () => ({ body, size: undefined, contentEncoding: undefined }) } }
      info.narInfo.narHash.digest = Uint8Array.from(info.narInfo.narHash.digest)
      const real = await open(filePath, 'w+')
      const slow = (write) => async (...args) => { await new Promise((r) => setTimeout(r, 300)); return write(...args) }
      const file = Object.assign(Object.create(real), { write: slow(real.write.bind(real)), writev: slow(real.writev.bind(real)), close: real.close.bind(real) })
      const download = new NarDownload({ info, file, path: filePath, abortWhenUnused: false })
      body.write(nar.subarray(0, 1024 * 1024)) // one full batch, being written (slowly)
      await new Promise((r) => setTimeout(r, 20))
      body.end(nar.subarray(1024 * 1024, 1024 * 1024 + 100 * 1024)) // a smaller batch waits, then the end
      await new Promise((r) => setTimeout(r, 50))
      download.abort(new Error('stopped'))
      const outcome = await download.done.then(() => 'completed', (err) => 'failed: ' + err.message)
      await new Promise((r) => setTimeout(r, 50)) // timers still run
      console.log(outcome)
    `
    const infoJson = JSON.stringify({ ...info, upstream: undefined, narInfo: { ...info.narInfo, narHash: { ...info.narInfo.narHash, digest: [...info.narInfo.narHash.digest] } } })
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, path.join(cacheDir('none'), info.narKey), path.join(dir, 'stopped.nar'), infoJson], {
      timeout: 20_000,
    })
    assert.equal(stdout.trim(), 'failed: stopped')
  })

  for (const [what, options, message] of [
    ['a NAR compression', { compression: 'lz4' }, /unsupported NAR compression "lz4"/],
    ['a Content-Encoding', { contentEncoding: 'deflate' }, /unsupported Content-Encoding "deflate"/],
  ] as const) {
    it(`closes the upstream body when it cannot decode ${what}`, async () => {
      const body = new PassThrough()
      body.write(nar.subarray(0, 1024))
      const file = await open(path.join(dir, `refused-${what.length}.nar`), 'w+')
      const download = new NarDownload({ info: fedBy(info, body, options), file, path: path.join(dir, 'refused.nar'), abortWhenUnused: false })
      await assert.rejects(download.done, message)
      download.unhold() // as the store does: the temp file is closed once nobody needs it
      assert.equal(body.destroyed, true, 'the upstream connection would stay open')
    })
  }

  it('writes every byte when the disk takes fewer bytes per write than asked', async () => {
    const filePath = path.join(dir, 'short.nar')
    const real = await open(filePath, 'w+')
    // At most 1000 bytes per call, as a nearly full or slow filesystem may answer.
    const file = Object.assign(Object.create(real) as typeof real, {
      write: (buffer: Buffer, offset: number, length: number, position: number) => real.write(buffer, offset, Math.min(length, 1000), position),
      writev: (buffers: Buffer[], position: number) => real.write(buffers[0]!, 0, Math.min(buffers[0]!.length, 1000), position),
      close: () => real.close(),
    })
    const body = new PassThrough()
    const download = new NarDownload({ info: fedBy(info, body), file, path: filePath, abortWhenUnused: false })
    body.end(nar)
    await download.done
    download.unhold()
    assert.ok((await readFile(filePath)).equals(nar))
  })

  it('decodes a body sent with Content-Encoding: gzip', async () => {
    const filePath = path.join(dir, 'gzip.nar')
    const body = new PassThrough()
    const download = new NarDownload({ info: fedBy(info, body, { contentEncoding: 'gzip' }), file: await open(filePath, 'w+'), path: filePath, abortWhenUnused: false })
    body.end(gzipSync(nar))
    await download.done
    download.unhold()
    assert.ok((await readFile(filePath)).equals(nar))
  })
})

describe('openDirectFile', () => {
  it('decodes a body sent with Content-Encoding: gzip, and closes it when it cannot decode one', async () => {
    const info = await basicInfo()
    const nar = await readFile(path.join(cacheDir('none'), info.narKey))
    const direct = await openDirectFile(fedBy(info, new PassThrough().end(gzipSync(nar)) as PassThrough, { contentEncoding: 'gzip' }), 'bin/hello')
    assert.ok(direct !== undefined)
    const bytes = Buffer.from(await new Response(direct.body).arrayBuffer())
    assert.equal(createHash('sha256').update(bytes).digest('hex'), basic.entries['bin/hello']!.sha256)
    const refused = new PassThrough()
    await assert.rejects(openDirectFile(fedBy(info, refused, { contentEncoding: 'deflate' }), 'bin/hello'), /unsupported Content-Encoding "deflate"/)
    assert.equal(refused.destroyed, true)
  })
})
