/** The on-disk NAR store: verified, decompressed NARs keyed by NarHash, bounded by an LRU. */
import fs, { constants } from 'node:fs'
import { promisify } from 'node:util'
import {
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  statfs,
  utimes,
  writeFile,
  type FileHandle,
} from 'node:fs/promises'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import { type DecoderPrograms, NO_DECODER_PROGRAMS } from '../codecs/decoder-programs.js'
import type { DecoderLauncher } from '../codecs/file-decoder.js'
import { formatHashNix32 } from '../formats/hash.js'
import { formatListing, listingMemoryBytes, locate, parseListing, type Listing } from '../formats/listing.js'
import type { Logger } from '../log.js'
import type { PathInfo } from '../upstream/path-info-lookup.js'
import { UpstreamError } from '../upstream/upstream.js'
import { DownloadSlots } from './download-slots.js'
import { NarDownload } from './nar-download.js'
import { DiskError, NarVerificationError } from './nar-errors.js'
import { createRangeStream, readRangeBytes, type NarLease, type NarSource, type RangeSource } from './nar-source.js'

export interface NarStoreOptions {
  readonly dir: string
  /** Upper bound of the bytes of committed NARs. */
  readonly maxBytes: number
  /** NARs larger than this are streamed through a temp file and not kept. */
  readonly maxNarBytes: number
  readonly log: Logger
  /** Concurrent upstream NAR downloads; more wait for a slot. */
  readonly maxDownloads?: number
  readonly events?: NarStoreEvents
  /** The decoder programs this machine has, found at start (default: none, every NAR decodes in-process). */
  readonly decoderPrograms?: DecoderPrograms
  /** Starts decoder programs ahead of need (without one, each download starts its own). */
  readonly decoderLauncher?: DecoderLauncher
  /**
   * `strict` (default): a read of a NAR still downloading keeps its last byte until the NAR matched
   * NarSize and NarHash (see NarSource.read); `stream`: it does not wait.
   */
  readonly verify?: VerifyMode
}

export type VerifyMode = 'strict' | 'stream'

/** What metrics count; every callback is optional. */
export interface NarStoreEvents {
  /** A request found its NAR cached. */
  hit?(): void
  /** A request started a download. */
  miss?(): void
  /** A request joined a download already in flight (or queued). */
  coalesced?(): void
  evicted?(bytes: number): void
  /** A download ended: committed to the cache, streamed without keeping, or failed. */
  downloadEnded?(result: 'cached' | 'not-kept' | 'failed' | 'verification-failed' | 'disk-error'): void
  /** A download failed because of what the upstream sent (not the disk, not a shutdown). */
  upstreamNarFailed?(info: PathInfo): void
  /** A download matched NarSize and NarHash; `listing` is the NAR's own. */
  narVerified?(info: PathInfo, listing: Listing): void
}

interface Entry {
  readonly key: string
  readonly size: number
  /** Leases and reads using the file; eviction defers the unlink until they are done. */
  readers: number
  evicted: boolean
  lastTouch: number
  /** The open file, while the NAR is hot (see #fdFor). */
  fd: Promise<number> | undefined
}

const DISK_TROUBLE_BACKOFF_MS = 30_000
const TOUCH_INTERVAL_MS = 60_000
const FREE_SPACE_MARGIN_BYTES = 1024 * 1024
const MAX_OPEN_FILES = 256
/**
 * Parsed listings of cached NARs kept in memory (listingMemoryBytes); the others are read again
 * from their `.ls` when asked for: a cache of many NARs does not hold every listing.
 */
export const STORE_LISTINGS_MEMORY_BYTES = 32 * 1024 * 1024

const fsOpen = promisify(fs.open)
const fsClose = promisify(fs.close)
const fsRead = promisify(fs.read)

async function readAt(fd: number, buffer: Uint8Array, length: number, position: number): Promise<number> {
  return (await fsRead(fd, buffer, 0, length, position)).bytesRead
}

/**
 * Layout: `nar/<narhash>.nar` (the decompressed NAR) with `nar/<narhash>.ls` (its listing, every
 * offset computed by unnar's own NAR indexer), and `tmp/` for downloads in flight. The `.ls` is
 * renamed into place before the `.nar`, so a `.nar` on disk always has its listing.
 */
