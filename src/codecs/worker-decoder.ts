/** A zstd decoder whose decoding runs in a worker thread: the event loop only hands bytes over. */
import { createRequire } from 'node:module'
import { Duplex } from 'node:stream'
import type { MessagePort } from 'node:worker_threads'
import { WorkerPool, type PooledJob } from '../worker-pool.js'
import { DecodedTooLargeError } from './decompress.js'

/**
 * Decoded bytes come back in batches of this size (or less, when the worker has no input left):
 * one message and one NarSink write per batch instead of one per 128 KiB zstd block.
 */
export const BATCH_BYTES = 1024 * 1024
/** Batches the worker may hand over that have not been passed on to the consumer yet (memory per stream). */
export const MAX_BATCHES_IN_FLIGHT = 2
/** Compressed bytes sent to the worker and not yet decoded; write() waits above this. */
export const MAX_QUEUED_INPUT = 1024 * 1024
/** Batch buffers handed back by the consumer (recycle()) that a worker keeps per stream for reuse. */
const MAX_SPARE_BATCHES = MAX_BATCHES_IN_FLIGHT + 1
/**
 * Compressed bytes are copied into buffers of this size that go to the worker and come back once
 * decoded: upstream chunks moved to the worker became garbage there that V8 collected late (the
 * ≈1 GB NAR's 328 MiB of input added ~30 MiB of peak RSS, bench/ 5c); a copy costs ~0.1 ms per MiB.
 */
const INPUT_BYTES = 256 * 1024
const MAX_SPARE_INPUTS = Math.ceil(MAX_QUEUED_INPUT / INPUT_BYTES) + 1

/**
 * One MessagePort per stream; a worker serves several streams. The main side closes the port when
 * it is done with the stream (ended, failed or destroyed), which drops the worker's state for it.
 * A batch is a whole ArrayBuffer transferred to the main thread (no copy); allocUnsafeSlow, because
 * every byte handed over is written by the decoder first. The consumer hands batches back once it
 * has written them (recycle()): a fresh 1 MiB buffer per batch left up to ~64 MiB of garbage for
 * V8 to collect when it saw fit, and the ≈1 GB NAR's peak RSS rose from 166 to 209 MiB (bench/ 5c).
 *
 *   main → worker: { input, length } (transferred) | { credit: n } | { end: true } | { recycle } (transferred)
 *   worker → main: { output?, consumed, returned? } | { done: true, consumed, returned? } | { error } | { tooLarge: true }
 *   (`returned`: input buffers fully decoded, transferred back)
 *
 * The worker decodes at most `maxOutput` + 1 bytes (it never offers the decoder more room), and
 * stops at that extra byte, whatever the main side has taken.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads')
const { DCtx } = require(workerData.binding)
const BATCH = workerData.batchBytes
const EMPTY = new Uint8Array(0)
parentPort.on('message', ({ port, credits: initialCredits, maxOutput }) => {
  const dctx = new DCtx()
  const queue = []
  const spare = []
  let returned = []
  // Every message to the main side also hands back the input buffers decoded by then.
  const send = (message, transfer) => {
    if (returned.length > 0) {
      message.returned = returned
      transfer.push(...returned)
      returned = []
    }
    port.postMessage(message, transfer)
  }
  let credits = initialCredits
  let out = Buffer.allocUnsafeSlow(BATCH)
  let filled = 0
  let consumed = 0
  // Bytes the decoder may still produce before the stream is too large.
  let allowed = maxOutput + 1
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
    send({ output, consumed }, [out.buffer])
    credits--
    out = spare.pop() ?? Buffer.allocUnsafeSlow(BATCH)
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
          send({ done: true, consumed }, [])
          stop()
        } else if (consumed > 0) {
          send({ consumed }, [])
          consumed = 0
        }
        return
      }
      const input = queue[0] ?? EMPTY
      const space = Math.min(BATCH - filled, allowed)
      const [remaining, produced, used] = dctx.decompressStream(out.subarray(filled, filled + space), input)
      allowed -= produced
      if (allowed === 0) {
        port.postMessage({ tooLarge: true })
        stop()
        return
      }
      // A full output buffer may leave decoded bytes inside the decoder: call again, input or not
      // (unless the frame just ended: without input the decoder would then wait for the next one).
      outputFull = produced === space && remaining !== 0
      inFrame = remaining !== 0
      filled += produced
      consumed += used
      if (used === input.length) {
        queue.shift()
        if (input.buffer.byteLength > 0) returned.push(input.buffer)
      } else {
        queue[0] = input.subarray(used)
      }
    }
  }
  port.on('message', (message) => {
    if (stopped) return
    if (message.recycle !== undefined) {
      if (message.recycle.byteLength === BATCH && spare.length < workerData.maxSpare) spare.push(Buffer.from(message.recycle))
      return
    }
    if (message.input !== undefined) queue.push(new Uint8Array(message.input, 0, message.length))
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
  readonly returned?: readonly ArrayBuffer[]
  readonly done?: true
  readonly error?: string
  readonly tooLarge?: true
}

const pool = new WorkerPool(WORKER_SOURCE, {
  // zstd-napi's native binding itself: the worker calls ZSTD_decompressStream directly into its batches.
  workerData: {
    binding: createRequire(import.meta.url).resolve('zstd-napi/binding'),
    batchBytes: BATCH_BYTES,
    maxSpare: MAX_SPARE_BATCHES,
  },
  resourceLimits: { maxYoungGenerationSizeMb: 4, maxOldGenerationSizeMb: 32 },
})

/** Starts the decoding thread ahead of the first big zstd NAR (see WorkerPool.warm). */
export function warmZstdWorker(): void {
  pool.warm()
}

