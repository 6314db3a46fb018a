/**
 * Where the bytes of one store file come from, and how far they are verified: memory, the NAR on
 * disk or downloading, an upstream Range request, or the upstream NAR streamed without the disk.
 */
import { Readable } from 'node:stream'
import { locate, type Listing, type ListingNode } from '../formats/listing.js'
import type { Logger } from '../log.js'
import type { PathInfo, PathInfoLookup } from '../upstream/path-info-lookup.js'
import { UpstreamError, type Upstream } from '../upstream/upstream.js'
import { openDirectFile } from './direct-file-stream.js'
import { peekStream } from './peek-stream.js'
import type { HotFile, HotFiles } from './hot-files.js'
import { DiskError } from './nar-errors.js'
import type { NarSource, RangeSource } from './nar-source.js'
import type { NarStore } from './nar-store.js'
import { openRangedFile, probeRangedFile, RangeMismatchError, type FetchRange, type RangedNode } from './ranged-file.js'

export type RegularNode = Extract<ListingNode, { type: 'regular' }>
type DirectoryNode = Extract<ListingNode, { type: 'directory' }>

/**
 * `verified`: the NAR matched NarHash before the answer began; `held`: the answer's last byte waits
 * for that (strict mode); `unverified`: it may complete before or without it (stream mode).
 */
export type Verification = 'verified' | 'held' | 'unverified'

/**
 * Where one request finds the nodes of a store path: the NAR (cached or downloading), held until
 * release(), or the upstream's `.ls`, a hint that file() checks against the NAR.
 */
export interface StoreTree {
  /** The node at `segments`, symlinks not followed. */
  node(segments: readonly string[]): Promise<ListingNode | undefined>
  /** The whole directory at `segments`, as node() gave it (`listed`); undefined when it is none. */
  directory(segments: readonly string[], listed: DirectoryNode): Promise<DirectoryNode | undefined>
  /** What it says holds as long as the store path does: read from a verified NAR. */
  readonly settled: boolean
  /** node() answers at once: the whole listing is known (a `.ls`, or a NAR indexed to its end). */
  readonly indexed: boolean
  /** Lets go of the NAR; streams opened from it hold it until they end. */
  release(): void
  /** The NAR this tree reads, when it does. */
  readonly nar: HeldNar | undefined
}

/** What a request wants of a regular file found in a tree. */
export interface FileWant {
  /** Where the file is in the store path, symlinks resolved. */
  readonly segments: readonly string[]
  /** The node as the tree has it. */
  readonly listed: RegularNode
  /** How many of its first bytes the caller needs (for sniffing its type); 0: none. */
  readonly headBytes: number
  /** False for HEAD: no byte will be sent. */
  readonly body: boolean
  /** The request's own segments when they name this file: its key in hot files. */
  readonly hotKey?: readonly string[] | undefined
  /**
   * The client went away (for the no-disk stream, which holds an upstream connection). Asked for
   * only by that stream: node-server makes an AbortController for each request that asks.
   */
  readonly signal?: (() => AbortSignal) | undefined
}

/** Positioned reads of one file (offsets within the file), complete or still arriving; release() once, when done. */
export interface FileReader {
  readAt(buffer: Uint8Array, length: number, position: number): Promise<number>
  /**
   * Resolves once the file's bytes up to `end` exist (at once in a complete NAR) with how far they
   * exist now (at least `end`); rejects if they never will.
   */
  waitFor(end: number): Promise<number>
  /** What the file's last byte waits for (the NAR's verification, in strict mode); none: nothing. */
  readonly beforeLastByte?: (() => Promise<void>) | undefined
  release(): void
}

