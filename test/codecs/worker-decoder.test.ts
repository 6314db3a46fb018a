/** The zstd decoder that decodes in a worker thread, on real shared libraries compressed with zstd. */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { promisify } from 'node:util'
import { describe, it } from 'node:test'
import { compress } from 'zstd-napi'
import { createDecoder } from '../../src/codecs/decompress.js'
import { BATCH_BYTES, MAX_BATCHES_IN_FLIGHT, WorkerZstdDecoder } from '../../src/codecs/worker-decoder.js'
import { elapse, eventually } from '../helpers/wait.js'

const LIB_DIR = '/usr/lib/x86_64-linux-gnu'

/** Up to `bytes` of real shared libraries, one after the other (what big NARs mostly hold). */
async function realBytes(bytes: number): Promise<Buffer> {
  const parts: Buffer[] = []
  let total = 0
  for (const name of (await readdir(LIB_DIR)).filter((n) => /\.so(\.|$)/.test(n)).sort()) {
    if (total >= bytes) break
    const data = await readFile(path.join(LIB_DIR, name)).catch(() => undefined)
    if (data === undefined || data.length === 0) continue
    parts.push(data)
    total += data.length
  }
  assert.ok(total >= bytes, `${LIB_DIR} holds only ${total} bytes of libraries`)
  return Buffer.concat(parts).subarray(0, bytes)
}

const plain = await realBytes(24 * 1024 * 1024)
// Two frames, as a concatenation of .zst files would have.
const half = plain.length / 2
const compressed = Buffer.concat([compress(plain.subarray(0, half)), compress(plain.subarray(half))])

/**
 * `data` in pieces of `size` bytes, as a network or file stream hands them over: views into one
 * larger buffer, or (`owned`) each in an ArrayBuffer of its own, like fs reads.
 */
function pieces(data: Buffer, size: number, owned = false): Readable {
  return Readable.from(
    (function* () {
      for (let i = 0; i < data.length; i += size)
        yield owned
          ? Buffer.from(Uint8Array.prototype.slice.call(data, i, i + size).buffer)
          : data.subarray(i, i + size)
    })(),
    { objectMode: false },
  )
}

function collector(): { sink: Writable; output: () => Buffer } {
  const chunks: Buffer[] = []
  const sink = new Writable({
    write(chunk: Buffer, _e, cb) {
      chunks.push(chunk)
      cb()
    },
  })
  return { sink, output: () => Buffer.concat(chunks) }
}

