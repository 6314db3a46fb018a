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
  constructor(compression: string) {
    super(`unsupported NAR compression "${compression}"`)
    this.compression = compression
  }
}

export interface DecoderOptions {
  /** Use the system's `xz` binary when it is on PATH (default true). */
  readonly external?: boolean
}

/**
 * Starting a process costs a few ms of CPU, more than decoding a small NAR in-process; use
 * `external: narSize >= PROCESS_DECODER_MIN_BYTES`.
 */
export const PROCESS_DECODER_MIN_BYTES = 1024 * 1024

const DECODE_ARGS = ['--decompress', '--stdout', '--quiet']

/**
 * A fresh decoder for one NAR body.
 *
 * xz prefers the system's `xz` in a child process (looked up on PATH for each NAR, a few access()
 * calls): lzma-native's prebuilt liblzma is compiled without optimisation and decodes at less than
 * half the speed of `xz -dc` (bench/ row 2a went from 2.62x to 1.04x), and the child decodes on the
 * second core while the event loop indexes and writes; lzma-native remains the fallback. zstd stays
 * in-process with zstd-napi, about as fast as `zstd -dc` (bench/ row 1b): a `zstd -dc` child was
 * measured again (2026-11, hashing already off the event loop) and was no faster for a 100 MB NAR
 * on two cores (median 290–470 ms vs 280–330 ms in-process), because moving 100 MB through a pipe
 * costs the event loop about what decoding saves. fzstd is ~5x slower. `@mongodb-js/zstd` 1.x has
 * no streaming API, so it only decodes whole `.ls` bodies.
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
      return external && process.env.EXP_INPROC !== '1' ? new WorkerZstdDecoder() : new ZstdDecompressStream()
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