/** A file's bytes, however they are reached; release() once the response exists. */
export interface FileSource {
  readonly from: 'nar' | 'range' | 'direct'
  readonly verification: Verification
  readonly size: number
  readonly executable: boolean
  /** The first FileWant.headBytes bytes (fewer for a smaller file). */
  readonly head: Uint8Array
  /** The whole file, when it was read at once (small files). */
  readonly bytes: Uint8Array<ArrayBuffer> | undefined
  /** Bytes [start, end); undefined when only the whole file can be streamed. */
  readonly openRange: ((start: number, end: number) => ReadableStream<Uint8Array>) | undefined
  readonly openWhole: () => ReadableStream<Uint8Array>
  /** Positioned reads of the file, when it is in a NAR on disk (cached, or downloading into its temp file). */
  readonly openReader?: (() => FileReader) | undefined
  /** Lets go of what no opened stream uses (each holds what it reads until it ends). Idempotent. */
  readonly release: () => void
}

/** The file's source, or why there is none: no regular file in the NAR or in the upstream NAR streamed without the disk. */
export type FileOutcome =
  | { readonly kind: 'found'; readonly source: FileSource }
  | { readonly kind: 'missing'; readonly from: 'nar' | 'direct'; readonly reason: string }

/** What file() finds; `contradicted`: the `.ls` said what the NAR does not, so answer again from narTree(). */
export type FileResolution = FileOutcome | { readonly kind: 'contradicted'; readonly reason: string }

export interface FileSourcesOptions<F extends HotFile> {
  readonly store: NarStore
  readonly listings: Pick<PathInfoLookup, 'listing' | 'distrustListing'>
  readonly hotFiles: HotFiles<F>
  /** What hot files keep for a file of a verified NAR, given its bytes. */
  readonly describe: (
    info: PathInfo,
    segments: readonly string[],
    node: RegularNode,
    bytes: Uint8Array<ArrayBuffer>,
  ) => F
  readonly log: Logger
}

/**
 * Files up to this size are read whole and sent in one write (headers and body together): no
 * stream machinery per response (bench/ "200 concurrent cold requests" of a 254 KiB file). One streamed
 * read (READ_MAX_BYTES) holds more, so no response holds more memory than a stream would.
 */
const SMALL_FILE_BYTES = 256 * 1024

const NO_BYTES = new Uint8Array(0)

export class FileSources<F extends HotFile> {
  readonly #options: FileSourcesOptions<F>
  /** Upstreams that answered a Range request with the whole object. */
  readonly #rangeless = new WeakSet<Upstream>()
  #leases = 0

  constructor(options: FileSourcesOptions<F>) {
    this.#options = options
  }

  /** NAR leases held now, by requests being answered and by the bodies they stream. */
  get leases(): number {
    return this.#leases
  }

  /** Whether the NAR is on disk. */
  cached(info: PathInfo): boolean {
    return this.#options.store.has(info)
  }

  /** A file kept in memory, by the request's own segments: only ever from a verified NAR. */
  inMemory(info: PathInfo, segments: readonly string[]): F | undefined {
    return this.#options.hotFiles.get(info.narInfo, segments)
  }

  /**
   * The tree to resolve a path in: the cached NAR, else the upstream's `.ls`, else the NAR
   * downloading. Undefined when the cache directory cannot take it: stream with direct().
   */
  async tree(info: PathInfo): Promise<StoreTree | undefined> {
    if (this.cached(info)) {
      const nar = await this.#open(info)
      if (nar !== undefined) return narTree(nar)
    }
    const listing = await this.#options.listings.listing(info)
    if (listing !== undefined) return listingTree(listing)
    const nar = await this.#open(info)
    return nar === undefined ? undefined : narTree(nar)
  }

  /** The NAR alone, after its upstream's `.ls` contradicted it: no longer used for this path. */
  async narTree(info: PathInfo, reason: string): Promise<StoreTree | undefined> {
    this.#options.listings.distrustListing(info, reason)
    const nar = await this.#open(info)
    return nar === undefined ? undefined : narTree(nar)
  }

  /**
   * The NAR once every byte matched NarHash (after its download, when it is not cached), held until
   * `release()`; undefined when the cache directory cannot take it. Rejects when it never will match.
   */
  async verifiedNar(info: PathInfo): Promise<{ nar: HeldNar; release: () => void } | undefined> {
    const nar = await this.#open(info)
    if (nar === undefined) return undefined
    const release = nar.hold()
    try {
      await nar.source.verification()
      return { nar, release }
    } catch (err) {
      release()
      throw err
    }
  }

