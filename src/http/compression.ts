/** On-the-fly compression of text responses, negotiated from Accept-Encoding. */
import { pipeline, Readable } from 'node:stream'
import { brotliCompressSync, constants, createBrotliCompress, createGzip, gzipSync } from 'node:zlib'
import { compress as zstdCompress, CompressStream as ZstdCompressStream } from 'zstd-napi'

export type ResponseEncoding = 'br' | 'zstd' | 'gzip'

/** Below this, compressing costs more than it saves. */
export const MIN_COMPRESS_BYTES = 1024

const PREFERENCE: readonly ResponseEncoding[] = ['br', 'zstd', 'gzip']

/** The best encoding the client accepts (q > 0), or undefined for identity. */
export function negotiateEncoding(acceptEncoding: string | undefined): ResponseEncoding | undefined {
  if (acceptEncoding === undefined) return undefined
  const accepted = new Map<string, number>()
  for (const part of acceptEncoding.split(',')) {
    const [name, ...params] = part.trim().toLowerCase().split(';')
    if (name === undefined || name === '') continue
    const q = params.map((p) => /^\s*q=([\d.]+)\s*$/.exec(p)).find((m) => m !== null)
    accepted.set(name, q ? Number(q[1]) : 1)
  }
  return PREFERENCE.find((encoding) => (accepted.get(encoding) ?? accepted.get('*') ?? 0) > 0)
}

/** The encoding for a response of `size` bytes: none when it is small or not `compressible`. */
export function chooseEncoding(
  acceptEncoding: string | undefined,
  size: number,
  compressible: boolean,
): ResponseEncoding | undefined {
  return size >= MIN_COMPRESS_BYTES && compressible ? negotiateEncoding(acceptEncoding) : undefined
}

/** Text-like types gain from compression; media and archives are already compressed. */
export function isCompressible(contentType: string): boolean {
  const type = contentType.split(';')[0]!.trim()
  return (
    type.startsWith('text/') ||
    /^application\/(json|javascript|xml|xhtml\+xml|wasm|x-sh|manifest\+json)$/.test(type) ||
    type === 'image/svg+xml' ||
    type.endsWith('+json') ||
    type.endsWith('+xml')
  )
}

export function compressStream(
  body: ReadableStream<Uint8Array>,
  encoding: ResponseEncoding,
): ReadableStream<Uint8Array> {
  const encoder =
    encoding === 'br'
      ? createBrotliCompress({ params: { [constants.BROTLI_PARAM_QUALITY]: 4 } })
      : encoding === 'zstd'
        ? new ZstdCompressStream()
        : createGzip({ level: 6 })
  // A Node pipeline keeps backpressure (web pipeThrough with these transforms buffered everything).
  // It also destroys the source when a client that went away destroys the encoder: that cancels
  // `body`, and so releases the NAR read behind it.
  const source = Readable.fromWeb(body as import('node:stream/web').ReadableStream<Uint8Array>)
  return Readable.toWeb(pipeline(source, encoder, () => {})) as unknown as ReadableStream<Uint8Array>
}

/** For generated pages (listings): small enough to compress in one go. */
export function compressBuffer(body: Uint8Array, encoding: ResponseEncoding): Uint8Array<ArrayBuffer> {
  const out =
    encoding === 'br'
      ? brotliCompressSync(body, { params: { [constants.BROTLI_PARAM_QUALITY]: 4 } })
      : encoding === 'zstd'
        ? zstdCompress(body)
        : gzipSync(body, { level: 6 })
  return new Uint8Array(out.buffer as ArrayBuffer, out.byteOffset, out.byteLength)
}
