/**
 * GET/HEAD `/nix/store/<hash>[-<name>][/<path>]` (and subdomain sites): parse the request, find
 * the store path, resolve the path inside it (store/file-source.ts says where its bytes come from),
 * then answer a file, listing or redirect.
 */
import { createHash } from 'node:crypto'
import type { Context } from 'hono'
import { formatHashNix32 } from '../formats/hash.js'
import type { ListingNode } from '../formats/listing.js'
import type { Logger } from '../log.js'
import {
  FileSources,
  type FileOutcome,
  type FileResolution,
  type RegularNode,
  type StoreTree,
} from '../store/file-source.js'
import type { HotFiles } from '../store/hot-files.js'
import type { NarStore } from '../store/nar-store.js'
import type { PathInfo, PathInfoLookup } from '../upstream/path-info-lookup.js'
import { isCompressible } from './compression.js'
import { contentTypeByName, contentTypeBySniffing, SNIFF_BYTES } from './content-type.js'
import { HttpError } from './errors.js'
import { renderFileView } from './file-view.js'
import { findAnswer } from './find-answer.js'
import { EXPORT_NEEDS_CACHE, type ExportRequest, exportResponse, parseExportQuery } from './export-response.js'
import {
  currentEtag,
  type FileResponseOptions,
  fileResponse,
  IMMUTABLE,
  matchesEtag,
  type StoreFile,
} from './file-response.js'
import type { HotResponses } from './hot-responses.js'
import { encodePath } from './html.js'
import { formatDirectoryJson, formatDirectoryText, negotiateListingFormat } from './listing-formats.js'
import { renderListingPage } from './listing-page.js'
import { generatedResponse } from './page-response.js'
import type { ReadBuffers } from './read-buffers.js'
import { noteRequest, requestNotes } from './request-log.js'
import { parseStoreRequest, requestPath, storeRequestRest, type StoreRequest } from './request-path.js'
import { resolveStorePath } from './resolve-path.js'

export interface StoreRouteDeps {
  readonly lookup: PathInfoLookup
  readonly store: NarStore
  readonly log: Logger
  readonly storeDir: string
  /** Subdomain mode: `<hash>.<domain>` serves that store path as a site root. */
  readonly domain: string | undefined
  /** Files kept in memory (shared by every store dir's routes: the keys are NarHashes). */
  readonly hotFiles: HotFiles<HotStoreFile>
  /** Where answers from hot files are kept for repeat requests. */
  readonly hotResponses?: HotResponses | undefined
  /** Where file bytes come from (made from the above when absent; given, its lease count can be watched). */
  readonly sources?: FileSources<HotStoreFile> | undefined
  /** What bodies read from disk read into (shared by every store dir's routes). */
  readonly readBuffers: ReadBuffers
}

/** A store file whose bytes are in memory. */
export type HotStoreFile = StoreFile & { readonly bytes: Uint8Array<ArrayBuffer> }

export interface StoreRoutes {
  /** `/nix/store/*` */
  readonly store: (c: Context) => Promise<Response>
  /** A request on `<hash>.<domain>`; `path` is the URL path. */
  readonly site: (c: Context, hash: string) => Promise<Response>
}

/** What every step of a request needs from the routes. */
interface Route {
  readonly lookup: PathInfoLookup
  readonly sources: FileSources<HotStoreFile>
  readonly log: Logger
  readonly storeDir: string
  readonly prefixSegments: readonly string[]
  readonly domain: string | undefined
  readonly hotResponses: HotResponses | undefined
  readonly readBuffers: ReadBuffers
}

/** One request for a store path that exists. */
interface Ask {
  readonly route: Route
  readonly c: Context
  readonly req: StoreRequest
  readonly info: PathInfo
  readonly view: View
  /** `?archive=` or `?nar`: a download of the node rather than the node itself. */
  readonly exported: ExportRequest | undefined
  /** `?view`: a file as a page (file-view.ts) rather than its bytes. */
  readonly viewing: boolean
}

/** How URLs look for this request: `/nix/store/<base>/…` or, on a subdomain, `/…`. */
interface View {
  readonly site: boolean
  /** The URL path of `segments` inside the store path. */
  url(segments: readonly string[]): string
  /** Rewrites a `/nix/store/…` location produced by symlink resolution. */
  location(storeLocation: string): string
}