  /** The bytes of a regular file `tree` found; every claim of a `.ls` is checked against the NAR. */
  async file(info: PathInfo, tree: StoreTree, want: FileWant): Promise<FileResolution> {
    const { listed } = want
    if (tree.nar === undefined && listed.narOffset !== undefined && this.#rangedFetchFits(info)) {
      const ranged = await this.#ranged(info, { ...listed, narOffset: listed.narOffset }, want)
      if (ranged !== undefined) return { kind: 'found', source: ranged }
    }
    const nar = tree.nar ?? (await this.#open(info))
    if (nar === undefined) return this.direct(info, want)
    const release = nar.hold()
    try {
      const resolution = await this.#fromNar(info, nar, tree.nar === undefined, want, release)
      if (resolution.kind !== 'found') release()
      return resolution
    } catch (err) {
      release()
      throw err
    }
  }

  /** The no-disk fallback: the file straight out of the upstream NAR, nothing kept. */
  async direct(info: PathInfo, want: Omit<FileWant, 'listed'>): Promise<FileOutcome> {
    const path = want.segments.join('/')
    this.#options.log.warn('serving without the NAR cache', { storePath: info.narInfo.storePath, path })
    const verify = this.#options.store.verify === 'strict'
    const programs = this.#options.store.decoderPrograms
    const direct = await openDirectFile(info, path, { signal: want.signal?.(), verify, programs })
    if (direct === undefined) {
      const reason = `cannot serve ${path || '/'} while the NAR cache is unavailable (only regular files can be streamed without it)`
      return { kind: 'missing', from: 'direct', reason }
    }
    let body = direct.body
    // No byte to hold back: the (empty) answer waits for the NAR's verification itself.
    if (verify && direct.node.size === 0) await body.pipeTo(new WritableStream())
    let head: Uint8Array = NO_BYTES
    if (want.headBytes > 0) {
      const peeked = await peekStream(body, Math.min(want.headBytes, direct.node.size))
      head = peeked.head
      body = peeked.stream
    }
    let opened = false
    const source: FileSource = {
      from: 'direct',
      verification: verify ? 'held' : 'unverified',
      size: direct.node.size,
      executable: direct.node.executable,
      head,
      bytes: undefined,
      openRange: undefined,
      openWhole: () => {
        opened = true
        return body
      },
      // An answer without a body (HEAD, 304) lets go of the upstream connection at once.
      release: () => {
        if (!opened) body.cancel().catch(() => {})
        opened = true
      },
    }
    return { kind: 'found', source }
  }

  /** `fromListing`: tree was the `.ls`, whose node the NAR's own must confirm. */
  async #fromNar(
    info: PathInfo,
    nar: HeldNar,
    fromListing: boolean,
    want: FileWant,
    release: () => void,
  ): Promise<FileResolution> {
    const { segments, listed } = want
    const source = nar.source
    const node = await source.node(segments)
    if (node?.type !== 'regular' || node.narOffset === undefined) {
      if (fromListing) {
        const found = node === undefined ? 'nothing' : `a ${node.type}`
        return {
          kind: 'contradicted',
          reason: `the listing has a regular file at ${display(segments)}, the NAR ${found}`,
        }
      }
      const reason = `the NAR from ${info.upstream.name} has no regular file at ${display(segments)}`
      return { kind: 'missing', from: 'nar', reason }
    }
    if (fromListing && (node.size !== listed.size || node.executable !== listed.executable)) {
      const reason = `the listing says ${display(segments)} is ${describeFile(listed)}, the NAR ${describeFile(node)}`
      return { kind: 'contradicted', reason }
    }
    const offset = node.narOffset
    const verification = source.verified ? 'verified' : source.holdsBack ? 'held' : 'unverified'
    // Strict verification of a NAR still arriving: the file is streamed, its last byte held back
    // until the NAR is verified, rather than read whole and sent in one write.
    const bytes =
      want.body && node.size <= SMALL_FILE_BYTES && !source.holdsBack
        ? await source.readBytes(offset, offset + node.size)
        : undefined
    const head =
      bytes?.subarray(0, want.headBytes) ??
      (want.headBytes === 0 ? NO_BYTES : await source.readBytes(offset, offset + Math.min(want.headBytes, node.size)))
    this.#keep(info, source, want, node, offset, bytes)
    // An empty file has no byte to hold back: its answer waits for the verification instead.
    if (node.size === 0 && source.holdsBack && want.body) await source.verification()
    const file: FileSource = {
      from: 'nar',
      verification,
      size: node.size,
      executable: node.executable,
      head,
      bytes,
      openRange: (start, end) => nar.stream(source.read(offset + start, offset + end)),
      openWhole: () => nar.stream(source.read(offset, offset + node.size)),
      openReader: source.reader === undefined ? undefined : () => nar.reader(source.reader!(), offset),
      release,
    }
    return { kind: 'found', source: file }
  }

