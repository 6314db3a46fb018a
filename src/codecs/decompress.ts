/** Maps a narinfo `Compression` name to a streaming decoder (a Node Transform with backpressure). */
import { type Duplex, PassThrough, type Readable, Transform, type TransformCallback } from 'node:stream'
import { finished } from 'node:stream/promises'
import { createBrotliDecompress, createGunzip } from 'node:zlib'
import lzma from 'lzma-native'
import { DecompressStream as ZstdDecompressStream } from 'zstd-napi'
import unbzip2Stream from 'unbzip2-stream'
import { createProcessDecoder, DECODE_ARGS, findExecutable } from './process-decoder.js'
import { WorkerZstdDecoder } from './worker-decoder.js'

export class UnsupportedCompressionError extends Error {
  override readonly name = 'UnsupportedCompressionError'
  readonly compression: string
  /** `what` names where the name came from: the narinfo's Compression, or the body's Content-Encoding. */
  constructor(compression: string, what: 'NAR compression' | 'Content-Encoding' = 'NAR compression') {
    super(`unsupported ${what} "${compression}"`)
    this.compression = compression
  }
}

/** A decoder that can reuse the memory of chunks it produced (the zstd worker decoder). */
export interface Recycler {
  /** The consumer is done with `chunk` and keeps no view of it. */
  recycle(chunk: Uint8Array): void
}

/** The decoder's recycle(), when it has one. */
export function recyclerOf(decoder: Duplex): ((chunk: Uint8Array) => void) | undefined {
  const recycle = (decoder as Partial<Recycler>).recycle
  return typeof recycle === 'function' ? recycle.bind(decoder) : undefined
}

export interface DecoderOptions {
  /** Decode zstd off the event loop, in a worker thread (default true). */
  readonly external?: boolean
  /**
   * The most bytes the decoder may produce (a NAR's NarSize): it fails past that. Needed by the
   * decoders that expand a whole input chunk at once, ignoring backpressure (zstd-napi's stream,
   * bzip2, lzma-native): a small bomb would otherwise be held in memory whole.
   */
  readonly maxOutputBytes?: number
}

/** The decoded data went past DecoderOptions.maxOutputBytes: a decompression bomb, or a wrong NarSize. */
export class DecodedTooLargeError extends Error {
  override readonly name = 'DecodedTooLargeError'
}

/** zstd NARs smaller than this decode in-process: a worker's round trip or a program's start costs more. */
export const SMALL_ZSTD_BYTES = 1024 * 1024

/**
 * A fresh decoder for one NAR body.
 *
 * xz prefers the system's `xz` in a child process (looked up on PATH for each NAR, a few access()
 * calls): lzma-native's prebuilt liblzma is compiled without optimisation and decodes at less than
 * half the speed of `xz -dc` (bench/ row 2a went from 2.62x to 1.04x), and the child decodes on the
 * second core while the event loop indexes and writes; lzma-native remains the fallback. zstd uses
 * zstd-napi, about as fast as `zstd -dc` (bench/ row 1b), in a worker thread (worker-decoder.ts)
 * for big NARs: decoding then overlaps with the event loop's indexing and writing, and buffers move
 * between the threads without copies. Measured 2026-11 on two cores, six alternating runs: row 3a
 * (cold last file of a 100 MB NAR) median 338 ms in-process → 274 ms in a worker; row 8d (200
 * concurrent cold requests) 650 ms → 556 ms. A `zstd -dc` child piping into this process was no
 * faster (moving 100 MB through a pipe costs the event loop about what decoding saves); one that
 * writes the NAR file itself is, and downloads use that when they can (file-decoder.ts). fzstd is ~5x
 * slower. `@mongodb-js/zstd` 1.x is not used for upstream bodies: it has no streaming API, and its
 * whole-buffer decode cannot be bounded (in a review's run, a 120 KB zstd narinfo grew to 4 GB
 * before its length could be checked); decodeZstdBuffer() decodes `.ls` and narinfo bodies with a
 * bound instead.
 */