export class NarStore {
  readonly #dir: string
  readonly #narDir: string
  readonly #tmpDir: string
  readonly #maxNarBytes: number
  readonly #log: Logger
  /** What NARs decode with (also for a caller that streams one itself, such as the no-disk path). */
  readonly decoderPrograms: DecoderPrograms
  readonly #decoderLauncher: DecoderLauncher | undefined
  readonly #verify: VerifyMode
  readonly #lru: LRUCache<string, Entry>
  readonly #listings = new LRUCache<string, Listing>({
    maxSize: STORE_LISTINGS_MEMORY_BYTES,
    sizeCalculation: listingMemoryBytes,
  })
  readonly #inflight = new Map<string, NarDownload>()
  /** Downloads being set up or waiting for a slot, so concurrent requests share them. */
  readonly #starting = new Map<string, Promise<NarDownload>>()
  readonly #slots: DownloadSlots
  /** Each download until it is committed or cleaned up. */
  readonly #settling = new Set<Promise<void>>()
  readonly #events: NarStoreEvents
  readonly #openFiles = new LRUCache<string, Entry>({
    max: MAX_OPEN_FILES,
    dispose: (entry) => {
      if (entry.readers === 0) this.#closeFd(entry)
    },
  })
  #diskTroubleUntil = 0
  #closing = false

  constructor(options: NarStoreOptions) {
    this.#dir = options.dir
    this.#narDir = path.join(options.dir, 'nar')
    this.#tmpDir = path.join(options.dir, 'tmp')
    this.#maxNarBytes = Math.min(options.maxNarBytes, options.maxBytes)
    this.#log = options.log
    this.#slots = new DownloadSlots(options.maxDownloads ?? 8)
    this.#events = options.events ?? {}
    this.decoderPrograms = options.decoderPrograms ?? NO_DECODER_PROGRAMS
    this.#decoderLauncher = options.decoderLauncher
    this.#verify = options.verify ?? 'strict'
    this.#lru = new LRUCache<string, Entry>({
      maxSize: Math.max(1, options.maxBytes),
      sizeCalculation: (entry) => Math.max(1, entry.size),
      dispose: (entry, _key, reason) => {
        if (reason === 'evict' || reason === 'delete') this.#evict(entry)
      },
    })
  }

  /** Creates the directories, deletes leftovers of a crash and rebuilds the index from disk. */
  async init(): Promise<void> {
    try {
      await mkdir(this.#narDir, { recursive: true })
      await rm(this.#tmpDir, { recursive: true, force: true })
      await mkdir(this.#tmpDir, { recursive: true })
    } catch (err) {
      this.#diskTrouble('cannot prepare the cache directory', err)
      return
    }
    const names = await readdir(this.#narDir)
    const found: Array<{ key: string; size: number; atimeMs: number }> = []
    for (const name of names) {
      const full = path.join(this.#narDir, name)
      if (name.endsWith('.ls')) {
        if (!names.includes(name.slice(0, -3) + '.nar')) await rm(full, { force: true })
        continue
      }
      if (!name.endsWith('.nar')) continue
      const info = await stat(full).catch(() => undefined)
      if (info === undefined || !info.isFile()) continue
      found.push({ key: name.slice(0, -4), size: info.size, atimeMs: info.atimeMs })
    }
    // Oldest first, so the most recently used NARs end up at the LRU's head.
    found.sort((a, b) => a.atimeMs - b.atimeMs)
    for (const { key, size, atimeMs } of found) {
      if (size > this.#lru.maxSize) {
        // lru-cache would refuse it without a word, leaving it on disk outside the bound.
        this.#log.info('dropping a cached NAR larger than the whole cache', { key, size, maxBytes: this.#lru.maxSize })
        await this.#remove(key)
        continue
      }
      try {
        const listing = parseListing(await readFile(this.#listingPath(key), 'utf8'))
        this.#lru.set(key, { key, size, readers: 0, evicted: false, lastTouch: atimeMs, fd: undefined })
        this.#listings.set(key, listing)
      } catch (err) {
        this.#log.warn('dropping a cached NAR without a usable listing', { key, error: err })
        await this.#remove(key)
      }
    }
    this.#log.info('NAR store ready', { dir: this.#dir, nars: this.#lru.size, bytes: this.#lru.calculatedSize })
  }

  /** Bytes used by committed NARs. */
  get usedBytes(): number {
    return this.#lru.calculatedSize
  }

  get maxBytes(): number {
    return this.#lru.maxSize
  }

  get entries(): number {
    return this.#lru.size
  }

  /** Downloads running, and waiting for a slot. */
  get downloads(): { readonly active: number; readonly queued: number } {
    return { active: this.#slots.active, queued: this.#slots.queued }
  }

  /** How responses are verified (see NarStoreOptions.verify). */
  get verify(): VerifyMode {
    return this.#verify
  }

  /** Whether a download of this NAR would be kept (else it is streamed through a temp file). */
  keeps(info: PathInfo): boolean {
    return info.narInfo.narSize <= this.#maxNarBytes
  }

  /** Whether this NAR is being downloaded now. */
  downloading(info: PathInfo): boolean {
    const key = narKey(info)
    return this.#inflight.has(key) || this.#starting.has(key)
  }

  has(info: PathInfo): boolean {
    return this.#lru.has(narKey(info))
  }

  /**
   * The NAR of `info`, held for the caller until it releases the lease: the cached copy, the
   * download already in flight, or a new download. Throws DiskError when the cache directory cannot
   * take it (the caller then streams straight from the upstream).
   */
  async open(info: PathInfo): Promise<NarLease> {
    const key = narKey(info)
    const cached = this.#lru.get(key)
    if (cached !== undefined) {
      // Held before the wait for its file, so an eviction meanwhile leaves that file in place.
      const release = this.#use(cached)
      if (await this.#usable(cached)) {
        this.#events.hit?.()
        this.#touch(cached)
        return { source: this.#cachedSource(cached), release }
      }
      release()
      this.#lru.delete(key)
    }
    const inflight = this.#inflight.get(key)
    if (inflight !== undefined) {
      this.#events.coalesced?.()
      return { source: inflight, release: inflight.hold() }
    }
    let starting = this.#starting.get(key)
    if (starting !== undefined) {
      this.#events.coalesced?.()
    } else {
      if (Date.now() < this.#diskTroubleUntil) throw new DiskError('the cache directory failed recently')
      if (this.#closing) throw new DiskError('the cache is closing')
      this.#events.miss?.()
      starting = this.#startDownload(key, info).finally(() => this.#starting.delete(key))
      this.#starting.set(key, starting)
    }
    // Held in the same turn it resolves: a download only lets go of its file after upstream I/O.
    const download = await starting
    return { source: download, release: download.hold() }
  }

  /** Resolves when every download has been committed or cleaned up, or after `ms`. */
  async idle(ms: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined
    await Promise.race([Promise.all(this.#settling), new Promise((resolve) => (timer = setTimeout(resolve, ms)))])
    clearTimeout(timer)
  }

  /** Aborts downloads in flight (and those still starting); resolves once their temp files are removed. */
  async close(): Promise<void> {
    this.#closing = true
    for (const download of this.#inflight.values()) download.abort(new Error('shutting down'))
    // Those waiting for a slot or a temp file start, see #closing and stop at once.
    await Promise.allSettled(this.#starting.values())
    await Promise.all(this.#settling)
  }

  async #startDownload(key: string, info: PathInfo): Promise<NarDownload> {
    const release = await this.#slots.acquire()
    try {
      return await this.#download(key, info, release)
    } catch (err) {
      release()
      throw err
    }
  }

  /** Runs with a download slot, which is released when the download settles. */
  async #download(key: string, info: PathInfo, release: () => void): Promise<NarDownload> {
    const keep = info.narInfo.narSize <= this.#maxNarBytes
    const tmp = path.join(this.#tmpDir, `${key}.${randomBytes(6).toString('hex')}.nar`)
    // Side by side: each waits for a thread of libuv's pool, and a cold request waits for both.
    const [space, opened] = await Promise.allSettled([
      this.#checkFreeSpace(info.narInfo.narSize),
      open(tmp, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL, 0o644),
    ])
    if (space.status === 'rejected') {
      if (opened.status === 'fulfilled') {
        await opened.value.close().catch(() => {})
        await this.#removeQuietly(tmp)
      }
      throw space.reason
    }
    if (opened.status === 'rejected') {
      this.#diskTrouble('cannot create a temp file', opened.reason)
      throw new DiskError('cannot create a temp file', { cause: opened.reason })
    }
    const file: FileHandle = opened.value
    if (keep) this.#makeRoom(info.narInfo.narSize)
    const download = new NarDownload({
      info,
      file,
      path: tmp,
      abortWhenUnused: !keep,
      decoderPrograms: this.decoderPrograms,
      decoderLauncher: this.#decoderLauncher,
      holdBack: this.#verify === 'strict',
    })
    this.#inflight.set(key, download)
    // close() ran while this one waited for a slot or its temp file: it stops with the others.
    if (this.#closing) download.abort(new Error('shutting down'))
    this.#log.info('downloading NAR', {
      upstream: info.upstream.name,
      storePath: info.narInfo.storePath,
      narSize: info.narInfo.narSize,
      keep,
    })
    const finish = () => {
      if (this.#inflight.get(key) === download) this.#inflight.delete(key)
      download.unhold()
      release()
    }
    const settled = download.done
      .then(
        async (listing) => {
          this.#events.narVerified?.(info, listing)
          // Stays in flight until committed, so no request starts a second download meanwhile.
          let result: 'cached' | 'disk-error' | 'not-kept' = 'not-kept'
          try {
            if (keep) result = (await this.#commit(key, tmp, listing, info)) ? 'cached' : 'disk-error'
            else await this.#removeQuietly(tmp)
          } finally {
            this.#events.downloadEnded?.(result)
            finish()
          }
        },
        async (err: Error) => {
          // Out of flight at once: the next request must start afresh, not read a failed download.
          finish()
          this.#events.downloadEnded?.(
            err instanceof DiskError
              ? 'disk-error'
              : err instanceof NarVerificationError
                ? 'verification-failed'
                : 'failed',
          )
          if ((err instanceof UpstreamError || err instanceof NarVerificationError) && !this.#closing)
            this.#events.upstreamNarFailed?.(info)
          if (err instanceof DiskError) this.#diskTrouble('NAR download failed here, not upstream', err)
          else
            this.#log.warn('NAR download failed', {
              upstream: info.upstream.name,
              storePath: info.narInfo.storePath,
              error: err,
            })
          await this.#removeQuietly(tmp)
        },
      )
      // Nothing above should throw; if it does, it is a bug to log, not a reason to stop the process.
      .catch((err: unknown) =>
        this.#log.error('NAR download bookkeeping failed', { storePath: info.narInfo.storePath, error: err as Error }),
      )
    this.#settling.add(settled)
    void settled.finally(() => this.#settling.delete(settled))
    return download
  }

  /** False when the disk refused it (the NAR was still served to its readers). */
  async #commit(key: string, tmp: string, listing: Listing, info: PathInfo): Promise<boolean> {
    try {
      const tmpListing = `${tmp}.ls`
      await writeFile(tmpListing, formatListing(listing))
      await rename(tmpListing, this.#listingPath(key))
      await rename(tmp, this.#narPath(key))
    } catch (err) {
      this.#diskTrouble('cannot commit a NAR', err)
      await this.#removeQuietly(tmp)
      await this.#removeQuietly(`${tmp}.ls`)
      return false
    }
    this.#listings.set(key, listing)
    this.#lru.set(key, {
      key,
      size: info.narInfo.narSize,
      readers: 0,
      evicted: false,
      lastTouch: Date.now(),
      fd: undefined,
    })
    this.#log.info('NAR cached', {
      storePath: info.narInfo.storePath,
      narSize: info.narInfo.narSize,
      usedBytes: this.usedBytes,
    })
    return true
  }

  /** A NAR that cannot fit on the filesystem is streamed without the disk from the start. */
  async #checkFreeSpace(narSize: number): Promise<void> {
    let free: number
    try {
      const fs = await statfs(this.#tmpDir)
      free = fs.bavail * fs.bsize
    } catch (err) {
      this.#diskTrouble('cannot stat the cache filesystem', err)
      throw new DiskError('cannot stat the cache filesystem', { cause: err })
    }
    if (free < narSize + FREE_SPACE_MARGIN_BYTES) {
      this.#log.warn('not enough free space for a NAR; streaming it without the cache', {
        narSize,
        freeBytes: free,
        dir: this.#dir,
      })
      throw new DiskError('not enough free space')
    }
  }

  /** Evicts least recently used NARs until `incoming` more bytes fit under the bound. */
  #makeRoom(incoming: number): void {
    const max = this.#lru.maxSize
    while (this.#lru.size > 0 && this.#lru.calculatedSize + incoming > max) this.#lru.pop()
  }

  /** False when the file went away under us (deleted by hand, a cleaner): it is then downloaded again. */
  async #usable(entry: Entry): Promise<boolean> {
    try {
      // An open (or opening) file is awaited as is: #rangeSource registers the use in the open-file LRU.
      await (entry.fd ?? this.#fdFor(entry))
      return true
    } catch (err) {
      entry.fd = undefined
      this.#log.warn('a cached NAR cannot be opened; downloading it again', { key: entry.key, error: err })
      return false
    }
  }

  #cachedSource(entry: Entry): NarSource {
    return {
      node: async (segments) => locate((await this.#listingOf(entry)).root, segments),
      listing: () => this.#listingOf(entry),
      read: (start, end) => createRangeStream(this.#rangeSource(entry), start, end),
      readBytes: (start, end) => readRangeBytes(this.#rangeSource(entry), start, end),
      verified: true,
      holdsBack: false,
      verification: async () => {},
      reader: () => this.#rangeSource(entry),
    }
  }

  /** The NAR's listing, read again from its `.ls` when it is no longer in memory. */
  async #listingOf(entry: Entry): Promise<Listing> {
    const kept = this.#listings.get(entry.key)
    if (kept !== undefined) return kept
    const listing = parseListing(await readFile(this.#listingPath(entry.key), 'utf8'))
    this.#listings.set(entry.key, listing)
    return listing
  }

  #rangeSource(entry: Entry): RangeSource {
    const release = this.#use(entry)
    const fd = this.#fdFor(entry)
    return {
      readAt: async (buffer, length, position) => readAt(await fd, buffer, length, position),
      waitFor: async () => entry.size,
      release,
    }
  }

  /** Counts a user of the NAR's file (a lease or a read); eviction defers the unlink until none is left. */
  #use(entry: Entry): () => void {
    entry.readers++
    let released = false
    return () => {
      if (released) return
      released = true
      entry.readers--
      if (entry.readers > 0) return
      // The open-file LRU may hold a newer entry of the same NAR under this key: compare entries.
      if (entry.evicted || this.#openFiles.peek(entry.key) !== entry) this.#closeFd(entry)
      // Unlink only if no newer copy of the same NAR was committed meanwhile, or is being
      // downloaded (its commit renames over these files; an unlink now could hit the new ones).
      if (
        entry.evicted &&
        this.#lru.peek(entry.key) === undefined &&
        !this.#inflight.has(entry.key) &&
        !this.#starting.has(entry.key)
      )
        void this.#remove(entry.key)
    }
  }

  /**
   * Hot NARs keep their file open (opening one per request costs more than the read itself); the
   * set of open files is bounded by its own LRU, and a file is closed once no reader uses it.
   */
  #fdFor(entry: Entry): Promise<number> {
    entry.fd ??= fsOpen(this.#narPath(entry.key), 'r')
    // An evicted entry's file is closed when its last reader leaves; it must not push the current
    // entry of the same NAR out of the open-file LRU.
    if (!entry.evicted) this.#openFiles.set(entry.key, entry)
    return entry.fd
  }

  #closeFd(entry: Entry): void {
    const fd = entry.fd
    entry.fd = undefined
    void fd?.then((n) => fsClose(n)).catch(() => {})
  }

  #touch(entry: Entry): void {
    const now = Date.now()
    // Recency survives restarts through atime; refresh it at most once a minute per NAR.
    if (now - entry.lastTouch < TOUCH_INTERVAL_MS) return
    entry.lastTouch = now
    const when = new Date(now)
    utimes(this.#narPath(entry.key), when, when).catch(() => {})
  }

  #evict(entry: Entry): void {
    entry.evicted = true
    if (this.#openFiles.peek(entry.key) === entry) this.#openFiles.delete(entry.key)
    this.#log.info('NAR evicted', { key: entry.key, size: entry.size })
    this.#events.evicted?.(entry.size)
    if (entry.readers === 0) void this.#remove(entry.key)
  }

  async #remove(key: string): Promise<void> {
    this.#listings.delete(key)
    await rm(this.#narPath(key), { force: true }).catch(() => {})
    await rm(this.#listingPath(key), { force: true }).catch(() => {})
  }

  /** Cleaning up after a failure: a disk that refuses this too (read-only, EIO) is logged, not thrown. */
  async #removeQuietly(file: string): Promise<void> {
    try {
      await rm(file, { force: true })
    } catch (err) {
      this.#diskTrouble('cannot remove a temp file', err)
    }
  }

  #diskTrouble(what: string, err: unknown): void {
    this.#diskTroubleUntil = Date.now() + DISK_TROUBLE_BACKOFF_MS
    this.#log.error(`${what}; streaming straight from upstreams for ${DISK_TROUBLE_BACKOFF_MS / 1000} s`, {
      dir: this.#dir,
      error: err,
    })
  }

  #narPath(key: string): string {
    return path.join(this.#narDir, `${key}.nar`)
  }

  #listingPath(key: string): string {
    return path.join(this.#narDir, `${key}.ls`)
  }
}

/** NARs are keyed by NarHash: two store paths with one NAR share it; different bytes never mix. */
export function narKey(info: PathInfo): string {
  return formatHashNix32(info.narInfo.narHash).replace(':', '-')
}