/** A response, with what repeat requests may reuse of it. */
interface Answer {
  readonly response: Response
  /** The whole uncompressed content of a file from memory, sent in one write. */
  readonly reusable?: { readonly body: Uint8Array; readonly info: PathInfo }
}

type Contradicted = Extract<FileResolution, { kind: 'contradicted' }>
type DirectoryNode = Extract<ListingNode, { type: 'directory' }>

export function createStoreRoutes(deps: StoreRouteDeps): StoreRoutes {
  const route: Route = {
    lookup: deps.lookup,
    sources: deps.sources ?? storeFileSources(deps),
    log: deps.log,
    storeDir: deps.storeDir,
    prefixSegments: deps.storeDir.split('/').filter(Boolean),
    domain: deps.domain,
    hotResponses: deps.hotResponses,
    readBuffers: deps.readBuffers,
  }
  return {
    store: (c) =>
      remembering(route, c, 'store', () => {
        const req = parseStoreRequest(storeRequestRest(requestPath(c), route.storeDir))
        return answer(route, c, req, false)
      }),
    site: (c, hash) =>
      remembering(route, c, 'site', () => {
        const path = requestPath(c).replace(/^\/+/, '')
        return answer(route, c, parseStoreRequest(path === '' ? `${hash}/` : `${hash}/${path}`), true)
      }),
  }
}

/** The resolver the routes read files through, with the description hot files keep. */
export function storeFileSources(
  deps: Pick<StoreRouteDeps, 'store' | 'lookup' | 'hotFiles' | 'log'>,
): FileSources<HotStoreFile> {
  return new FileSources({
    store: deps.store,
    listings: deps.lookup,
    hotFiles: deps.hotFiles,
    log: deps.log,
    describe: hotStoreFile,
  })
}

/** Answers `c`; a file sent from memory is kept for the hot-response lane to repeat (hot-responses.ts). */
async function remembering(
  route: Route,
  c: Context,
  name: 'store' | 'site',
  respond: () => Promise<Answer>,
): Promise<Response> {
  const { response, reusable } = await respond()
  if (reusable !== undefined && route.hotResponses !== undefined) {
    const { body, info } = reusable
    const current = () => route.lookup.peek(info.storePath.hash) === info
    route.hotResponses.remember(c, response, body, { route: name, notes: requestNotes(c), current })
  }
  return response
}

/** A file in memory answers by the request's own path; anything else is resolved in the store path. */
async function answer(route: Route, c: Context, req: StoreRequest, site: boolean): Promise<Answer> {
  const exported = parseExportQuery(c)
  const viewing = c.req.query('view') !== undefined
  const info = await findInfo(route, req)
  const hot = exported === undefined && !viewing ? serveHot(route, c, req, info, site) : undefined
  if (hot !== undefined) return hot
  return serve({ route, c, req, info, view: site ? siteView(route, info) : storeView(route, info), exported, viewing })
}

async function findInfo(route: Route, req: StoreRequest): Promise<PathInfo> {
  const { lookup, storeDir } = route
  const info = await lookup.find(req.hash)
  if (info === undefined) {
    const upstreams = lookup.upstreams.map((u) => u.name).join(', ')
    throw new HttpError(404, `${storeDir}/${req.hash} is not in any upstream (${upstreams})`)
  }
  if (req.name !== undefined && req.name !== info.storePath.name) {
    throw new HttpError(404, `${storeDir}/${req.hash} is named "${info.storePath.name}", not "${req.name}"`)
  }
  return info
}

/** A file in memory: exactly the answers serveFile gives, without resolving or reading anything. */
function serveHot(route: Route, c: Context, req: StoreRequest, info: PathInfo, site: boolean): Answer | undefined {
  const hot = req.trailingSlash ? undefined : route.sources.inMemory(info, req.segments)
  if (hot === undefined) return undefined
  noteRequest(c, { cache: 'hit', upstream: info.upstream.name, verification: 'verified' })
  if (matchesEtag(c.req.header('if-none-match'), hot.etag))
    return { response: notModified(c, hot.etag, hot.name, hot.size) }
  const response = fileResponse(c, hot, responseOptions(route, site))
  return { response, reusable: { body: hot.bytes, info } }
}

