/** GET/HEAD `/nix/store/<hash>[-<name>][/<path>]` (and subdomain sites): resolve the path, then answer a file, listing or redirect. */
import { createHash } from 'node:crypto'
import { Readable } from 'node:stream'
import type { Context } from 'hono'
import { formatHashNix32 } from '../formats/hash.js'
import { locate, type ListingNode } from '../formats/listing.js'
import type { Logger } from '../log.js'
import { DiskError } from '../store/nar-errors.js'
import type { NarLease, NarSource } from '../store/nar-source.js'
import type { NarStore } from '../store/nar-store.js'
import { openDirectFile } from '../store/direct-file-stream.js'
import type { HotFiles } from '../store/hot-files.js'
import type { HotResponses, SharedAnswer } from './hot-responses.js'
import { noteRequest, requestNotes } from './request-log.js'
import {
  openRangedFile,
  probeRangedFile,
  RangeMismatchError,
  type FetchRange,
  type RangedNode,
} from '../store/ranged-file.js'
import { UpstreamError, type Upstream } from '../upstream/upstream.js'
import type { PathInfo, PathInfoLookup } from '../upstream/path-info-lookup.js'
import { chooseEncoding, compressBuffer, isCompressible } from './compression.js'
import { contentTypeByName, contentTypeBySniffing, SNIFF_BYTES } from './content-type.js'
import { HttpError } from './errors.js'
import { currentEtag, fileResponse, IMMUTABLE, matchesEtag, type StoreFile } from './file-response.js'
import { encodePath, OWN_PAGES_CSP } from './html.js'
import { formatDirectoryJson, formatDirectoryText, negotiateListingFormat } from './listing-formats.js'
import { renderListingPage } from './listing-page.js'
import { peekStream } from './peek-stream.js'
import { parseStoreRequest, requestPath, storeRequestRest, type StoreRequest } from './request-path.js'
import { resolveStorePath, type NodeLookup } from './resolve-path.js'
import { outgoingOf, whenResponseEnds } from './node-env.js'

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
  readonly hotResponses?: HotResponses
}

/** A store file whose bytes are in memory. */
export type HotStoreFile = StoreFile & { readonly bytes: Uint8Array<ArrayBuffer> }

type RegularNode = Extract<ListingNode, { type: 'regular' }>
type DirectoryNode = Extract<ListingNode, { type: 'directory' }>

/** Where nodes come from for one request: the cached NAR, the upstream `.ls`, or the NAR itself. */
interface Tree {
  readonly lookup: NodeLookup
  /** Present when the NAR is cached or being downloaded for this request. */
  readonly source: NarSource | undefined
}

/** How URLs look for this request: `/nix/store/<base>/…` or, on a subdomain, `/…`. */
interface View {
  readonly site: boolean
  /** The URL path of `segments` inside the store path. */
  url(segments: readonly string[]): string
  /** Rewrites a `/nix/store/…` location produced by symlink resolution. */
  location(storeLocation: string): string
}

export interface StoreRoutes {
  /** `/nix/store/*` */
  readonly store: (c: Context) => Promise<Response>
  /** A request on `<hash>.<domain>`; `path` is the URL path. */
  readonly site: (c: Context, hash: string) => Promise<Response>
}