  /**
   * Puts the file in memory when its NAR is verified and it is asked for a second time: a crawl or
   * a mirror client, asking for each file once, would otherwise push out the files asked for often.
   */
  #keep(
    info: PathInfo,
    source: NarSource,
    want: FileWant,
    node: RegularNode,
    offset: number,
    bytes: Uint8Array<ArrayBuffer> | undefined,
  ): void {
    const { hotFiles, describe, log } = this.#options
    const { hotKey: key, segments } = want
    if (key === undefined || !want.body || !hotFiles.admit(info.narInfo, key, node.size)) return
    // Checked after the read: bytes of a NAR verified by then are verified bytes.
    if (!source.verified) return hotFiles.abandon(info.narInfo, key)
    const keep = (kept: Uint8Array<ArrayBuffer>) =>
      hotFiles.set(info.narInfo, key, describe(info, segments, node, kept))
    if (bytes !== undefined) keep(bytes)
    else {
      // A bigger file is read into memory beside this response, for the next ones: Node has no
      // sendfile, and a read per chunk costs a third of the throughput (bench/ "hot 64 MiB file").
      source.readBytes(offset, offset + node.size).then(keep, (err: Error) => {
        hotFiles.abandon(info.narInfo, key)
        log.debug('could not keep a hot file in memory', {
          storePath: info.narInfo.storePath,
          path: segments.join('/'),
          error: err,
        })
      })
    }
  }

  /** An uncompressed NAR too big to keep, not cached and not being downloaded, on an upstream that honours Range. */
  #rangedFetchFits(info: PathInfo): boolean {
    const { store } = this.#options
    // Bytes by range are never verified against NarHash: `stream` mode only.
    return (
      store.verify === 'stream' &&
      info.narInfo.compression === 'none' &&
      !this.#rangeless.has(info.upstream) &&
      !store.keeps(info) &&
      !store.has(info) &&
      !store.downloading(info)
    )
  }

  /**
   * Only this file's bytes, fetched from the upstream by Range; no peer does this. Undefined when
   * the upstream ignores Range or the listing's offset does not match the NAR: then the NAR is read.
   */
  async #ranged(info: PathInfo, node: RangedNode, want: FileWant): Promise<FileSource | undefined> {
    const fetchRange = this.#fetchRange(info)
    let head: Buffer
    try {
      head = await probeRangedFile(node, want.segments.at(-1), want.headBytes, fetchRange)
    } catch (err) {
      if (!(err instanceof RangeMismatchError)) throw err
      if (this.#rangeless.has(info.upstream))
        this.#options.log.warn('cannot fetch a file by range; streaming the NAR', {
          upstream: info.upstream.name,
          storePath: info.narInfo.storePath,
          error: err,
        })
      else this.#options.listings.distrustListing(info, err.message)
      return undefined
    }
    const open = (start: number, end: number) =>
      Readable.toWeb(openRangedFile(node, start, end, fetchRange)) as ReadableStream<Uint8Array>
    return {
      from: 'range',
      verification: 'unverified',
      size: node.size,
      executable: node.executable,
      head,
      bytes: undefined,
      openRange: open,
      openWhole: () => open(0, node.size),
      release: () => {},
    }
  }

  #fetchRange(info: PathInfo): FetchRange {
    return async (start, end, signal) => {
      const res = await info.upstream.get(info.narKey, signal, { start, end })
      if (res === undefined) throw new UpstreamError(info.upstream.name, 'bad-status', `NAR ${info.narKey} is missing`)
      if (res.partial !== true) {
        res.body.destroy()
        this.#rangeless.add(info.upstream)
        throw new RangeMismatchError(`${info.upstream.name} does not answer Range requests`)
      }
      return res.body
    }
  }

  /** The cached or downloading NAR; undefined when the cache directory cannot take it. */
  async #open(info: PathInfo): Promise<HeldNar | undefined> {
    try {
      const lease = await this.#options.store.open(info)
      this.#leases++
      return new HeldNar(lease.source, () => {
        this.#leases--
        lease.release()
      })
    } catch (err) {
      if (err instanceof DiskError) return undefined
      throw err
    }
  }
}

