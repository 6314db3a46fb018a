/** GET/HEAD `/nix/store/<hash>[-<name>][/<path>]`: resolve the path, then answer a file, listing or redirect. */
import { createHash } from 'node:crypto'
import type { ServerResponse } from 'node:http'
import type { Context } from 'hono'
import { formatHashNix32 } from '../formats/hash.js'
import { locate, type ListingNode } from '../formats/listing.js'
import type { Logger } from '../log.js'
import { DiskError } from '../store/nar-download.js'
import type { NarSource } from '../store/nar-source.js'
import type { NarStore } from '../store/nar-store.js'
import { openDirectFile } from '../store/direct-file-stream.js'
import type { PathInfo, PathInfoLookup } from '../upstream/path-info-lookup.js'
import { abortOnError } from './abort-on-error.js'
import { contentTypeByName, contentTypeBySniffing, SNIFF_BYTES } from './content-type.js'
import { HttpError } from './errors.js'
import { encodePath } from './html.js'
import { renderListingPage } from './listing-page.js'
import { peekStream } from './peek-stream.js'
import { parseStoreRequest } from './request-path.js'
import { resolveStorePath, type NodeLookup } from './resolve-path.js'

export interface StoreRouteDeps {
  readonly lookup: PathInfoLookup
  readonly store: NarStore
  readonly log: Logger
  readonly storeDir: string
}

type RegularNode = Extract<ListingNode, { type: 'regular' }>
type DirectoryNode = Extract<ListingNode, { type: 'directory' }>

/** Where nodes come from for one request: the cached NAR, the upstream `.ls`, or the NAR itself. */
interface Tree {
  readonly lookup: NodeLookup
  /** Present when the NAR is cached or being downloaded for this request. */
  readonly source: NarSource | undefined
}

const IMMUTABLE = 'public, max-age=31536000, immutable'

