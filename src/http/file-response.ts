/** Builds the response for one store file: caching headers, Range, download names, compression, sandbox. */
import type { Context } from 'hono'
import type { Logger } from '../log.js'
import { abortOnError } from './abort-on-error.js'
import { compressBuffer, compressStream, isCompressible, MIN_COMPRESS_BYTES, negotiateEncoding } from './compression.js'
import { errorResponse } from './errors.js'
import { parseRange, resolveRange } from './range.js'
import { outgoingOf } from './node-env.js'

export const IMMUTABLE = 'public, max-age=31536000, immutable'

/**
 * Store files are arbitrary content from the internet: HTML or SVG from a store path must not run
 * with unnar's origin, so it gets a sandbox of its own (scripts allowed, same-origin not).
 */
export const STORE_FILE_CSP = 'sandbox allow-scripts allow-forms allow-popups allow-downloads'

export interface StoreFile {
  readonly name: string
  readonly size: number
  readonly executable: boolean
  readonly etag: string
  readonly contentType: string
  /** Bytes [start, end) of the file; undefined when only a whole-file stream exists (no ranges). */
  readonly openRange: ((start: number, end: number) => ReadableStream<Uint8Array>) | undefined
  readonly openWhole: () => ReadableStream<Uint8Array>
  /** The whole content, already read: small files go out in one write, without a stream. */
  readonly bytes?: Uint8Array<ArrayBuffer>
}

export interface FileResponseOptions {
  /** Subdomain mode gives each store path its own origin, so no sandbox is needed there. */
  readonly sandbox: boolean
  readonly log: Logger
}

export function fileResponse(c: Context, file: StoreFile, options: FileResponseOptions): Response {
  c.header('ETag', file.etag)
  c.header('Cache-Control', IMMUTABLE)
  c.header('X-Content-Type-Options', 'nosniff')
  c.header('Content-Type', file.contentType)
  if (options.sandbox) c.header('Content-Security-Policy', STORE_FILE_CSP)
  if (file.executable) c.header('NAR-Executable', '1')
  const download = c.req.query('download')
  if (download !== undefined) c.header('Content-Disposition', contentDisposition(download === '' ? file.name : download))
  // Every answer for a compressible file varies with Accept-Encoding: 304s and 206s too.
  if (isCompressible(file.contentType)) c.header('Vary', 'Accept-Encoding')
  if (matchesEtag(c.req.header('if-none-match'), file.etag)) return c.body(null, 304)
  const head = c.req.method === 'HEAD'

  if (file.openRange !== undefined) {
    c.header('Accept-Ranges', 'bytes')
    const spec = parseRange(c.req.header('range'))
    const ifRange = c.req.header('if-range')
    if (spec !== undefined && (ifRange === undefined || ifRange.trim() === file.etag)) {
      const range = resolveRange(spec, file.size)
      if (range === 'unsatisfiable') {
        c.header('Content-Range', `bytes */${file.size}`)
        c.header('Cache-Control', 'no-store')
        return errorResponse(c, 416, `the file has ${file.size} bytes`)
      }
      c.header('Content-Range', `bytes ${range.start}-${range.end}/${file.size}`)
      c.header('Content-Length', String(range.end - range.start + 1))
      if (head) return c.body(null, 206)
      if (file.bytes !== undefined) return c.body(file.bytes.subarray(range.start, range.end + 1), 206)
      return c.body(guardBody(c, file.openRange(range.start, range.end + 1), options.log), 206)
    }
  }

  const encoding = file.size >= MIN_COMPRESS_BYTES && isCompressible(file.contentType) ? negotiateEncoding(c.req.header('accept-encoding')) : undefined
  if (encoding !== undefined) {
    // Another representation, so another strong validator.
    c.header('ETag', file.etag.replace(/"$/, `-${encoding}"`))
    c.header('Content-Encoding', encoding)
    if (head) return c.body(null)
    if (file.bytes !== undefined) return c.body(compressBuffer(file.bytes, encoding))
    return c.body(compressStream(guardBody(c, file.openWhole(), options.log), encoding))
  }
  c.header('Content-Length', String(file.size))
  if (head) return c.body(null)
  return c.body(file.bytes ?? guardBody(c, file.openWhole(), options.log))
}

/** A body stream that fails breaks the connection (see abortOnError). */
function guardBody(c: Context, body: ReadableStream<Uint8Array>, log: Logger): ReadableStream<Uint8Array> {
  const outgoing = outgoingOf(c)
  return abortOnError(body, outgoing, (err) => log.warn('response aborted', { path: c.req.path, error: err }))
}

/** RFC 6266: an ASCII fallback plus RFC 8187 `filename*` so non-ASCII names survive. */
export function contentDisposition(name: string): string {
  const fallback = name.replace(/[^\x20-\x7e]|["\\%]/g, '_')
  const encoded = encodeURIComponent(name).replace(/['()*]/g, (ch) => `%${ch.charCodeAt(0).toString(16).toUpperCase()}`)
  return `attachment; filename="${fallback}"; filename*=UTF-8''${encoded}`
}

/**
 * `If-None-Match` against a file's tag: `*` (the file exists), the tag itself, or the tag of one of
 * its compressed representations, which names the same (immutable) bytes: the client's copy of it,
 * whatever its encoding, is still current.
 */
export function matchesEtag(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false
  const bare = etag.replace(/"$/, '')
  return header.split(',').some((tag) => {
    const t = tag.trim().replace(/^W\//, '')
    return t === '*' || t === etag || t.startsWith(bare + '-')
  })
}
