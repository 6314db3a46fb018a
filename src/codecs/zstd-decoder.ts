/**
 * zstd decoded in-process (small NARs, `.ls` and narinfo bodies) on decoding contexts that are kept
 * for the next stream. zstd-napi's DecompressStream creates a context per stream, and the frames Nix
 * writes declare a 2 MiB window: every small NAR left ~2.2 MB of native memory that only a GC of
 * its wrapper frees. V8 counts it as external memory, so a stream of small cold NARs set off a full
 * GC several times a second (bench/ "mixed soak").
 */
import { createRequire } from 'node:module'
import { Transform, type TransformCallback } from 'node:stream'
import type { DCtx as Context } from 'zstd-napi/binding.js'
import { DecodedTooLargeError } from './decompress.js'

// zstd-napi's documented low-level module; CommonJS without named exports for an ESM import.
const binding = createRequire(import.meta.url)('zstd-napi/binding') as typeof import('zstd-napi/binding.js')

/** What one decoding call may write at most: zstd's own streaming output size (ZSTD_DStreamOutSize). */
const OUTPUT_BYTES = 128 * 1024

/** A decoding context, and the buffer it decodes into (its output is copied out at the size produced). */
interface Slot {
  readonly context: Context
  readonly output: Buffer
}

/** The contexts not in use, at most `spare` of them; a stream takes one and gives it back when it ends. */
export class ZstdContexts {
  readonly #free: Slot[] = []
  readonly #spare: number
  #created = 0

  constructor(spare: number) {
    this.#spare = spare
  }

  take(): Slot {
    const slot = this.#free.pop()
    if (slot !== undefined) return slot
    this.#created++
    return { context: new binding.DCtx(), output: Buffer.allocUnsafeSlow(OUTPUT_BYTES) }
  }

  /** Takes back `slot`, its frame (finished or not) forgotten; beyond `spare`, it is left to the GC. */
  give(slot: Slot): void {
    if (this.#free.length >= this.#spare) return
    slot.context.reset(binding.ResetDirective.sessionOnly)
    this.#free.push(slot)
  }

  /** Contexts made so far (each holds its window's memory). */
  get created(): number {
    return this.#created
  }
}

/** Shared by the in-process decoders: as many as decode at once in a busy moment. */
const sharedContexts = new ZstdContexts(4)

/**
 * Decodes a zstd stream (one or more frames), and fails with DecodedTooLargeError past
 * `maxOutputBytes` having decoded at most one byte more. What it pushes is copied out of the
 * context's buffer at the size decoded: a chunk holds no more memory than its bytes, however small
 * the pieces of input are (a fresh 128 KiB per call, as zstd-napi's stream allocates, stays alive
 * as long as any piece of it).
 */
export class ZstdDecoder extends Transform {
  readonly #contexts: ZstdContexts
  #slot: Slot | undefined
  readonly #max: number
  /** Bytes the decoder may still produce. */
  #allowed: number
  #inFrame = false

  constructor(maxOutputBytes = Infinity, contexts: ZstdContexts = sharedContexts) {
    super()
    this.#contexts = contexts
    this.#slot = contexts.take()
    this.#max = maxOutputBytes
    this.#allowed = maxOutputBytes
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    const slot = this.#slot
    if (slot === undefined) return done(new Error('the zstd decoder was already released'))
    let input: Buffer = chunk
    try {
      for (;;) {
        const output = slot.output.subarray(0, Math.min(OUTPUT_BYTES, this.#allowed + 1))
        const [remaining, produced, consumed] = slot.context.decompressStream(output, input)
        if (produced > this.#allowed) throw new DecodedTooLargeError(this.#max)
        this.#allowed -= produced
        if (produced > 0) {
          this.push(Buffer.copyBytesFrom(output, 0, produced))
          // A 'data' listener may have destroyed the stream, and the context is then another's.
          if (this.#slot !== slot) return done()
        }
        input = input.subarray(consumed)
        this.#inFrame = remaining !== 0
        // Output space left over means the decoder wants input; a full buffer may hold back more.
        if (input.length === 0 && (produced < output.length || remaining === 0)) break
      }
    } catch (err) {
      return done(err as Error)
    }
    done()
  }

  override _flush(done: TransformCallback): void {
    if (this.#inFrame) return done(new Error('the zstd stream ends in the middle of a frame (truncated input)'))
    this.#release()
    done()
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.#release()
    callback(err)
  }

  #release(): void {
    const slot = this.#slot
    this.#slot = undefined
    if (slot !== undefined) this.#contexts.give(slot)
  }
}