export function createStoreRoute(deps: StoreRouteDeps): (c: Context) => Promise<Response> {
  const { lookup, store, log, storeDir } = deps
  const prefix = `${storeDir}/`

  /** The cached or downloading NAR; undefined when the cache directory cannot take it. */
  async function openSource(info: PathInfo): Promise<NarSource | undefined> {
    try {
      return await store.open(info)
    } catch (err) {
      if (err instanceof DiskError) return undefined
      throw err
    }
  }

  async function treeFor(info: PathInfo): Promise<Tree | undefined> {
    if (store.has(info)) {
      const source = await openSource(info)
      if (source !== undefined) return { lookup: (s) => source.node(s), source }
    }
    const listing = await lookup.listing(info)
    if (listing !== undefined) return { lookup: async (s) => locate(listing.root, s), source: undefined }
    const source = await openSource(info)
    return source === undefined ? undefined : { lookup: (s) => source.node(s), source }
  }

  return async function storeRoute(c: Context): Promise<Response> {
    const url = new URL(c.req.url)
    const req = parseStoreRequest(url.pathname.slice(prefix.length))
    const info = await lookup.find(req.hash)
    if (info === undefined) {
      throw new HttpError(404, `${prefix}${req.hash} is not in any upstream (${lookup.upstreams.map((u) => u.name).join(', ')})`)
    }
    const { name } = info.storePath
    if (req.name !== undefined && req.name !== name) {
      throw new HttpError(404, `${prefix}${req.hash} is named "${name}", not "${req.name}"`)
    }
    const base = `${prefix}${req.hash}-${name}`
    const tree = await treeFor(info)
    if (tree === undefined) return serveDirect(c, info, req.segments)
    const resolution = await resolveStorePath(tree.lookup, base, storeDir, req.segments)
    if (resolution.kind === 'missing') throw new HttpError(404, resolution.reason)
    if (resolution.kind === 'redirect') return redirect(c, resolution.location + url.search)
    const { node, segments } = resolution
    const here = '/' + encodePath([...base.split('/').filter(Boolean), ...segments])
    if (node.type === 'directory') {
      if (!req.trailingSlash) return redirect(c, `${here}/${url.search}`)
      const full = tree.source === undefined ? node : await completeDirectory(tree.source, segments)
      c.header('Content-Type', 'text/html; charset=utf-8')
      return c.req.method === 'HEAD' ? c.body(null) : c.body(renderListingPage({ base, segments, directory: full, info }))
    }
    if (node.type === 'symlink') throw new HttpError(404, 'unresolved symlink')
    if (req.trailingSlash) return redirect(c, here + url.search)
    return serveFile(c, info, segments, node, tree.source)
  }

  async function completeDirectory(source: NarSource, segments: readonly string[]): Promise<DirectoryNode> {
    const node = locate((await source.listing()).root, segments)
    if (node?.type !== 'directory') throw new HttpError(404, `${segments.join('/')} is not a directory`)
    return node
  }

  async function serveFile(c: Context, info: PathInfo, segments: readonly string[], listed: RegularNode, known: NarSource | undefined): Promise<Response> {
    const etag = fileEtag(info, segments)
    setFileHeaders(c, etag, listed)
    if (matchesEtag(c.req.header('if-none-match'), etag)) return c.body(null, 304)
    const byName = contentTypeByName(segments[segments.length - 1] ?? info.storePath.name)
    if (c.req.method === 'HEAD' && byName !== undefined) {
      c.header('Content-Type', byName)
      c.header('Content-Length', String(listed.size))
      return c.body(null)
    }
    const source = known ?? (await openSource(info))
    if (source === undefined) return serveDirect(c, info, segments)
    const node = await source.node(segments)
    if (node?.type !== 'regular' || node.narOffset === undefined) {
      throw new HttpError(502, `the NAR from ${info.upstream.name} disagrees with its listing at ${segments.join('/')}`)
    }
    setFileHeaders(c, etag, node)
    return respondWithBody(c, byName, node, () => source.read(node.narOffset!, node.narOffset! + node.size))
  }

  async function serveDirect(c: Context, info: PathInfo, segments: readonly string[]): Promise<Response> {
    log.warn('serving without the NAR cache', { storePath: info.narInfo.storePath, path: segments.join('/') })
    const direct = await openDirectFile(info, segments.join('/'), c.req.raw.signal)
    if (direct === undefined) {
      throw new HttpError(404, `no regular file at ${segments.join('/') || '/'} (listings need the NAR cache or an upstream .ls, and the cache is unavailable)`)
    }
    setFileHeaders(c, fileEtag(info, segments), direct.node)
    return respondWithBody(c, contentTypeByName(segments[segments.length - 1] ?? info.storePath.name), direct.node, () => direct.body)
  }

  async function respondWithBody(c: Context, byName: string | undefined, node: RegularNode, open: () => ReadableStream<Uint8Array>): Promise<Response> {
    let body = open()
    let type = byName
    if (type === undefined) {
      const peeked = await peekStream(body, Math.min(SNIFF_BYTES, node.size))
      type = contentTypeBySniffing(peeked.head)
      body = peeked.stream
    }
    c.header('Content-Type', type)
    c.header('Content-Length', String(node.size))
    if (c.req.method === 'HEAD') {
      await body.cancel()
      return c.body(null)
    }
    const outgoing = (c.env as { outgoing?: ServerResponse } | undefined)?.outgoing
    return c.body(abortOnError(body, outgoing, (err) => log.warn('response aborted', { path: c.req.path, error: err })))
  }
}

function setFileHeaders(c: Context, etag: string, node: RegularNode): void {
  c.header('ETag', etag)
  c.header('Cache-Control', IMMUTABLE)
  c.header('X-Content-Type-Options', 'nosniff')
  if (node.executable) c.header('NAR-Executable', '1')
}

function redirect(c: Context, location: string): Response {
  c.header('Cache-Control', IMMUTABLE)
  return c.redirect(location, 301)
}

/** Strong: the NarHash fixes every byte of the NAR, and the path picks the file in it. */
function fileEtag(info: PathInfo, segments: readonly string[]): string {
  const digest = createHash('sha256').update(formatHashNix32(info.narInfo.narHash)).update('\0').update(segments.join('/')).digest('base64url')
  return `"${digest.slice(0, 32)}"`
}

function matchesEtag(header: string | undefined, etag: string): boolean {
  if (header === undefined) return false
  return header.split(',').some((tag) => tag.trim().replace(/^W\//, '') === etag)
}