/** Resolves in the cached NAR, the `.ls` or the NAR downloading; the NAR wins when the `.ls` lies. */
async function serve(ask: Ask): Promise<Answer> {
  const { route, c, info } = ask
  noteRequest(c, { cache: route.sources.cached(info) ? 'hit' : 'miss', upstream: info.upstream.name })
  let tree = await route.sources.tree(info)
  // Runs at most twice: only a `.ls` is ever contradicted, and then this request and the next
  // ones are answered from the NAR alone.
  for (;;) {
    const outcome = await answerIn(ask, tree)
    if (!('reason' in outcome)) return outcome
    tree = await route.sources.narTree(info, outcome.reason)
  }
}

/** Without a tree (the cache directory cannot take the NAR) the file streams from the upstream. */
async function answerIn(ask: Ask, tree: StoreTree | undefined): Promise<Answer | Contradicted> {
  if (tree === undefined && ask.exported !== undefined) throw new HttpError(503, EXPORT_NEEDS_CACHE)
  if (tree === undefined) return serveDirect(ask)
  try {
    return await answerFromTree(ask, tree)
  } finally {
    tree.release()
  }
}

async function answerFromTree(ask: Ask, tree: StoreTree): Promise<Answer | Contradicted> {
  const { c, req, view } = ask
  const resolution = await resolveStorePath(
    (s) => tree.node(s),
    storeBase(ask),
    ask.route.storeDir,
    req.segments,
    tree.indexed,
  )
  if (resolution.kind === 'missing') throw new HttpError(404, resolution.reason)
  if (resolution.kind === 'redirect')
    return redirect(c, view.location(resolution.location) + querySuffix(c), tree.settled)
  const { node, segments } = resolution
  // With or without a trailing slash: `curl …?nar | nix-store --restore` needs no redirect.
  if (ask.exported !== undefined && node.type !== 'symlink') return serveExport(ask, ask.exported, segments, node.type)
  if (node.type === 'directory') return serveDirectory(ask, tree, segments, node)
  if (node.type === 'symlink') throw new HttpError(404, 'unresolved symlink')
  if (req.trailingSlash) return redirect(c, view.url(segments) + querySuffix(c), tree.settled)
  if (ask.viewing) return serveView(ask, tree, segments, node)
  return serveFile(ask, tree, segments, node, req.segments)
}

async function serveDirectory(
  ask: Ask,
  tree: StoreTree,
  segments: readonly string[],
  node: DirectoryNode,
): Promise<Answer | Contradicted> {
  const { c, req, view } = ask
  if (!req.trailingSlash) return redirect(c, view.url(segments) + '/' + querySuffix(c), tree.settled)
  // A search is of the directory, even on a site whose directory has an index.html.
  if (view.site && c.req.query('find') === undefined) {
    const indexSegments = [...segments, 'index.html']
    const index = await tree.node(indexSegments)
    if (index?.type === 'regular') return serveFile(ask, tree, indexSegments, index)
  }
  const directory = await tree.directory(segments, node)
  if (directory === undefined) throw new HttpError(404, `${segments.join('/')} is not a directory`)
  return { response: await listingResponse(ask, tree, segments, directory) }
}

/**
 * `listed`: the node as `tree` has it (from a `.ls`, a hint the store checks against the NAR).
 * `hotKey`: the request's own segments when they name this file.
 */
async function serveFile(
  ask: Ask,
  tree: StoreTree,
  segments: readonly string[],
  listed: RegularNode,
  hotKey?: readonly string[],
): Promise<Answer | Contradicted> {
  const { c, info } = ask
  const name = fileName(info, segments)
  const etag = fileEtag(info, segments)
  const byName = contentTypeByName(name)
  // Both are answerable from the listing alone, without a NAR byte.
  if (matchesEtag(c.req.header('if-none-match'), etag)) return { response: notModified(c, etag, name, listed.size) }
  if (c.req.method === 'HEAD' && byName !== undefined) {
    const { size, executable } = listed
    const file = { name, etag, size, executable, contentType: byName, openRange: noBody, openWhole: noBody }
    return { response: fileResponse(c, file, responseOptions(ask.route, ask.view.site)) }
  }
  const found = await ask.route.sources.file(info, tree, {
    segments,
    listed,
    headBytes: byName === undefined ? SNIFF_BYTES : 0,
    body: c.req.method !== 'HEAD',
    hotKey,
    signal: () => c.req.raw.signal,
  })
  if (found.kind === 'contradicted') return found
  return respondFile(ask, segments, found)
}

