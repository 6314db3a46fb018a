/** A zstd decoder whose decoding runs in a worker thread: the event loop only hands bytes over. */
import { createRequire } from 'node:module'
import { availableParallelism } from 'node:os'
import { Duplex } from 'node:stream'
import { MessageChannel, type MessagePort, Worker } from 'node:worker_threads'

/**
 * Decoded bytes come back in batches of this size (or less, when the worker has no input left):
 * one message and one NarSink write per batch instead of one per 128 KiB zstd block.
 */
export const BATCH_BYTES = 1024 * 1024
/** Batches the worker may hand over that have not been passed on to the consumer yet (memory per stream). */
export const MAX_BATCHES_IN_FLIGHT = 4
/** Compressed bytes sent to the worker and not yet decoded; write() waits above this. */
export const MAX_QUEUED_INPUT = 1024 * 1024

/**
 * One MessagePort per stream; a worker serves several streams. The main side closes the port when
 * it is done with the stream (ended, failed or destroyed), which drops the worker's state for it.
 * A batch is a whole ArrayBuffer transferred to the main thread (no copy), so each batch gets a
 * fresh one; allocUnsafeSlow, because every byte handed over is written by the decoder first.
 *
 *   main → worker: { input } (transferred) | { credit: n } | { end: true }
 *   worker → main: { output?, consumed } | { done: true, consumed } | { error }
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads')
const { DCtx } = require(workerData.binding)
const BATCH = workerData.batchBytes
const EMPTY = new Uint8Array(0)
parentPort.on('message', ({ port, credits: initialCredits }) => {
  const dctx = new DCtx()
  const queue = []
  let credits = initialCredits
  let out = Buffer.allocUnsafeSlow(BATCH)
  let filled = 0
  let consumed = 0
  let outputFull = false
  let inFrame = false
  let ended = false
  let stopped = false
  const stop = () => {
    stopped = true
    queue.length = 0
    out = undefined
  }
  const handOver = () => {
    const output = out.subarray(0, filled)
    port.postMessage({ output, consumed }, [out.buffer])
    credits--
    out = Buffer.allocUnsafeSlow(BATCH)
    filled = 0
    consumed = 0
  }
  // Decodes until the input runs out or the main side holds as many batches as it allows.
  const pump = () => {
    for (;;) {
      const starved = queue.length === 0 && !outputFull
      if (filled === BATCH || (starved && filled > 0)) {
        if (credits === 0) return
        handOver()
        continue
      }
      if (starved) {
        if (ended) {
          if (inFrame) throw new Error('the zstd stream ends in the middle of a frame (truncated input)')
          port.postMessage({ done: true, consumed })
          stop()
        } else if (consumed > 0) {
          port.postMessage({ consumed })
          consumed = 0
        }
        return
      }
      const input = queue[0] ?? EMPTY
      const space = BATCH - filled
      const [remaining, produced, used] = dctx.decompressStream(out.subarray(filled), input)
      // A full output buffer may leave decoded bytes inside the decoder: call again, input or not
      // (unless the frame just ended: without input the decoder would then wait for the next one).
      outputFull = produced === space && remaining !== 0
      inFrame = remaining !== 0
      filled += produced
      consumed += used
      if (used === input.length) queue.shift()
      else queue[0] = input.subarray(used)
    }
  }
  port.on('message', (message) => {
    if (stopped) return
    if (message.input !== undefined) queue.push(message.input)
    if (message.credit !== undefined) credits += message.credit
    if (message.end === true) ended = true
    try {
      pump()
    } catch (err) {
      port.postMessage({ error: err.message })
      stop()
    }
  })
  port.on('close', stop)
})
`

interface WorkerMessage {
  readonly output?: Uint8Array
  readonly consumed?: number
  readonly done?: true
  readonly error?: string
}

interface PoolWorker {
  readonly worker: Worker
  streams: number
}

const pool: PoolWorker[] = []

/** The least busy worker; a new one while fewer than one per core exist and all are busy. */
function pickWorker(): PoolWorker {
  const idle = pool.find((w) => w.streams === 0)
  if (idle !== undefined || pool.length >= availableParallelism()) return idle ?? pool.reduce((a, b) => (b.streams < a.streams ? b : a))
  const worker = new Worker(WORKER_SOURCE, {
    eval: true,
    // zstd-napi's native binding itself: the worker calls ZSTD_decompressStream directly into its batches.
    workerData: { binding: createRequire(import.meta.url).resolve('zstd-napi/binding'), batchBytes: BATCH_BYTES },
  })
  worker.unref() // a pooled worker must not keep the process alive
  const entry: PoolWorker = { worker, streams: 0 }
  // Its ports close with it, which fails the streams it was decoding.
  worker.on('error', () => {
    const index = pool.indexOf(entry)
    if (index >= 0) pool.splice(index, 1)
  })
  pool.push(entry)
  return entry
}

