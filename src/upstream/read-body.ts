/** Reads a small upstream body (narinfo, `.ls`) into memory, bounded, undoing its Content-Encoding. */
import { brotliDecompressSync, gunzipSync, inflateSync } from 'node:zlib'
import { decodeZstdBuffer } from '../codecs/decompress.js'
import { UpstreamError, type UpstreamResponse } from './upstream.js'

/**
 * Collects at most `maxBytes` (before and after decoding). `.ls` files arrive br- or zstd-encoded
 * from S3-backed caches whatever the request asked for, so every encoding Nix uploads is decoded.
 */
export async function readSmallBody(
  res: UpstreamResponse,
  maxBytes: number,
  upstream: string,
  key: string,
): Promise<Buffer> {
  if (res.size !== undefined && res.size > maxBytes) {
    res.body.destroy()
    throw new UpstreamError(upstream, 'bad-response', `${key} is ${res.size} bytes, over the ${maxBytes}-byte limit`)
  }
  const chunks: Buffer[] = []
  let total = 0
  try {
    for await (const chunk of res.body) {
      total += (chunk as Buffer).length
      if (total > maxBytes) {
        res.body.destroy()
        throw new UpstreamError(upstream, 'bad-response', `${key} is over the ${maxBytes}-byte limit`)
      }
      chunks.push(chunk as Buffer)
    }
  } catch (err) {
    if (err instanceof UpstreamError) throw err
    throw new UpstreamError(upstream, 'network', `reading ${key}: ${(err as Error).message}`, { cause: err })
  }
  const raw = Buffer.concat(chunks)
  try {
    return await decodeContent(raw, res.contentEncoding, maxBytes)
  } catch (err) {
    throw new UpstreamError(
      upstream,
      'bad-response',
      `cannot decode ${key} (Content-Encoding: ${res.contentEncoding})`,
      { cause: err },
    )
  }
}

async function decodeContent(raw: Buffer, encoding: string | undefined, maxBytes: number): Promise<Buffer> {
  switch (encoding) {
    case undefined:
    case 'identity':
    case 'none':
      return raw
    case 'gzip':
    case 'x-gzip':
      return gunzipSync(raw, { maxOutputLength: maxBytes })
    case 'deflate':
      return inflateSync(raw, { maxOutputLength: maxBytes })
    case 'br':
      return brotliDecompressSync(raw, { maxOutputLength: maxBytes })
    case 'zstd':
      return decodeZstdBuffer(raw, maxBytes)
    default:
      throw new TypeError(`unsupported Content-Encoding "${encoding}"`)
  }
}
