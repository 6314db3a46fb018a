/** Builds the response for one store file: caching headers, Range, download names, compression, sandbox. */
import type { Context } from 'hono'
import type { Logger } from '../log.js'
import type { FileReader } from '../store/file-source.js'
import { abortOnError } from './abort-on-error.js'
import { diskBody } from './disk-body.js'
import { chooseEncoding, compressBuffer, compressStream, isCompressible } from './compression.js'
import { errorResponse } from './errors.js'
import { parseRange, resolveRange, type RangeSpec } from './range.js'
import { outgoingOf } from './node-env.js'
import type { ReadBuffers } from './read-buffers.js'

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
  /** Positioned reads of the file on disk, when it can be read so (a body written without web streams). */
  readonly openReader?: (() => FileReader) | undefined
  /** The whole content, already read: small files go out in one write, without a stream. */
  readonly bytes?: Uint8Array<ArrayBuffer>
}

export interface FileResponseOptions {
  /** Subdomain mode gives each store path its own origin, so no sandbox is needed there. */
  readonly sandbox: boolean
  readonly log: Logger
  /** What bodies read from disk read into. */
  readonly readBuffers: ReadBuffers
}

export function fileResponse(c: Context, file: StoreFile, options: FileResponseOptions): Response {
  c.header('ETag', file.etag)
  c.header('Cache-Control', IMMUTABLE)
  c.header('X-Content-Type-Options', 'nosniff')
  c.header('Content-Type', file.contentType)
  if (options.sandbox) c.header('Content-Security-Policy', STORE_FILE_CSP)
  if (file.executable) c.header('NAR-Executable', '1')
  const download = c.req.query('download')
  if (download !== undefined)
    c.header('Content-Disposition', contentDisposition(download === '' ? file.name : download))
  // Every answer for a compressible file varies with Accept-Encoding: 304s and 206s too.
  if (isCompressible(file.contentType)) c.header('Vary', 'Accept-Encoding')
  if (matchesEtag(c.req.header('if-none-match'), file.etag)) {
    c.header('ETag', currentEtag(c, file.etag, file.size, file.contentType, file.openRange !== undefined))
    return c.body(null, 304)
  }
  const head = c.req.method === 'HEAD'

  if (file.openRange !== undefined) {
    c.header('Accept-Ranges', 'bytes')
    const spec = rangeToServe(c, file.etag)
    if (spec !== undefined) {
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
      return c.body(guardBody(c, openBytes(c, file, range.start, range.end + 1, options), options.log), 206)
    }
  }

  const encoding = chooseEncoding(c.req.header('accept-encoding'), file.size, isCompressible(file.contentType))
  if (encoding !== undefined) {
    c.header('ETag', encodedEtag(file.etag, encoding))
    c.header('Content-Encoding', encoding)
    if (head) return c.body(null)
    if (file.bytes !== undefined) return c.body(compressBuffer(file.bytes, encoding))
    return c.body(compressStream(guardBody(c, file.openWhole(), options.log), encoding))
  }
  c.header('Content-Length', String(file.size))
  if (head) return c.body(null)
  return c.body(file.bytes ?? guardBody(c, openBytes(c, file, 0, file.size, options), options.log))
}

/** Bytes [start, end) of a file that has openRange, or the whole file. */
function openBytes(
  c: Context,
  file: StoreFile,
  start: number,
  end: number,
  options: FileResponseOptions,
): ReadableStream<Uint8Array> {
  const outgoing = outgoingOf(c)
  if (file.openReader !== undefined && outgoing !== undefined)
    return diskBody(outgoing, file.openReader(), start, end, options.readBuffers)
  return start === 0 && end === file.size ? file.openWhole() : file.openRange!(start, end)
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
  return clientTags(header).some((tag) => tag === '*' || tag === etag || isEncodedTagOf(tag, etag))
}

/**
 * The tag a 200 would carry for this request, which RFC 9110 (15.4.5) wants on a 304 too: the
 * compressed representation's when that is what would be sent. With `contentType` undefined the
 * type is known only from the file's bytes, which a 304 does not read: a client holding a
 * compressed copy then shows that the file is text, and otherwise the plain tag is given.
 * `ranges`: the file can be sent in ranges (a ranged 200 would be a 206, never compressed).
 */
export function currentEtag(
  c: Context,
  etag: string,
  size: number,
  contentType: string | undefined,
  ranges: boolean,
): string {
  if (ranges && rangeToServe(c, etag) !== undefined) return etag
  const compressible =
    contentType !== undefined
      ? isCompressible(contentType)
      : clientTags(c.req.header('if-none-match')).some((tag) => isEncodedTagOf(tag, etag))
  const encoding = chooseEncoding(c.req.header('accept-encoding'), size, compressible)
  return encoding === undefined ? etag : encodedEtag(etag, encoding)
}

/** The Range to answer with a 206: a valid one whose If-Range, if any, names this file. */
function rangeToServe(c: Context, etag: string): RangeSpec | undefined {
  const spec = parseRange(c.req.header('range'))
  const ifRange = c.req.header('if-range')
  return spec !== undefined && (ifRange === undefined || ifRange.trim() === etag) ? spec : undefined
}

/** A compressed representation is another representation, so it has another strong tag. */
function encodedEtag(etag: string, encoding: string): string {
  return etag.replace(/"$/, `-${encoding}"`)
}

function isEncodedTagOf(tag: string, etag: string): boolean {
  return tag.startsWith(etag.replace(/"$/, '-'))
}

/** The entity tags of an If-None-Match, weak ones compared by their opaque part (RFC 9110 13.1.2). */
function clientTags(header: string | undefined): string[] {
  return header === undefined ? [] : header.split(',').map((tag) => tag.trim().replace(/^W\//, ''))
}