export function createStoreRoutes(deps: StoreRouteDeps): StoreRoutes {
  const { lookup, store, log, storeDir, domain, hotFiles, hotResponses } = deps
  /**
   * Requests that lead identical ones (see `leading`), with the whole body of the small file each
   * was answered with, once it is (null until then): only a leader's answer is worth keeping.
   */
  const shareable = new WeakMap<Context, Omit<SharedAnswer, 'response'> | null>()
  const prefix = `${storeDir}/`
  const prefixSegments = storeDir.split('/').filter(Boolean)
  /** Upstreams that answered a Range request with the whole object. */
  const rangeless = new WeakSet<Upstream>()

  /** The cached or downloading NAR, held until the response has closed; undefined when the cache directory cannot take it. */
  async function openSource(c: Context, info: PathInfo): Promise<NarSource | undefined> {
    let lease: NarLease
    try {
      lease = await store.open(info)
    } catch (err) {
      if (err instanceof DiskError) return undefined
      throw err
    }
    const outgoing = outgoingOf(c)
    if (outgoing === undefined) lease.release()
    else whenResponseEnds(outgoing, lease.release)
    return lease.source
  }

  async function treeFor(c: Context, info: PathInfo): Promise<Tree | undefined> {
    if (store.has(info)) {
      const source = await openSource(c, info)
      if (source !== undefined) return { lookup: (s) => source.node(s), source }
    }
    const listing = await lookup.listing(info)
    if (listing !== undefined) return { lookup: async (s) => locate(listing.root, s), source: undefined }
    const source = await openSource(c, info)
    return source === undefined ? undefined : { lookup: (s) => source.node(s), source }
  }

  async function findInfo(req: StoreRequest): Promise<PathInfo> {
    const info = await lookup.find(req.hash)
    if (info === undefined) {
      throw new HttpError(
        404,
        `${prefix}${req.hash} is not in any upstream (${lookup.upstreams.map((u) => u.name).join(', ')})`,
      )
    }
    if (req.name !== undefined && req.name !== info.storePath.name) {
      throw new HttpError(404, `${prefix}${req.hash} is named "${info.storePath.name}", not "${req.name}"`)
    }
    return info
  }

  /** `given`: the tree to resolve in (the NAR, after its upstream's `.ls` was caught lying). */
  async function serve(c: Context, req: StoreRequest, info: PathInfo, view: View, given?: Tree): Promise<Response> {
    const base = `${prefix}${info.storePath.hash}-${info.storePath.name}`
    noteRequest(c, { cache: store.has(info) ? 'hit' : 'miss', upstream: info.upstream.name })
    const tree = given ?? (await treeFor(c, info))
    if (tree === undefined) return serveDirect(c, info, req.segments, view)
    try {
      const resolution = await resolveStorePath(tree.lookup, base, storeDir, req.segments)
      if (resolution.kind === 'missing') throw new HttpError(404, resolution.reason)
      // Read from data not verified yet (the `.ls`, a NAR still arriving): not for a year.
      const settled = tree.source?.verified === true
      if (resolution.kind === 'redirect')
        return redirect(c, view.location(resolution.location) + querySuffix(c), settled)
      const { node, segments } = resolution
      if (node.type === 'directory') {
        if (!req.trailingSlash) return redirect(c, view.url(segments) + '/' + querySuffix(c), settled)
        if (view.site) {
          const index = await tree.lookup([...segments, 'index.html'])
          if (index?.type === 'regular') return await serveFile(c, info, [...segments, 'index.html'], index, tree, view)
        }
        const directory = tree.source === undefined ? node : await completeDirectory(tree.source, segments)
        return await listingResponse(c, info, base, segments, directory, tree, view)
      }
      if (node.type === 'symlink') throw new HttpError(404, 'unresolved symlink')
      if (req.trailingSlash) return redirect(c, view.url(segments) + querySuffix(c), settled)
      return await serveFile(c, info, segments, node, tree, view, req.segments)
    } catch (err) {
      if (!(err instanceof ListingMismatch) || tree.source !== undefined) throw err
      // The NAR wins: this request and the next ones are answered from it alone.
      lookup.distrustListing(info, err.message)
      const source = await openSource(c, info)
      if (source === undefined) return serveDirect(c, info, req.segments, view)
      return serve(c, req, info, view, { lookup: (s) => source.node(s), source })
    }
  }

  async function listingResponse(
    c: Context,
    info: PathInfo,
    base: string,
    segments: readonly string[],
    directory: DirectoryNode,
    tree: Tree,
    view: View,
  ): Promise<Response> {
    const format = negotiateListingFormat(
      c.req.header('accept'),
      c.req.header('user-agent'),
      c.req.query('json') !== undefined,
    )
    const [type, body] =
      format === 'html'
        ? [
            'text/html; charset=utf-8',
            renderListingPage({
              base,
              segments,
              directory,
              info,
              storeHref: view.location,
              symlinkHrefs: await symlinkHrefs(tree, base, segments, directory, view),
            }),
          ]
        : format === 'json'
          ? ['application/json', formatDirectoryJson(directory)]
          : ['text/plain; charset=utf-8', formatDirectoryText(directory)]
    c.header('Content-Type', type)
    if (format === 'html') c.header('Content-Security-Policy', OWN_PAGES_CSP)
    const bytes = Buffer.from(body)
    const encoding = chooseEncoding(c.req.header('accept-encoding'), bytes.length, true)
    c.header('Vary', 'Accept, Accept-Encoding, User-Agent')
    if (encoding !== undefined) c.header('Content-Encoding', encoding)
    const payload =
      encoding === undefined
        ? (new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength) as Uint8Array<ArrayBuffer>)
        : compressBuffer(bytes, encoding)
    c.header('Content-Length', String(payload.byteLength))
    return c.req.method === 'HEAD' ? c.body(null) : c.body(payload)
  }

  /**
   * Where each symlink of `directory` ends, resolved as a request for it would be: a link to the
   * end of its chain (with a slash for a directory, so that mirroring tools see the directory they
   * already list), none for a dangling, looping or escaping one.
   */
  async function symlinkHrefs(
    tree: Tree,
    base: string,
    segments: readonly string[],
    directory: DirectoryNode,
    view: View,
  ): Promise<Map<string, string>> {
    const hrefs = new Map<string, string>()
    for (const [name, node] of directory.entries) {
      if (node.type !== 'symlink') continue
      const resolution = await resolveStorePath(tree.lookup, base, storeDir, [...segments, name])
      if (resolution.kind === 'redirect') hrefs.set(name, view.location(resolution.location))
    }
    return hrefs
  }

  async function completeDirectory(source: NarSource, segments: readonly string[]): Promise<DirectoryNode> {
    const node = locate((await source.listing()).root, segments)
    if (node?.type !== 'directory') throw new HttpError(404, `${segments.join('/')} is not a directory`)
    return node
  }

  /** A file of `hotFiles`: exactly the answers serveFile gives, without resolving or reading anything. */
  function serveHot(c: Context, req: StoreRequest, info: PathInfo, site: boolean): Response | undefined {
    const hot = req.trailingSlash ? undefined : hotFiles.get(info.narInfo, req.segments)
    if (hot === undefined) return undefined
    const notes = { cache: 'hit', upstream: info.upstream.name, verification: 'verified' } as const
    noteRequest(c, notes)
    if (matchesEtag(c.req.header('if-none-match'), hot.etag)) return notModified(c, hot.etag, hot.name, hot.size)
    const response = fileResponse(c, hot, { sandbox: !site, log })
    const answer = {
      body: hot.bytes,
      route: site ? 'site' : 'store',
      notes,
      current: () => lookup.peek(info.storePath.hash) === info,
    } as const
    hotResponses?.remember(c, response, hot.bytes, answer)
    if (shareable.has(c)) shareable.set(c, answer)
    return response
  }

  /**
   * `listed`: the node as `tree` has it (from the upstream's `.ls` when tree.source is undefined:
   * a hint, whose every claim the NAR's own node must confirm). `requested`: the request's own
   * segments when they name this file (the key of `hotFiles`).
   */
  async function serveFile(
    c: Context,
    info: PathInfo,
    segments: readonly string[],
    listed: RegularNode,
    tree: Tree,
    view: View,
    requested?: readonly string[],
  ): Promise<Response> {
    const name = segments[segments.length - 1] ?? info.storePath.name
    const etag = fileEtag(info, segments)
    const byName = contentTypeByName(name)
    const base = { name, etag, size: listed.size, executable: listed.executable }
    // Both are answerable from the listing alone, without a NAR byte.
    if (matchesEtag(c.req.header('if-none-match'), etag)) return notModified(c, etag, name, listed.size)
    if (c.req.method === 'HEAD' && byName !== undefined) {
      const noBody = (): never => {
        throw new Error('HEAD has no body')
      }
      return fileResponse(
        c,
        { ...base, contentType: byName, openRange: noBody, openWhole: noBody },
        { sandbox: !view.site, log },
      )
    }
    if (tree.source === undefined && listed.narOffset !== undefined && rangedFetchFits(info)) {
      const ranged = await serveRanged(
        c,
        info,
        { ...listed, narOffset: listed.narOffset },
        segments.length === 0 ? undefined : name,
        base,
        byName,
        view,
      )
      if (ranged !== undefined) return ranged
    }
    const source = tree.source ?? (await openSource(c, info))
    if (source === undefined) return serveDirect(c, info, segments, view)
    const node = await source.node(segments, listed.narOffset)
    if (node?.type !== 'regular' || node.narOffset === undefined) {
      if (tree.source === undefined)
        throw new ListingMismatch(
          `the listing has a regular file at ${display(segments)}, the NAR ${node === undefined ? 'nothing' : `a ${node.type}`}`,
        )
      throw new HttpError(502, `the NAR from ${info.upstream.name} has no regular file at ${display(segments)}`)
    }
    if (tree.source === undefined && (node.size !== listed.size || node.executable !== listed.executable)) {
      throw new ListingMismatch(
        `the listing says ${display(segments)} is ${describeFile(listed)}, the NAR ${describeFile(node)}`,
      )
    }
    const offset = node.narOffset
    noteRequest(c, { verification: source.verified ? 'verified' : source.holdsBack ? 'held' : 'unverified' })
    // Strict verification of a NAR still arriving: the file is streamed, its last byte held back
    // until the NAR is verified, rather than read whole and sent in one write.
    const bytes =
      c.req.method !== 'HEAD' && node.size <= SMALL_FILE_BYTES && !source.holdsBack
        ? await source.readBytes(offset, offset + node.size)
        : undefined
    const contentType =
      byName ??
      contentTypeBySniffing(
        bytes?.subarray(0, SNIFF_BYTES) ?? (await source.readBytes(offset, offset + Math.min(SNIFF_BYTES, node.size))),
      )
    // Checked after the read: bytes of a NAR verified by then are verified bytes.
    const keep = (kept: Uint8Array<ArrayBuffer>) =>
      hotFiles.set(info.narInfo, requested!, {
        name,
        etag,
        size: node.size,
        executable: node.executable,
        contentType,
        bytes: kept,
        openRange: inMemory,
        openWhole: inMemory,
      })
    if (bytes !== undefined && requested !== undefined && source.verified) keep(bytes)
    if (
      bytes === undefined &&
      requested !== undefined &&
      source.verified &&
      c.req.method === 'GET' &&
      hotFiles.admit(info.narInfo, requested, node.size)
    ) {
      // A bigger file asked for again is read into memory beside this response, for the next ones:
      // Node has no sendfile, and a read per chunk costs a third of the throughput (bench/ row 7).
      source.readBytes(offset, offset + node.size).then(keep, (err: Error) => {
        hotFiles.abandon(info.narInfo, requested)
        log.debug('could not keep a hot file in memory', {
          storePath: info.narInfo.storePath,
          path: segments.join('/'),
          error: err,
        })
      })
    }
    // An empty file has no byte to hold back: its answer waits for the verification instead.
    if (node.size === 0 && source.holdsBack && c.req.method !== 'HEAD') await source.verification()
    const file: StoreFile = {
      ...(bytes === undefined ? {} : { bytes }),
      ...base,
      size: node.size,
      executable: node.executable,
      contentType,
      openRange: (start, end) => source.read(offset + start, offset + end),
      openWhole: () => source.read(offset, offset + node.size),
    }
    const response = fileResponse(c, file, { sandbox: !view.site, log })
    if (bytes !== undefined && shareable.has(c)) {
      shareable.set(c, {
        body: bytes,
        route: view.site ? 'site' : 'store',
        notes: requestNotes(c),
        current: () => lookup.peek(info.storePath.hash) === info,
      })
    }
    return response
  }

  /** An uncompressed NAR too big to keep, not cached and not being downloaded, on an upstream that honours Range. */
  function rangedFetchFits(info: PathInfo): boolean {
    // Bytes by range are never verified against NarHash: `stream` mode only.
    return (
      store.verify === 'stream' &&
      info.narInfo.compression === 'none' &&
      !rangeless.has(info.upstream) &&
      !store.keeps(info) &&
      !store.has(info) &&
      !store.downloading(info)
    )
  }

  /**
   * Fetches only this file's bytes from the upstream (Range); no peer does this. Undefined when the
   * upstream ignores Range or the listing's offset does not match the NAR: the caller then streams the NAR.
   */
  async function serveRanged(
    c: Context,
    info: PathInfo,
    node: RangedNode,
    name: string | undefined,
    base: Omit<StoreFile, 'contentType' | 'openRange' | 'openWhole'>,
    byName: string | undefined,
    view: View,
  ): Promise<Response | undefined> {
    const fetchRange: FetchRange = async (start, end, signal) => {
      const res = await info.upstream.get(info.narKey, signal, { start, end })
      if (res === undefined) throw new UpstreamError(info.upstream.name, 'bad-status', `NAR ${info.narKey} is missing`)
      if (res.partial !== true) {
        res.body.destroy()
        rangeless.add(info.upstream)
        throw new RangeMismatchError(`${info.upstream.name} does not answer Range requests`)
      }
      return res.body
    }
    let head: Buffer
    try {
      head = await probeRangedFile(node, name, byName === undefined ? SNIFF_BYTES : 0, fetchRange)
    } catch (err) {
      if (!(err instanceof RangeMismatchError)) throw err
      if (rangeless.has(info.upstream))
        log.warn('cannot fetch a file by range; streaming the NAR', {
          upstream: info.upstream.name,
          storePath: info.narInfo.storePath,
          error: err,
        })
      else lookup.distrustListing(info, err.message)
      return undefined
    }
    noteRequest(c, { cache: 'bypass', verification: 'unverified' })
    const open = (start: number, end: number) =>
      Readable.toWeb(openRangedFile(node, start, end, fetchRange)) as ReadableStream<Uint8Array>
    const file: StoreFile = {
      ...base,
      contentType: byName ?? contentTypeBySniffing(head),
      openRange: open,
      openWhole: () => open(0, node.size),
    }
    return fileResponse(c, file, { sandbox: !view.site, log })
  }

  async function serveDirect(c: Context, info: PathInfo, segments: readonly string[], view: View): Promise<Response> {
    log.warn('serving without the NAR cache', { storePath: info.narInfo.storePath, path: segments.join('/') })
    const verify = store.verify === 'strict'
    noteRequest(c, { cache: 'bypass', verification: verify ? 'held' : 'unverified' })
    const direct = await openDirectFile(info, segments.join('/'), { signal: c.req.raw.signal, verify })
    if (direct === undefined) {
      throw new HttpError(
        503,
        `cannot serve ${segments.join('/') || '/'} while the NAR cache is unavailable (only regular files can be streamed without it)`,
      )
    }
    const name = segments[segments.length - 1] ?? info.storePath.name
    let body = direct.body
    // No byte to hold back: the (empty) answer waits for the NAR's verification itself.
    if (verify && direct.node.size === 0) await body.pipeTo(new WritableStream())
    let contentType = contentTypeByName(name)
    if (contentType === undefined) {
      const peeked = await peekStream(body, Math.min(SNIFF_BYTES, direct.node.size))
      contentType = contentTypeBySniffing(peeked.head)
      body = peeked.stream
    }
    const file: StoreFile = {
      name,
      size: direct.node.size,
      executable: direct.node.executable,
      etag: fileEtag(info, segments),
      contentType,
      openRange: undefined,
      openWhole: () => body,
    }
    const res = fileResponse(c, file, { sandbox: !view.site, log })
    if (c.req.method === 'HEAD' || res.status === 304) await body.cancel()
    return res
  }

  /**
   * Answers `c` as the first of identical GETs (hot-responses.ts), when it is: those arriving
   * meanwhile get its bytes if it is a small file (see `shareable`), else each goes to the router
   * (the first of them leading the rest).
   */
  async function leading(c: Context, route: 'store' | 'site', answer: () => Promise<Response>): Promise<Response> {
    const lead = hotResponses?.lead(c, route)
    if (lead === undefined) return answer()
    // Its client may leave before the answer: the others then go on by themselves, each holding
    // the NAR it waits for (a NAR too big to keep is abandoned when nobody does).
    const outgoing = outgoingOf(c)
    if (outgoing !== undefined) whenResponseEnds(outgoing, () => lead.settle())
    shareable.set(c, null)
    try {
      const response = await answer()
      const shared = shareable.get(c)
      lead.settle(shared == null ? undefined : { ...shared, response })
      return response
    } finally {
      lead.settle() // an error: each follower gets its own answer from the app
    }
  }

  return {
    store: (c) =>
      leading(c, 'store', async () => {
        const req = parseStoreRequest(storeRequestRest(requestPath(c), storeDir))
        const info = await findInfo(req)
        const hot = serveHot(c, req, info, false)
        if (hot !== undefined) return hot
        const base = [...prefixSegments, `${info.storePath.hash}-${info.storePath.name}`]
        return serve(c, req, info, {
          site: false,
          url: (segments) => '/' + encodePath([...base, ...segments]),
          location: (l) => l,
        })
      }),
    site: (c, hash) =>
      leading(c, 'site', async () => {
        const path = requestPath(c).replace(/^\/+/, '')
        const req = parseStoreRequest(path === '' ? `${hash}/` : `${hash}/${path}`)
        const info = await findInfo(req)
        const hot = serveHot(c, req, info, true)
        if (hot !== undefined) return hot
        // Locations arrive percent-encoded (`lib%2Bplus` for `lib+plus`): compare in that form.
        const own = '/' + encodePath([...prefixSegments, `${info.storePath.hash}-${info.storePath.name}`])
        return serve(c, req, info, {
          site: true,
          url: (segments) => '/' + encodePath(segments),
          location: (l) => {
            if (l === own || l.startsWith(own + '/')) return l.slice(own.length) || '/'
            const other = /^\/nix\/store\/([0-9a-z]{32})[^/]*(\/.*)?$/.exec(l)
            return other !== null && domain !== undefined ? `//${other[1]}.${domain}${other[2] ?? '/'}` : l
          },
        })
      }),
  }
}