async function serveExport(
  ask: Ask,
  want: ExportRequest,
  segments: readonly string[],
  resolvedType: 'regular' | 'directory',
): Promise<Answer | Contradicted> {
  const { route, c, info } = ask
  const { sources, log } = route
  noteRequest(c, { verification: 'verified' })
  const outcome = await exportResponse({ c, sources, info, segments, resolvedType, want, log })
  return outcome instanceof Response ? { response: outcome } : outcome
}

/** The no-disk fallback, for the request's own path: only a regular file can be streamed so. */
async function serveDirect(ask: Ask): Promise<Answer> {
  const { c, info, req } = ask
  noteRequest(c, { cache: 'bypass' })
  const found = await ask.route.sources.direct(info, {
    segments: req.segments,
    headBytes: contentTypeByName(fileName(info, req.segments)) === undefined ? SNIFF_BYTES : 0,
    body: c.req.method !== 'HEAD',
    signal: () => c.req.raw.signal,
  })
  return respondFile(ask, req.segments, found)
}

/** `?view`: the file's first MiB as an HTML page (file-view.ts). */
async function serveView(
  ask: Ask,
  tree: StoreTree,
  segments: readonly string[],
  listed: RegularNode,
): Promise<Answer | Contradicted> {
  const { c, info } = ask
  // HEAD too reads the file: the page's length depends on it.
  const want = { segments, listed, headBytes: 0, body: true, signal: () => c.req.raw.signal }
  const found = await ask.route.sources.file(info, tree, want)
  if (found.kind === 'contradicted') return found
  if (found.kind === 'missing') throw new HttpError(found.from === 'nar' ? 502 : 503, found.reason)
  noteRequest(c, { verification: found.source.verification })
  const page = await renderFileView(found.source, { base: storeBase(ask), segments })
  return { response: generatedResponse(c, 'text/html; charset=utf-8', page, 'Accept-Encoding') }
}

/** How this route's file answers are made: subdomain sites need no sandbox. */
function responseOptions(route: Route, site: boolean): FileResponseOptions {
  return { sandbox: !site, log: route.log, readBuffers: route.readBuffers }
}

function respondFile(ask: Ask, segments: readonly string[], found: FileOutcome): Answer {
  if (found.kind === 'missing') throw new HttpError(found.from === 'nar' ? 502 : 503, found.reason)
  const { c, info } = ask
  const { source } = found
  // Range and no-disk answers go around the NAR cache.
  if (source.from !== 'nar') noteRequest(c, { cache: 'bypass' })
  noteRequest(c, { verification: source.verification })
  const name = fileName(info, segments)
  const file: StoreFile = {
    ...(source.bytes === undefined ? {} : { bytes: source.bytes }),
    name,
    etag: fileEtag(info, segments),
    size: source.size,
    executable: source.executable,
    contentType: contentTypeByName(name) ?? contentTypeBySniffing(source.head),
    openRange: source.openRange,
    openWhole: source.openWhole,
    openReader: source.openReader,
  }
  try {
    return { response: fileResponse(c, file, responseOptions(ask.route, ask.view.site)) }
  } finally {
    source.release()
  }
}

async function listingResponse(
  ask: Ask,
  tree: StoreTree,
  segments: readonly string[],
  directory: DirectoryNode,
): Promise<Response> {
  const { c, info, view } = ask
  const format = negotiateListingFormat(
    c.req.header('accept'),
    c.req.header('user-agent'),
    c.req.query('json') !== undefined,
  )
  const base = storeBase(ask)
  const find = c.req.query('find')
  const [type, body] =
    find !== undefined
      ? findAnswer(format, { base, segments, directory, text: find })
      : format === 'html'
        ? [
            'text/html; charset=utf-8',
            renderListingPage({
              base,
              segments,
              directory,
              info,
              storeHref: view.location,
              symlinkHrefs: await symlinkHrefs(ask, tree, segments, directory),
            }),
          ]
        : format === 'json'
          ? ['application/json', formatDirectoryJson(directory)]
          : ['text/plain; charset=utf-8', formatDirectoryText(directory)]
  return generatedResponse(c, type, body, 'Accept, Accept-Encoding, User-Agent')
}

/**
 * Where each symlink of `directory` ends, resolved as a request for it would be: a link to the
 * end of its chain (with a slash for a directory, so that mirroring tools see the directory they
 * already list), none for a dangling, looping or escaping one.
 */