/**
 * Compressed chunks go to the worker and decoded batches come back, both transferred. Backpressure
 * both ways: write() waits while MAX_QUEUED_INPUT bytes are undecoded, and the worker stops
 * decoding while MAX_BATCHES_IN_FLIGHT batches have not been passed to the consumer. The stream
 * ends only after the decoder saw the end of a complete frame.
 */
export class WorkerZstdDecoder extends Duplex {
  readonly #port: MessagePort
  readonly #worker: PoolWorker
  #queuedInput = 0
  #blockedWrite: (() => void) | undefined
  readonly #batches: Buffer[] = []
  #batchBytes = 0
  #wanted = false
  /** The worker saw the end of the input after a complete frame. */
  #done = false
  #ended = false
  #closed = false

  constructor() {
    super()
    this.#worker = pickWorker()
    this.#worker.streams++
    const { port1, port2 } = new MessageChannel()
    this.#port = port1
    port1.on('message', (message: WorkerMessage) => this.#onMessage(message))
    port1.on('close', () => {
      if (!this.#closed) this.destroy(new Error('zstd decoding failed: the decoder worker stopped'))
    })
    this.#worker.worker.postMessage({ port: port2, credits: MAX_BATCHES_IN_FLIGHT }, [port2])
  }

  /** Decoded bytes received from the worker and not yet read by the consumer. */
  get bufferedBytes(): number {
    return this.#batchBytes + this.readableLength
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (chunk.length === 0) return callback()
    // A chunk that is all of its ArrayBuffer (fs reads, zlib output, most socket reads) is moved to
    // the worker: no stream stage touches a chunk once it has been written on. A view into a larger
    // (pooled) buffer is copied, so nothing else is taken from its owner.
    const whole = chunk.buffer instanceof ArrayBuffer && chunk.byteOffset === 0 && chunk.byteLength === chunk.buffer.byteLength
    const input = whole ? (chunk as Uint8Array<ArrayBuffer>) : new Uint8Array(chunk)
    this.#queuedInput += input.length
    this.#port.postMessage({ input }, [input.buffer])
    if (this.#queuedInput < MAX_QUEUED_INPUT) callback()
    else this.#blockedWrite = callback
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.#port.postMessage({ end: true })
    callback()
  }

  override _read(): void {
    this.#wanted = true
    this.#deliver()
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.#close()
    this.#batches.length = 0
    this.#batchBytes = 0
    callback(err)
  }

  #onMessage(message: WorkerMessage): void {
    if (message.error !== undefined) {
      this.destroy(new Error(`zstd decoding failed: ${message.error}`))
      return
    }
    this.#queuedInput -= message.consumed ?? 0
    if (this.#blockedWrite !== undefined && this.#queuedInput < MAX_QUEUED_INPUT) {
      const callback = this.#blockedWrite
      this.#blockedWrite = undefined
      callback()
    }
    if (message.output !== undefined) {
      const { buffer, byteOffset, byteLength } = message.output
      this.#batches.push(Buffer.from(buffer, byteOffset, byteLength))
      this.#batchBytes += byteLength
    }
    if (message.done === true) {
      this.#done = true
      this.#close()
    }
    this.#deliver()
  }

  /** Passes batches on while the consumer wants more; each one passed on lets the worker decode one more. */
  #deliver(): void {
    let passed = 0
    while (this.#wanted && this.#batches.length > 0) {
      const batch = this.#batches.shift()!
      this.#batchBytes -= batch.length
      this.#wanted = this.push(batch)
      passed++
    }
    if (passed > 0 && !this.#closed) this.#port.postMessage({ credit: passed })
    if (this.#done && this.#batches.length === 0 && !this.#ended) {
      this.#ended = true
      this.push(null)
    }
  }

  #close(): void {
    if (this.#closed) return
    this.#closed = true
    this.#worker.streams--
    this.#port.close()
  }
}