describe('WorkerZstdDecoder', () => {
  it('is what createDecoder uses for zstd when `external` is set', () => {
    const decoder = createDecoder('zstd', { external: true })
    assert.ok(decoder instanceof WorkerZstdDecoder)
    decoder.destroy()
    assert.ok(!(createDecoder('zstd', { external: false }) instanceof WorkerZstdDecoder))
  })

  for (const size of [7 * 1024, 256 * 1024, 3 * 1024 * 1024]) {
    for (const owned of [false, true]) {
      it(`round-trips ${plain.length >> 20} MiB of libraries in two frames, fed in ${size >> 10} KiB pieces${owned ? ' that own their buffers' : ''}`, async () => {
        const { sink, output } = collector()
        await pipeline(pieces(compressed, size, owned), new WorkerZstdDecoder(), sink)
        assert.ok(output().equals(plain))
      })
    }
  }

  it('reuses batches the consumer hands back (recycle()) without changing a byte', async () => {
    const decoder = new WorkerZstdDecoder()
    const parts: Buffer[] = []
    let recycled = 0
    const sink = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        parts.push(Buffer.from(chunk)) // a copy: the original goes back to the worker
        const buffer = chunk.buffer
        decoder.recycle(chunk)
        if (buffer.byteLength === 0) recycled++ // transferred away, so detached here
        callback()
      },
    })
    await pipeline(pieces(compressed, 64 * 1024), decoder, sink)
    assert.ok(Buffer.concat(parts).equals(plain))
    assert.ok(recycled > plain.length / BATCH_BYTES / 2, `${recycled} batches handed back`)
    // A chunk the stream never lent is left alone.
    const foreign = Buffer.alloc(16)
    const other = new WorkerZstdDecoder()
    other.recycle(foreign)
    other.destroy()
    assert.equal(foreign.buffer.byteLength, 16)
  })

  it('decodes several streams at once', async () => {
    const runs = Array.from({ length: 4 }, async () => {
      const { sink, output } = collector()
      await pipeline(pieces(compressed, 64 * 1024), new WorkerZstdDecoder(), sink)
      return output()
    })
    for (const output of await Promise.all(runs)) assert.ok(output.equals(plain))
  })

  it('hands decoded bytes over in batches of at most BATCH_BYTES', async () => {
    const sizes: number[] = []
    await pipeline(
      pieces(compressed, 256 * 1024),
      new WorkerZstdDecoder(),
      new Writable({
        write(chunk: Buffer, _e, cb) {
          sizes.push(chunk.length)
          cb()
        },
      }),
    )
    assert.ok(Math.max(...sizes) <= BATCH_BYTES)
    assert.ok(sizes.length < plain.length / (128 * 1024), `${sizes.length} batches`)
  })

  it('fails on corrupt data with a message that says so', async () => {
    const corrupt = Buffer.from(compressed)
    corrupt.fill(0x55, 1024 * 1024, 1024 * 1024 + 4096)
    await assert.rejects(
      pipeline(pieces(corrupt, 64 * 1024), new WorkerZstdDecoder(), collector().sink),
      /^Error: zstd decoding failed: \w/,
    )
    await assert.rejects(
      pipeline([Buffer.from('not zstd at all'.repeat(10))], new WorkerZstdDecoder(), collector().sink),
      /zstd decoding failed/,
    )
  })

  it('fails on truncated input instead of ending early', async () => {
    const truncated = compressed.subarray(0, compressed.length - 1000)
    await assert.rejects(pipeline(pieces(truncated, 64 * 1024), new WorkerZstdDecoder(), collector().sink), /truncated/)
    // Cut exactly between the two frames: complete, so that is a valid (shorter) stream.
    const firstFrame = compress(plain.subarray(0, 1000))
    const { sink, output } = collector()
    await pipeline([firstFrame], new WorkerZstdDecoder(), sink)
    assert.ok(output().equals(plain.subarray(0, 1000)))
  })

  it('ends a frame whose decoded size is a whole number of batches', async () => {
    // The decoder fills the last batch exactly as the frame ends: nothing more is pending then.
    for (const bytes of [BATCH_BYTES, 3 * BATCH_BYTES]) {
      const { sink, output } = collector()
      await pipeline([compress(plain.subarray(0, bytes))], new WorkerZstdDecoder(), sink)
      assert.ok(output().equals(plain.subarray(0, bytes)), `${bytes} bytes`)
    }
  })

  it('ends an empty input with no bytes', async () => {
    const { sink, output } = collector()
    await pipeline([], new WorkerZstdDecoder(), sink)
    assert.equal(output().length, 0)
  })

  it('stops decoding while the consumer does not read: the batches in flight stay bounded', async () => {
    const decoder = new WorkerZstdDecoder()
    // Four frames: what the worker may take ahead (~1.7 MB here) is well under half, however well the libraries compress.
    const input = Buffer.concat([compressed, compressed])
    let fed = 0
    const source = Readable.from(
      (function* () {
        for (let i = 0; i < input.length; i += 64 * 1024) {
          const piece = input.subarray(i, i + 64 * 1024)
          fed += piece.length
          yield piece
        }
      })(),
      { objectMode: false },
    )
    const chunks: Buffer[] = []
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    const sink = new Writable({
      highWaterMark: 1,
      write(chunk: Buffer, _e, cb) {
        chunks.push(chunk)
        if (chunks.length === 1) void gate.then(() => cb())
        else cb()
      },
    })
    const done = pipeline(source, decoder, sink)
    await eventually(
      () => chunks.length === 1 && decoder.writableNeedDrain,
      'the consumer stopped and the decoder taking no more input',
    )
    // Kept: nothing observable says the worker stopped for good, so this asserts that nothing
    // happens for a while; a worker nothing stops decodes the rest in far less.
    await elapse(300)
    const bound = (MAX_BATCHES_IN_FLIGHT + 1) * BATCH_BYTES
    assert.ok(decoder.bufferedBytes > 0, 'the worker went on decoding ahead of the consumer')
    assert.ok(decoder.bufferedBytes <= bound, `${decoder.bufferedBytes} bytes buffered, more than ${bound}`)
    assert.ok(fed < input.length / 2, `${fed} of ${input.length} compressed bytes were taken`)
    release()
    await done
    assert.ok(Buffer.concat(chunks).equals(Buffer.concat([plain, plain])))
  })

  it('stops on destroy() mid-stream, and the worker goes on serving other streams', async () => {
    const decoder = new WorkerZstdDecoder()
    let received = 0
    decoder.on('data', (chunk: Buffer) => {
      received += chunk.length
      decoder.destroy()
    })
    const closed = new Promise((resolve) => decoder.once('close', resolve))
    pieces(compressed, 64 * 1024).pipe(decoder)
    await closed
    const after = received
    assert.ok(received < plain.length)
    const { sink, output } = collector()
    await pipeline(pieces(compressed, 64 * 1024), new WorkerZstdDecoder(), sink)
    assert.ok(output().equals(plain))
    // The worker has decoded a whole other stream since: nothing more came for the destroyed one.
    assert.equal(received, after)
  })

  it('keeps no process alive: a process that destroys a decoder mid-stream exits by itself', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'unnar-worker-decoder-'))
    try {
      const moduleUrl = pathToFileURL(
        path.join(path.dirname(fileURLToPath(import.meta.url)), '../../src/codecs/worker-decoder.ts'),
      ).href
      const script = path.join(dir, 'destroy.mts')
      const input = path.join(dir, 'input.zst')
      await writeFile(input, compressed)
      await writeFile(
        script,
        [
          `import { createReadStream } from 'node:fs'`,
          `import { WorkerZstdDecoder } from ${JSON.stringify(moduleUrl)}`,
          `const decoder = new WorkerZstdDecoder()`,
          `decoder.once('data', () => decoder.destroy())`,
          `decoder.once('close', () => console.log('destroyed'))`,
          `createReadStream(${JSON.stringify(input)}).pipe(decoder)`,
        ].join('\n'),
      )
      const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', script], { timeout: 20_000 })
      assert.equal(stdout.trim(), 'destroyed')
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