/**
 * A NAR lease shared by one request and the response bodies it streams: let go when the last of
 * them is done, so a body read long after the request was answered still finds its bytes.
 */
export class HeldNar {
  readonly source: NarSource
  readonly #release: () => void
  #holders = 0

  constructor(source: NarSource, release: () => void) {
    this.source = source
    this.#release = release
  }

  /** One more holder; call the returned function once it is done (later calls do nothing). */
  hold(): () => void {
    this.#holders++
    let held = true
    return () => {
      if (!held) return
      held = false
      if (--this.#holders === 0) this.#release()
    }
  }

  /** Reads at `offset` on from `range`, holding the NAR until released. */
  reader(range: RangeSource, offset: number): FileReader {
    const release = this.hold()
    const beforeLastByte = range.beforeLastByte
    return {
      readAt: (buffer, length, position) => range.readAt(buffer, length, offset + position),
      waitFor: async (end) => (await range.waitFor(offset + end)) - offset,
      beforeLastByte,
      release: () => {
        range.release()
        release()
      },
    }
  }

  /** `body`, holding the NAR until it ends, fails or is cancelled. */
  stream(body: ReadableStream<Uint8Array>): ReadableStream<Uint8Array> {
    const release = this.hold()
    const reader = body.getReader()
    return new ReadableStream<Uint8Array>(
      {
        async pull(controller) {
          try {
            const next = await reader.read()
            if (next.done) {
              release()
              controller.close()
            } else controller.enqueue(next.value)
          } catch (err) {
            release()
            controller.error(err)
          }
        },
        cancel(reason) {
          release()
          return reader.cancel(reason)
        },
      },
      { highWaterMark: 0 },
    )
  }
}

function narTree(nar: HeldNar): StoreTree {
  const { source } = nar
  return {
    node: (segments) => source.node(segments),
    directory: async (segments) => {
      const node = locate((await source.listing()).root, segments)
      return node?.type === 'directory' ? node : undefined
    },
    get settled() {
      return source.verified
    },
    // A NAR's index is whole once it matched NarHash (NarDownload.node() stops waiting then).
    get indexed() {
      return source.verified
    },
    release: nar.hold(),
    nar,
  }
}

function listingTree(listing: Listing): StoreTree {
  return {
    node: async (segments) => locate(listing.root, segments),
    directory: async (_segments, listed) => listed,
    settled: false,
    indexed: true,
    release: () => {},
    nar: undefined,
  }
}

function describeFile(node: RegularNode): string {
  return `${node.size} bytes${node.executable ? ', executable' : ''}`
}

function display(segments: readonly string[]): string {
  const text = segments.join('/') || '/'
  return text.length > 200 ? `${text.slice(0, 200)}…` : text
}