/**
 * Files up to this size are read whole and sent in one write (headers and body together): no
 * stream machinery per response (bench/ row 8d: 200 responses of a 254 KiB file). One streamed
 * read (READ_MAX_BYTES) holds more, so no response holds more memory than a stream would.
 */
const SMALL_FILE_BYTES = 256 * 1024

/** `?query` of the request, for redirects (parsed only then). */
function querySuffix(c: Context): string {
  return new URL(c.req.url).search
}

/** fileResponse never opens a stream for a file whose bytes it has. */
function inMemory(): never {
  throw new Error('the bytes are in memory')
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
function redirect(c: Context, location: string, settled: boolean): Response {
  c.header('Cache-Control', settled ? IMMUTABLE : UNSETTLED)
  return c.redirect(location, 301)
}

/** For what unverified data says (a `.ls`, a NAR not verified yet): good for a minute, like a negative answer. */
const UNSETTLED = 'public, max-age=60'

/** A `.ls` claim the NAR contradicts (see serve). */
class ListingMismatch extends Error {
  override readonly name = 'ListingMismatch'
}

function describeFile(node: RegularNode): string {
  return `${node.size} bytes${node.executable ? ', executable' : ''}`
}

function display(segments: readonly string[]): string {
  const text = segments.join('/') || '/'
  return text.length > 200 ? `${text.slice(0, 200)}…` : text
}

/** Strong: the NarHash fixes every byte of the NAR, and the path picks the file in it. */
function fileEtag(info: PathInfo, segments: readonly string[]): string {
  const digest = createHash('sha256')
    .update(formatHashNix32(info.narInfo.narHash))
    .update('\0')
    .update(segments.join('/'))
    .digest('base64url')
  return `"${digest.slice(0, 32)}"`
}
