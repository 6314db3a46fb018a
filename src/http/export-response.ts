/**
 * `?archive=<format>` (a directory as tar, tar.gz, tar.zst or zip) and `?nar` (any node as a NAR):
 * downloads, made only from a NAR that matched its NarHash.
 */
import type { Context } from 'hono'
import { type ListingNode, locate } from '../formats/listing.js'
import { narPieces } from '../formats/nar-writer.js'
import type { Logger } from '../log.js'
import type { FileSources, HeldNar } from '../store/file-source.js'
import type { HotFile } from '../store/hot-files.js'
import { exportNar } from '../store/nar-export.js'
import { ARCHIVE_FORMATS, type ArchiveFormat, archiveStream } from '../store/tree-archive.js'
import type { PathInfo } from '../upstream/path-info-lookup.js'
import { HttpError } from './errors.js'
import { IMMUTABLE } from './file-response.js'

export type ExportRequest = { readonly kind: 'archive'; readonly format: ArchiveFormat } | { readonly kind: 'nar' }

/** What the request's own node turned out to be in the verified NAR, when not what resolving said. */
export interface ExportContradicted {
  readonly kind: 'contradicted'
  readonly reason: string
}

export const EXPORT_NEEDS_CACHE = 'archives and NARs are made from the NAR cache, which is unavailable'

const CONTENT_TYPES: Record<ArchiveFormat | 'nar', string> = {
  tar: 'application/x-tar',
  'tar.gz': 'application/gzip',
  'tar.zst': 'application/zstd',
  zip: 'application/zip',
  nar: 'application/x-nix-nar',
}

/** The download `?archive=` or `?nar` asks for, if any; throws HttpError 400 for one it cannot be. */
export function parseExportQuery(c: Context): ExportRequest | undefined {
  const archive = c.req.query('archive')
  const nar = c.req.query('nar')
  if (archive !== undefined && nar !== undefined) throw new HttpError(400, 'ask for ?archive= or ?nar, not both')
  if (nar !== undefined) return { kind: 'nar' }
  if (archive === undefined) return undefined
  const format = ARCHIVE_FORMATS.find((f) => f === archive)
  if (format === undefined)
    throw new HttpError(
      400,
      `unknown archive format ${JSON.stringify(archive.slice(0, 40))}: use one of ${ARCHIVE_FORMATS.join(', ')}`,
    )
  return { kind: 'archive', format }
}

export interface ExportOptions {
  readonly c: Context
  readonly sources: Pick<FileSources<HotFile>, 'verifiedNar'>
  readonly info: PathInfo
  /** The node's path in the store path, symlinks resolved ([] is the root). */
  readonly segments: readonly string[]
  /** The node's type as resolving found it (perhaps in the upstream's `.ls`). */
  readonly resolvedType: 'regular' | 'directory'
  readonly want: ExportRequest
  readonly log: Logger
}

/**
 * The download, once the whole NAR is verified (a cold path waits for its download). Contradicted
 * when the NAR's own listing has no such node: resolving then used a `.ls` that lied.
 */
export async function exportResponse(options: ExportOptions): Promise<Response | ExportContradicted> {
  const { c, sources, info, segments, want } = options
  if (want.kind === 'archive' && options.resolvedType !== 'directory')
    throw new HttpError(400, `?archive= is for directories; ${display(segments)} is a file: ask for ?nar instead`)
  const held = await sources.verifiedNar(info)
  if (held === undefined) throw new HttpError(503, EXPORT_NEEDS_CACHE)
  try {
    const node = locate((await held.nar.source.listing()).root, segments)
    if (node === undefined || node.type !== options.resolvedType) {
      const found = node === undefined ? 'nothing' : `a ${node.type}`
      return {
        kind: 'contradicted',
        reason: `the listing has a ${options.resolvedType} at ${display(segments)}, the NAR ${found}`,
      }
    }
    const name = segments.at(-1) ?? info.storePath.name
    const extension = want.kind === 'nar' ? 'nar' : want.format
    c.header('Content-Type', CONTENT_TYPES[extension])
    c.header('Content-Disposition', attachment(`${name}.${extension}`))
    c.header('Cache-Control', IMMUTABLE)
    c.header('X-Content-Type-Options', 'nosniff')
    if (want.kind === 'nar')
      c.header('Content-Length', String(segments.length === 0 ? info.narInfo.narSize : narLength(node)))
    if (c.req.method === 'HEAD') return c.body(null)
    options.log.debug('export', { storePath: info.narInfo.storePath, path: segments.join('/'), as: extension })
    return c.body(body(held.nar, node, name, want, info.narInfo.narSize, segments.length === 0))
  } finally {
    held.release()
  }
}

function body(
  nar: HeldNar,
  node: Exclude<ListingNode, { type: 'symlink' }>,
  name: string,
  want: ExportRequest,
  narSize: number,
  root: boolean,
): ReadableStream<Uint8Array> {
  if (want.kind === 'nar') return exportNar(nar, node, root, narSize)
  if (node.type !== 'directory') throw new Error('an archive of a file')
  return archiveStream(nar, node, name, want.format)
}

/** The NAR's length, from its pieces (framing is made and dropped, run by run). */
function narLength(node: ListingNode): number {
  let length = 0
  for (const piece of narPieces(node)) length += piece.kind === 'bytes' ? piece.bytes.length : piece.size
  return length
}

/**
 * `attachment` with the name for every client (RFC 6266): a plain-ASCII `filename` fallback, and
 * the exact name in `filename*` (RFC 8187) when it differs. Written here because the
 * content-disposition package takes the name as a path and keeps what follows a backslash only.
 */
export function attachment(name: string): string {
  const fallback = name.replace(/[^\x20-\x7e]|["\\%]/g, '_')
  if (fallback === name) return `attachment; filename="${name}"`
  const exact = encodeURIComponent(name).replace(/['()*]/g, (ch) => `%${ch.charCodeAt(0).toString(16).toUpperCase()}`)
  return `attachment; filename="${fallback}"; filename*=UTF-8''${exact}`
}

function display(segments: readonly string[]): string {
  const text = segments.join('/') || '/'
  return text.length > 200 ? `${text.slice(0, 200)}…` : text
}