/**
 * Compressed chunks go to the worker and decoded batches come back, both transferred. Backpressure
 * both ways: write() waits while MAX_QUEUED_INPUT bytes are undecoded, and the worker stops
 * decoding while MAX_BATCHES_IN_FLIGHT batches have not been passed to the consumer. The stream
 * ends only after the decoder saw the end of a complete frame, and fails with DecodedTooLargeError
 * once the decoder produced more than `maxOutputBytes`.
 */
export class WorkerZstdDecoder extends Duplex {
  readonly #port: MessagePort
  readonly #job: PooledJob
  #queuedInput = 0
  #blockedWrite: (() => void) | undefined
  #staging: Buffer | undefined
  #stagingFill = 0
  readonly #spareInputs: Buffer[] = []
  readonly #batches: Buffer[] = []
  /** Batch memory pushed to the consumer and not handed back yet. */
  readonly #lent = new WeakSet<ArrayBuffer>()
  #batchBytes = 0
  #wanted = false
  /** The worker saw the end of the input after a complete frame. */
  #done = false
  #ended = false
  #closed = false
  readonly #maxOutputBytes: number

  constructor(maxOutputBytes = Infinity) {
    super()
    this.#maxOutputBytes = maxOutputBytes
    this.#job = pool.start({ credits: MAX_BATCHES_IN_FLIGHT, maxOutput: maxOutputBytes })
    this.#port = this.#job.port
    this.#port.on('message', (message: WorkerMessage) => this.#onMessage(message))
    this.#port.on('close', () => {
      if (!this.#closed) this.destroy(new Error('zstd decoding failed: the decoder worker stopped'))
    })
  }

  /**
   * The consumer is done with `chunk`, one this stream pushed, and holds no view of it any more:
   * its memory goes back to the worker for a later batch (it is detached here).
   */
  recycle(chunk: Uint8Array): void {
    const buffer = chunk.buffer
    if (this.#closed || !(buffer instanceof ArrayBuffer) || !this.#lent.has(buffer)) return
    this.#lent.delete(buffer)
    this.#port.postMessage({ recycle: buffer }, [buffer])
  }

  /** Decoded bytes received from the worker and not yet read by the consumer. */
  get bufferedBytes(): number {
    return this.#batchBytes + this.readableLength
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    for (let offset = 0; offset < chunk.length; ) {
      this.#staging ??= this.#spareInputs.pop() ?? Buffer.allocUnsafeSlow(INPUT_BYTES)
      const copied = chunk.copy(this.#staging, this.#stagingFill, offset)
      this.#stagingFill += copied
      offset += copied
      if (this.#stagingFill === INPUT_BYTES) this.#sendInput()
    }
    // A worker with nothing to decode gets what there is at once: a slow upstream's first bytes
    // must not wait for a full buffer. A busy one gets full buffers.
    if (this.#queuedInput === 0) this.#sendInput()
    if (this.#queuedInput < MAX_QUEUED_INPUT) callback()
    else this.#blockedWrite = callback
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.#sendInput()
    this.#port.postMessage({ end: true })
    callback()
  }

  #sendInput(): void {
    if (this.#staging === undefined || this.#stagingFill === 0 || this.#closed) return
    const buffer = this.#staging.buffer as ArrayBuffer
    const length = this.#stagingFill
    this.#staging = undefined
    this.#stagingFill = 0
    this.#queuedInput += length
    this.#port.postMessage({ input: buffer, length }, [buffer])
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
    if (message.error !== undefined || message.tooLarge === true) {
      this.destroy(
        message.error !== undefined
          ? new Error(`zstd decoding failed: ${message.error}`)
          : new DecodedTooLargeError(this.#maxOutputBytes),
      )
      return
    }
    this.#queuedInput -= message.consumed ?? 0
    for (const buffer of message.returned ?? [])
      if (this.#spareInputs.length < MAX_SPARE_INPUTS) this.#spareInputs.push(Buffer.from(buffer))
    if (this.#queuedInput === 0) this.#sendInput()
    if (this.#blockedWrite !== undefined && this.#queuedInput < MAX_QUEUED_INPUT) {
      const callback = this.#blockedWrite
      this.#blockedWrite = undefined
      callback()
    }
    if (message.output !== undefined) {
      const { buffer, byteOffset, byteLength } = message.output
      this.#batches.push(Buffer.from(buffer, byteOffset, byteLength))
      this.#lent.add(buffer as ArrayBuffer)
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
    this.#job.release()
  }
}
