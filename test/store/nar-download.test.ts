/**
 * A NAR from an upstream body the test controls: one download on its own (stopped, refused,
 * short-written, encoded) and the no-disk path (direct-file-stream.ts).
 */
import assert from 'node:assert/strict'
import { execFile, execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { chmod, type FileHandle, mkdir, mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { PassThrough, Readable } from 'node:stream'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { promisify } from 'node:util'
import { gzipSync } from 'node:zlib'
import { after, before, describe, it } from 'node:test'
import { createLogger } from '../../src/log.js'
import { openDirectFile } from '../../src/store/direct-file-stream.js'
import { type DecoderPrograms, findDecoderPrograms, NO_DECODER_PROGRAMS } from '../../src/codecs/decoder-programs.js'
import { NarDownload } from '../../src/store/nar-download.js'
import { DiskError, NarAbandonedError, NarVerificationError } from '../../src/store/nar-errors.js'
import { FileUpstream } from '../../src/upstream/file-upstream.js'
import { PathInfoLookup, type PathInfo } from '../../src/upstream/path-info-lookup.js'
import type { Upstream } from '../../src/upstream/upstream.js'
import { cacheDir, fixturePath } from '../helpers/fixtures.js'
import { eventually } from '../helpers/wait.js'

const basic = fixturePath('basic') // its NAR is 3.2 MiB: several 1 MiB write batches
/** What this machine has, as the server finds them at start. */
const programs = findDecoderPrograms()

async function basicInfo(): Promise<PathInfo> {
  const lookup = new PathInfoLookup([new FileUpstream(pathToFileURL(cacheDir('none')))], {
    log: createLogger('silent'),
    negativeTtlMs: 1000,
    maxEntries: 10,
    trustedKeys: () => undefined,
  })
  const info = await lookup.find(basic.hash)
  assert.ok(info !== undefined)
  return info
}

/** A download of `info` into `file` (at `filePath`) that is kept even once nobody reads it. */
function startDownload(
  info: PathInfo,
  file: FileHandle,
  filePath: string,
  decoderPrograms: DecoderPrograms = programs,
): NarDownload {
  return new NarDownload({ info, file, path: filePath, abortWhenUnused: false, decoderPrograms })
}

/** `info` with its NAR (and compression) coming from `body` instead of the cache. */
function fedBy(
  info: PathInfo,
  body: Readable,
  options: { compression?: string; contentEncoding?: string } = {},
): PathInfo {
  const upstream: Upstream = {
    name: 'test-upstream',
    get: async () => ({ body, size: undefined, contentEncoding: options.contentEncoding }),
  }
  return {
    ...info,
    upstream,
    narInfo: { ...info.narInfo, compression: options.compression ?? info.narInfo.compression },
  }
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
      // Writes wait until the download was stopped; the first one says when it began.
      let stopped, began
      const stop = new Promise((r) => (stopped = r))
      const writing = new Promise((r) => (began = r))
      const slow = (write) => async (...args) => { began(); await stop; return write(...args) }
      const file = Object.assign(Object.create(real), { write: slow(real.write.bind(real)), writev: slow(real.writev.bind(real)), close: real.close.bind(real) })
      const download = new NarDownload({ info, file, path: filePath, abortWhenUnused: false, decoderPrograms: { shell: false } })
      body.write(nar.subarray(0, 1024 * 1024)) // one full batch, being written
      await writing
      body.end(nar.subarray(1024 * 1024, 1024 * 1024 + 100 * 1024)) // a smaller batch waits, then the end
      if (!body.readableEnded) await new Promise((r) => body.once('end', r))
      download.abort(new Error('stopped'))
      stopped()
      const outcome = await download.done.then(() => 'completed', (err) => 'failed: ' + err.message)
      await new Promise((r) => setTimeout(r, 1)) // timers still run
      console.log(outcome)
    `
    const infoJson = JSON.stringify({
      ...info,
      upstream: undefined,
      narInfo: { ...info.narInfo, narHash: { ...info.narInfo.narHash, digest: [...info.narInfo.narHash.digest] } },
    })
    const { stdout } = await promisify(execFile)(
      process.execPath,
      [
        '--import',
        'tsx',
        '--input-type=module',
        '-e',
        script,
        path.join(cacheDir('none'), info.narKey),
        path.join(dir, 'stopped.nar'),
        infoJson,
      ],
      {
        timeout: 20_000,
      },
    )
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
      const download = startDownload(fedBy(info, body, options), file, path.join(dir, 'refused.nar'))
      await assert.rejects(download.done, message)
      download.unhold() // as the store does: the temp file is closed once nobody needs it
      assert.equal(body.destroyed, true, 'the upstream connection would stay open')
    })
  }

  it('answers lookups from its whole index once the NAR matched NarHash, while the file is still being synced', {
    timeout: 20_000,
  }, async () => {
    const filePath = path.join(dir, 'syncing.nar')
    const real = await open(filePath, 'w+')
    let syncing: (() => void) | undefined
    let release: (() => void) | undefined
    const synced = new Promise<void>((resolve) => (release = resolve))
    const file = Object.assign(Object.create(real) as typeof real, {
      sync: async () => {
        syncing?.()
        await synced
        return real.sync()
      },
      close: () => real.close(),
    })
    const inSync = new Promise<void>((resolve) => (syncing = resolve))
    const body = new PassThrough()
    const download = startDownload(fedBy(info, body), file, filePath)
    const waiting = download.node(['no', 'such', 'path'])
    body.end(nar)
    await inSync
    assert.equal(download.verified, true)
    // Without an answer before the sync ends, this test times out.
    assert.equal(await waiting, undefined, 'a lookup that was waiting')
    assert.equal(await download.node(['lib', 'nope']), undefined, 'a new lookup')
    assert.equal((await download.node(['lib', 'blob.bin']))?.type, 'regular')
    release!()
    await download.done
    download.unhold()
  })

  it('writes every byte when the disk takes fewer bytes per write than asked', async () => {
    const filePath = path.join(dir, 'short.nar')
    const real = await open(filePath, 'w+')
    // At most 1000 bytes per call, as a nearly full or slow filesystem may answer.
    const file = Object.assign(Object.create(real) as typeof real, {
      write: (buffer: Buffer, offset: number, length: number, position: number) =>
        real.write(buffer, offset, Math.min(length, 1000), position),
      writev: (buffers: Buffer[], position: number) =>
        real.write(buffers[0]!, 0, Math.min(buffers[0]!.length, 1000), position),
      close: () => real.close(),
    })
    const body = new PassThrough()
    const download = startDownload(fedBy(info, body), file, filePath)
    body.end(nar)
    await download.done
    download.unhold()
    assert.ok((await readFile(filePath)).equals(nar))
  })

  it('decodes a body sent with Content-Encoding: gzip', async () => {
    const filePath = path.join(dir, 'gzip.nar')
    const body = new PassThrough()
    const download = startDownload(fedBy(info, body, { contentEncoding: 'gzip' }), await open(filePath, 'w+'), filePath)
    body.end(gzipSync(nar))
    await download.done
    download.unhold()
    assert.ok((await readFile(filePath)).equals(nar))
  })
})

describe('NarDownload with a decoder program writing the file', {
  timeout: 60_000,
  skip:
    programs.xz === undefined || programs.zstd === undefined || !programs.shell
      ? 'xz, zstd or /bin/sh is not installed'
      : false,
}, () => {
  let dir: string
  let info: PathInfo
  let nar: Buffer
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'unnar-program-'))
    info = await basicInfo()
    nar = await readFile(path.join(cacheDir('none'), info.narKey))
  })
  after(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  /** basic's NAR (3.2 MiB: zstd uses the program) as `compression` compresses it. */
  const compressedOnce = new Map<string, Buffer>()
  /** The NAR compressed by the program (once per compression: compressing costs more than the tests). */
  function compressed(compression: 'xz' | 'zstd'): Buffer {
    let bytes = compressedOnce.get(compression)
    if (bytes === undefined) {
      bytes = execFileSync(compression, ['-c', '-1'], { input: nar, maxBuffer: 1 << 30 })
      compressedOnce.set(compression, bytes)
    }
    return bytes
  }

  async function download(name: string, pathInfo: PathInfo, decoderPrograms: DecoderPrograms = programs) {
    const filePath = path.join(dir, name)
    const d = startDownload(pathInfo, await open(filePath, 'w+'), filePath, decoderPrograms)
    const outcome = await d.done.then(
      (listing) => ({ listing }),
      (err: Error) => ({ err }),
    )
    d.unhold()
    return { outcome, filePath, download: d }
  }

  it('runs `zstd` for a big zstd NAR: the same file and listing as decoding in-process', async () => {
    const program = path.join(dir, 'bin')
    await mkdir(program)
    const marker = path.join(dir, 'zstd-ran')
    await writeFile(path.join(program, 'zstd'), `#!/bin/sh\n: > '${marker}'\nexec '${programs.zstd}' "$@"\n`)
    await chmod(path.join(program, 'zstd'), 0o755)
    const body = compressed('zstd')
    const byProgram = await download('by-program.nar', fedBy(info, Readable.from([body]), { compression: 'zstd' }), {
      shell: true,
      zstd: path.join(program, 'zstd'),
    })
    await stat(marker)
    const here = await download(
      'here.nar',
      fedBy(info, Readable.from([body]), { compression: 'zstd' }),
      NO_DECODER_PROGRAMS,
    )
    assert.ok('listing' in byProgram.outcome && 'listing' in here.outcome)
    assert.deepEqual(byProgram.outcome.listing, here.outcome.listing)
    assert.ok((await readFile(byProgram.filePath)).equals(nar))
    assert.ok((await readFile(here.filePath)).equals(nar))
  })

  it('has the program read a local NAR file itself (file:// upstreams) instead of the body', async () => {
    const xzUpstream = new FileUpstream(pathToFileURL(cacheDir('xz')))
    const xzInfo = await new PathInfoLookup([xzUpstream], {
      log: createLogger('silent'),
      negativeTtlMs: 1000,
      maxEntries: 10,
      trustedKeys: () => undefined,
    }).find(basic.hash)
    assert.ok(xzInfo !== undefined)
    const res = await xzUpstream.get(xzInfo.narKey)
    const local = path.join(cacheDir('xz'), xzInfo.narKey)
    assert.equal(res?.file, local, 'a file:// upstream names the file behind its body')
    res.body.destroy()
    // A body that never sends a byte: only the file can complete the NAR.
    const silent = new PassThrough()
    const upstream: Upstream = {
      name: 'file-upstream',
      get: async () => ({ body: silent, size: undefined, contentEncoding: undefined, file: local }),
    }
    const { outcome, filePath } = await download('local.nar', { ...xzInfo, upstream })
    assert.ok('listing' in outcome, String((outcome as { err?: Error }).err))
    assert.ok((await readFile(filePath)).equals(nar))
    assert.equal(silent.destroyed, true, 'the unread body is let go')
  })

  it('refuses a NAR that does not match its NarHash, and one that is short of its NarSize', async () => {
    const wrongHash = { ...info.narInfo.narHash, digest: new Uint8Array(32) }
    const forged = await download('forged.nar', {
      ...fedBy(info, Readable.from([compressed('xz')]), { compression: 'xz' }),
      narInfo: { ...info.narInfo, compression: 'xz', narHash: wrongHash },
    })
    assert.ok(
      'err' in forged.outcome && forged.outcome.err instanceof NarVerificationError,
      String((forged.outcome as { err?: Error }).err),
    )
    assert.match(forged.outcome.err.message, /NAR does not match its NarHash/)
    const short = await download('short.nar', {
      ...fedBy(info, Readable.from([execFileSync('xz', ['-c'], { input: nar.subarray(0, 1000) })]), {
        compression: 'xz',
      }),
    })
    assert.ok('err' in short.outcome && short.outcome.err instanceof NarVerificationError)
    assert.match(short.outcome.err.message, new RegExp(`NAR is 1000 bytes, NarSize says ${nar.length}`))
  })

  it('fails with the reason it was stopped for (never an upstream failure), and stops the program', async () => {
    const body = compressed('xz')
    for (const how of ['aborted', 'abandoned'] as const) {
      // Half the NAR, then an upstream that sends nothing more.
      const stalled = new PassThrough()
      stalled.write(body.subarray(0, body.length >> 1))
      const filePath = path.join(dir, `stopped-${how}.nar`)
      const d = new NarDownload({
        info: fedBy(info, stalled, { compression: 'xz' }),
        file: await open(filePath, 'w+'),
        path: filePath,
        abortWhenUnused: how === 'abandoned',
        decoderPrograms: programs,
      })
      const release = d.hold()
      await eventually(() => d.written > 0, 'the first bytes written')
      const reason = new Error('unnar is shutting down')
      if (how === 'aborted') d.abort(reason)
      else release() // the last reader leaves a NAR that is not kept
      const err = await d.done.then(
        () => undefined,
        (e: Error) => e,
      )
      if (how === 'aborted') assert.equal(err, reason)
      else assert.ok(err instanceof NarAbandonedError, String(err))
      assert.equal(stalled.destroyed, true, `${how}: the upstream body is let go`)
      release()
      d.unhold()
    }
  })

  it('blames this machine, not the upstream, when the program cannot run', async () => {
    const program = path.join(dir, 'broken-bin')
    await mkdir(program)
    await writeFile(path.join(program, 'xz'), '#!/nonexistent/interpreter\n', { mode: 0o755 })
    const { outcome } = await download(
      'cannot-run.nar',
      fedBy(info, Readable.from([compressed('xz')]), { compression: 'xz' }),
      { shell: true, xz: path.join(program, 'xz') },
    )
    assert.ok('err' in outcome && outcome.err instanceof DiskError, String((outcome as { err?: Error }).err))
    assert.match(outcome.err.message, /^cannot start xz \(exit 127\)/)
  })

  it('says the disk failed when the program cannot write (a full filesystem)', async (t) => {
    const mount = path.join(dir, 'full')
    await mkdir(mount)
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mount], { stdio: 'ignore' })
    } catch {
      return t.skip('mounting a small tmpfs needs root')
    }
    try {
      const filePath = path.join(mount, 'nar')
      const d = startDownload(
        fedBy(info, Readable.from([compressed('xz')]), { compression: 'xz' }),
        await open(filePath, 'w+'),
        filePath,
      )
      await assert.rejects(
        d.done,
        (err: Error) =>
          err instanceof DiskError && /^xz could not write the NAR: .*No space left on device/.test(err.message),
      )
      d.unhold()
    } finally {
      execFileSync('umount', ['-l', mount])
    }
  })
})

describe('openDirectFile', () => {
  it('decodes a body sent with Content-Encoding: gzip, and closes it when it cannot decode one', async () => {
    const info = await basicInfo()
    const nar = await readFile(path.join(cacheDir('none'), info.narKey))
    const direct = await openDirectFile(
      fedBy(info, new PassThrough().end(gzipSync(nar)) as PassThrough, { contentEncoding: 'gzip' }),
      'bin/hello',
      { verify: true },
    )
    assert.ok(direct !== undefined)
    const bytes = Buffer.from(await new Response(direct.body).arrayBuffer())
    assert.equal(createHash('sha256').update(bytes).digest('hex'), basic.entries['bin/hello']!.sha256)
    const refused = new PassThrough()
    await assert.rejects(
      openDirectFile(fedBy(info, refused, { contentEncoding: 'deflate' }), 'bin/hello', { verify: true }),
      /unsupported Content-Encoding "deflate"/,
    )
    assert.equal(refused.destroyed, true)
  })
})