export function createDecoder(compression: string, options: DecoderOptions = {}): Duplex {
  const external = options.external ?? true
  const max = options.maxOutputBytes ?? Infinity
  switch (compression) {
    case 'none':
      return new PassThrough()
    case 'xz': {
      // The `xz` child for every size: its pipe has backpressure, lzma-native's output does not.
      const xz = findExecutable('xz')
      return xz !== undefined ? createProcessDecoder(xz, DECODE_ARGS) : limitOutput(lzma.createDecompressor() as Transform, max, 'destroy')
    }
    case 'zstd':
      // zstd-napi's stream turns a throw from push() into a stream error.
      return external ? new WorkerZstdDecoder() : limitOutput(new ZstdDecompressStream(), max, 'throw')
    case 'bzip2': {
      // unbzip2-stream builds each block's output (up to ~46 MB from a few dozen bytes) in a JS
      // array before anyone can refuse it; the system's `bzip2` in a child has a pipe's backpressure.
      const bzip2 = findExecutable('bzip2')
      return bzip2 !== undefined ? createProcessDecoder(bzip2, DECODE_ARGS) : limitOutput(createBzip2Decoder(), max, 'throw')
    }
    case 'br':
      return createBrotliDecompress()
    case 'gzip':
      return createGunzip()
    default:
      throw new UnsupportedCompressionError(compression)
  }
}

/**
 * The decoders between an upstream's NAR `body` and the NAR: the body's HTTP Content-Encoding, if
 * any, then the narinfo's Compression, bounded by NarSize. When either is unsupported it throws,
 * having destroyed `body` (nothing owns it yet: its connection would stay open) and any decoder it
 * already started (a worker job or a child process).
 */
export function createNarDecoders(body: Readable, contentEncoding: string | undefined, compression: string, narSize: number): Duplex[] {
  const options: DecoderOptions = { external: narSize >= SMALL_ZSTD_BYTES, maxOutputBytes: narSize }
  const decoders: Duplex[] = []
  try {
    if (contentEncoding !== undefined && contentEncoding !== 'identity') {
      try {
        decoders.push(createDecoder(contentEncoding === 'x-gzip' ? 'gzip' : contentEncoding))
      } catch (err) {
        throw err instanceof UnsupportedCompressionError ? new UnsupportedCompressionError(contentEncoding, 'Content-Encoding') : err
      }
    }
    decoders.push(createDecoder(compression, options))
    return decoders
  } catch (err) {
    for (const stream of [body, ...decoders]) stream.destroy()
    throw err
  }
}

/**
 * Stops `decoder` once it has produced more than `max` bytes. `throw` is for decoders that push
 * synchronously from inside their own error handling (it ends their decoding loop at once);
 * `destroy` for the others (lzma-native pushes from setImmediate callbacks, where a throw would be
 * uncaught; its native side may still finish the chunk at hand, but nothing more is fed to it).
 */
function limitOutput<T extends Duplex>(decoder: T, max: number, how: 'throw' | 'destroy'): T {
  if (max === Infinity) return decoder
  let produced = 0
  const push = decoder.push.bind(decoder)
  decoder.push = (chunk: unknown, encoding?: BufferEncoding): boolean => {
    if (chunk !== null && chunk !== undefined) {
      produced += (chunk as Uint8Array).length
      if (produced > max) {
        const err = new DecodedTooLargeError(`the decoded NAR is larger than its NarSize ${max}`)
        if (how === 'throw') throw err
        decoder.destroy(err)
        return false
      }
    }
    return push(chunk, encoding)
  }
  return decoder
}

/** A whole zstd buffer (an `.ls` or narinfo body), decoded to at most `maxBytes`. */
export async function decodeZstdBuffer(input: Uint8Array, maxBytes: number): Promise<Buffer> {
  const decoder = createDecoder('zstd', { external: false, maxOutputBytes: maxBytes })
  const chunks: Buffer[] = []
  decoder.on('data', (chunk: Buffer) => chunks.push(chunk))
  decoder.end(input)
  await finished(decoder)
  return Buffer.concat(chunks)
}

/**
 * unbzip2-stream is an old-style `through` stream that decodes synchronously inside write();
 * wrapping it in a Transform gives it real backpressure and error propagation.
 */
function createBzip2Decoder(): Transform {
  const inner = unbzip2Stream()
  let failure: Error | undefined
  const outer = new Transform({
    transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) {
      try {
        inner.write(chunk)
      } catch (err) {
        failure = err as Error
      }
      callback(failure)
    },
    flush(callback: TransformCallback) {
      try {
        inner.end()
      } catch (err) {
        failure = err as Error
      }
      callback(failure)
    },
  })
  inner.on('data', (data: Buffer) => outer.push(data))
  inner.on('error', (err: Error) => {
    failure = err
    outer.destroy(err)
  })
  return outer
}