async function symlinkHrefs(
  ask: Ask,
  tree: StoreTree,
  segments: readonly string[],
  directory: DirectoryNode,
): Promise<Map<string, string>> {
  const hrefs = new Map<string, string>()
  for (const [name, node] of directory.entries) {
    if (node.type !== 'symlink') continue
    const resolution = await resolveStorePath((s) => tree.node(s), storeBase(ask), ask.route.storeDir, [
      ...segments,
      name,
    ])
    if (resolution.kind === 'redirect') hrefs.set(name, ask.view.location(resolution.location))
  }
  return hrefs
}

function storeView(route: Route, info: PathInfo): View {
  const base = [...route.prefixSegments, `${info.storePath.hash}-${info.storePath.name}`]
  return { site: false, url: (segments) => '/' + encodePath([...base, ...segments]), location: (l) => l }
}

function siteView(route: Route, info: PathInfo): View {
  // Locations arrive percent-encoded (`lib%2Bplus` for `lib+plus`): compare in that form.
  const own = '/' + encodePath([...route.prefixSegments, `${info.storePath.hash}-${info.storePath.name}`])
  return {
    site: true,
    url: (segments) => '/' + encodePath(segments),
    location: (l) => {
      if (l === own || l.startsWith(own + '/')) return l.slice(own.length) || '/'
      const other = /^\/nix\/store\/([0-9a-z]{32})[^/]*(\/.*)?$/.exec(l)
      return other !== null && route.domain !== undefined ? `//${other[1]}.${route.domain}${other[2] ?? '/'}` : l
    },
  }
}

/** `/nix/store/<hash>-<name>` */
function storeBase(ask: Ask): string {
  return `${ask.route.storeDir}/${ask.info.storePath.hash}-${ask.info.storePath.name}`
}

function fileName(info: PathInfo, segments: readonly string[]): string {
  return segments[segments.length - 1] ?? info.storePath.name
}

/** What hot files keep: the file's response description with its bytes (see HotFiles). */
function hotStoreFile(
  info: PathInfo,
  segments: readonly string[],
  node: RegularNode,
  bytes: Uint8Array<ArrayBuffer>,
): HotStoreFile {
  const name = fileName(info, segments)
  return {
    name,
    etag: fileEtag(info, segments),
    size: node.size,
    executable: node.executable,
    contentType: contentTypeByName(name) ?? contentTypeBySniffing(bytes.subarray(0, SNIFF_BYTES)),
    bytes,
    openRange: inMemory,
    openWhole: inMemory,
  }
}

/** `?query` of the request, for redirects (parsed only then). */
function querySuffix(c: Context): string {
  return new URL(c.req.url).search
}

/** fileResponse never opens a stream for a file whose bytes it has. */
function inMemory(): never {
  throw new Error('the bytes are in memory')
}

/** fileResponse never opens a stream for a HEAD. */
function noBody(): never {
  throw new Error('HEAD has no body')
}

/**
 * The answer to a matching If-None-Match, the same whether the file is hot or not: decided by the
 * file's name, since a cold file's type may be known only from its bytes. A file that may be sent
 * compressed varies like its 200 would (varying costs nothing when it turns out not to be), and
 * carries the tag its 200 would (see currentEtag). That 200 is taken to honour a Range: only the
 * no-disk fallback (serveDirect, when the cache directory fails) cannot, and would compress instead.
 */
function notModified(c: Context, etag: string, name: string, size: number): Response {
  const byName = contentTypeByName(name)
  c.header('ETag', currentEtag(c, etag, size, byName, true))
  c.header('Cache-Control', IMMUTABLE)
  if (byName === undefined || isCompressible(byName)) c.header('Vary', 'Accept-Encoding')
  return c.body(null, 304)
}

/** `settled`: read from a verified NAR, so the redirect holds for as long as the store path. */
function redirect(c: Context, location: string, settled: boolean): Answer {
  c.header('Cache-Control', settled ? IMMUTABLE : UNSETTLED)
  return { response: c.redirect(location, 301) }
}

/** For what unverified data says (a `.ls`, a NAR not verified yet): good for a minute, like a negative answer. */
const UNSETTLED = 'public, max-age=60'

/** Strong: the NarHash fixes every byte of the NAR, and the path picks the file in it. */
function fileEtag(info: PathInfo, segments: readonly string[]): string {
  const digest = createHash('sha256')
    .update(formatHashNix32(info.narInfo.narHash))
    .update('\0')
    .update(segments.join('/'))
    .digest('base64url')
  return `"${digest.slice(0, 32)}"`
}
