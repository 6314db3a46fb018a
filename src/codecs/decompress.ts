/** Maps a narinfo `Compression` name to a streaming decoder (a Node Transform with backpressure). */
import { PassThrough, Transform, type TransformCallback } from 'node:stream'
import { createBrotliDecompress, createGunzip } from 'node:zlib'
import lzma from 'lzma-native'
import { DecompressStream as ZstdDecompressStream } from 'zstd-napi'
import unbzip2Stream from 'unbzip2-stream'

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

/**
 * A fresh decoder for one NAR body. zstd uses zstd-napi (native, streaming; fzstd measured ~5x
 * slower in bench/codecs.ts); `@mongodb-js/zstd` 1.x has no streaming API, so it is only used for
 * whole small `.ls` bodies.
 */
export function createDecoder(compression: string): Transform {
  switch (compression) {
    case 'none':
      return new PassThrough()
    case 'xz':
      return lzma.createDecompressor() as Transform
    case 'zstd':
      return new ZstdDecompressStream()
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
