/** Maps a narinfo `Compression` name to a streaming decoder (a Node Transform with backpressure). */
import { type Duplex, PassThrough, Transform, type TransformCallback } from 'node:stream'
import { createBrotliDecompress, createGunzip } from 'node:zlib'
import lzma from 'lzma-native'
import { DecompressStream as ZstdDecompressStream } from 'zstd-napi'
import unbzip2Stream from 'unbzip2-stream'
import { createProcessDecoder, findExecutable } from './process-decoder.js'

export class UnsupportedCompressionError extends Error {
  override readonly name = 'UnsupportedCompressionError'
  readonly compression: string
  constructor(compression: string) {
    super(`unsupported NAR compression "${compression}"`)
    this.compression = compression
  }
}

/** Compression names unnar can decode, as written in narinfo files. */
export const SUPPORTED_COMPRESSIONS = ['none', 'xz', 'zstd', 'bzip2', 'br', 'gzip'] as const

export function isSupportedCompression(name: string): boolean {
  return (SUPPORTED_COMPRESSIONS as readonly string[]).includes(name)
}

export interface DecoderOptions {
  /** Use the system's `xz`/`zstd` binaries when they are on PATH (default true). */
  readonly external?: boolean
}

const XZ = findExecutable('xz')
const ZSTD = findExecutable('zstd')

/**
 * A fresh decoder for one NAR body.
 *
 * xz and zstd prefer the system's `xz`/`zstd` in a child process: lzma-native's prebuilt liblzma is
 * compiled without optimisation and decodes at less than half the speed of `xz -dc` (bench/), and
 * a child process decodes on the second core while the event loop hashes, indexes and writes. The
 * in-process decoders remain the fallback: lzma-native for xz, zstd-napi for zstd (fzstd measured
 * ~5x slower). `@mongodb-js/zstd` 1.x has no streaming API, so it only decodes whole `.ls` bodies.
 */
export function createDecoder(compression: string, options: DecoderOptions = {}): Duplex {
  const external = options.external ?? true
  switch (compression) {
    case 'none':
      return new PassThrough()
    case 'xz':
      return external && XZ !== undefined ? createProcessDecoder(XZ, ['--decompress', '--stdout', '--quiet']) : (lzma.createDecompressor() as Transform)
    case 'zstd':
      return external && ZSTD !== undefined ? createProcessDecoder(ZSTD, ['--decompress', '--stdout', '--quiet']) : new ZstdDecompressStream()
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
