/** Maps a narinfo `Compression` name to a streaming decoder (a Node Transform with backpressure). */
import { type Duplex, PassThrough, Transform, type TransformCallback } from 'node:stream'
import { createBrotliDecompress, createGunzip } from 'node:zlib'
import lzma from 'lzma-native'
import { DecompressStream as ZstdDecompressStream } from 'zstd-napi'
import unbzip2Stream from 'unbzip2-stream'
import { createProcessDecoder, findExecutable } from './process-decoder.js'
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
  /** Decode off the event loop (default true): xz in the system's `xz` when on PATH, zstd in a worker thread. */
  readonly external?: boolean
}

/**
 * Starting a process, or a round trip to a worker, costs more than decoding a small NAR in-process;
 * use `external: narSize >= PROCESS_DECODER_MIN_BYTES`.
 */
export const PROCESS_DECODER_MIN_BYTES = 1024 * 1024

const DECODE_ARGS = ['--decompress', '--stdout', '--quiet']

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
 * concurrent cold requests) 650 ms → 556 ms. A `zstd -dc` child was no faster than in-process
 * (moving 100 MB through a pipe costs the event loop about what decoding saves). fzstd is ~5x
 * slower. `@mongodb-js/zstd` 1.x has no streaming API, so it only decodes whole `.ls` bodies.
 */
export function createDecoder(compression: string, options: DecoderOptions = {}): Duplex {
  const external = options.external ?? true
  switch (compression) {
    case 'none':
      return new PassThrough()
    case 'xz': {
      const xz = external ? findExecutable('xz') : undefined
      return xz !== undefined ? createProcessDecoder(xz, DECODE_ARGS) : (lzma.createDecompressor() as Transform)
    }
    case 'zstd':
      return external ? new WorkerZstdDecoder() : new ZstdDecompressStream()
    case 'bzip2':
      return createBzip2Decoder()
    case 'br':
      return createBrotliDecompress()
    case 'gzip':
      return createGunzip()
    default:
      throw new UnsupportedCompressionError(compression)
  }
}

/**
 * The decoders between an upstream's NAR body and the NAR: the body's HTTP Content-Encoding, if
 * any, then the narinfo's Compression. When either is unsupported it throws, having stopped the
 * decoder it already started (a worker job or a child process).
 */
export function createNarDecoders(compression: string, contentEncoding: string | undefined, options: DecoderOptions = {}): Duplex[] {
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
    for (const decoder of decoders) decoder.destroy()
    throw err
  }
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
