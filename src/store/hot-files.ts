/**
 * Files of verified NARs kept in memory, so a hot file costs no path resolution and no read, once
 * asked for a second time (admit()).
 */
import { LRUCache } from 'lru-cache'
import { formatHashNix32 } from '../formats/hash.js'
import type { NarInfo } from '../formats/narinfo.js'

/**
 * What a response for the file needs (the HTTP layer keeps its ready-made file description);
 * every field must follow from the NAR's bytes and the path alone.
 */
export interface HotFile {
  readonly bytes: Uint8Array
}

export interface HotFilesOptions {
  /** Upper bound of the cached bytes (file contents plus a per-entry overhead); 0 keeps nothing. */
  readonly maxBytes: number
}

/**
 * Files asked for once, remembered so the second request can admit them: keys only, each counted
 * as a two-byte string plus its LRU entry (~8,000 keys of 100 characters).
 */
const SEEN_BYTES = 2 * 1024 * 1024
const SEEN_ENTRY_BYTES = 64

/** Per-entry bookkeeping (key, headers, LRU node), so many tiny files also respect the bound. */
const ENTRY_OVERHEAD_BYTES = 512

/**
 * Keyed by NarHash and the requested path (before symlinks are resolved): a NAR's bytes never
 * change, so an entry can never go stale or belong to another NAR, even after the NAR was evicted
 * from the disk cache. Only bytes of a NAR whose hash was verified may be put here.
 */
export class HotFiles<F extends HotFile> {
  readonly #cache: LRUCache<string, F>
  /** NarInfos are kept by the lookup's LRU; their nix32 hash is computed once per object. */
  readonly #narKeys = new WeakMap<NarInfo, string>()
  readonly #seen = new LRUCache<string, true>({
    maxSize: SEEN_BYTES,
    sizeCalculation: (_, key) => 2 * key.length + SEEN_ENTRY_BYTES,
  })
  /** Files admitted and being read, with their sizes: memory already taken, though not in the LRU yet. */
  readonly #pending = new Map<string, number>()
  #pendingBytes = 0
  readonly #maxBytes: number

  constructor(options: HotFilesOptions) {
    this.#maxBytes = options.maxBytes
    this.#cache = new LRUCache<string, F>({
      maxSize: Math.max(1, options.maxBytes),
      sizeCalculation: entryBytes,
    })
  }

  /**
   * True, once, when a file of `size` bytes that is not in memory was asked for before: the caller
   * then reads it and set()s it (or abandon()s it). One big download does not push out files that
   * are asked for often; no file takes more than half of the memory, nor do the reads in flight,
   * and the bytes of those reads count against the bound from here on.
   */
  admit(narInfo: NarInfo, segments: readonly string[], size: number): boolean {
    if (size > this.#maxBytes / 2) return false
    const key = this.#key(narInfo, segments)
    if (this.#pending.has(key) || this.#cache.has(key)) return false
    if (!this.#seen.has(key)) {
      this.#seen.set(key, true)
      return false
    }
    // Each admitted read allocates its whole file at once.
    if (this.#pendingBytes + size > this.#maxBytes / 2) return false
    this.#pending.set(key, size)
    this.#pendingBytes += size
    this.#makeRoom(0)
    return true
  }

  /** An admitted file could not be read after all. */
  abandon(narInfo: NarInfo, segments: readonly string[]): void {
    this.#settle(this.#key(narInfo, segments))
  }

  get(narInfo: NarInfo, segments: readonly string[]): F | undefined {
    return this.#cache.get(this.#key(narInfo, segments))
  }

  set(narInfo: NarInfo, segments: readonly string[], file: F): void {
    const key = this.#key(narInfo, segments)
    this.#settle(key)
    const size = entryBytes(file, key)
    // A file larger than the whole bound is simply not kept (lru-cache would refuse it too).
    if (size > this.#maxBytes) return
    this.#makeRoom(size)
    this.#cache.set(key, file)
  }

  /** Drops the least recently used files until `size` more bytes fit beside those being read. */
  #makeRoom(size: number): void {
    while (this.#cache.size > 0 && this.#cache.calculatedSize + this.#pendingBytes + size > this.#maxBytes)
      this.#cache.pop()
  }

  #settle(key: string): void {
    const size = this.#pending.get(key)
    if (size === undefined) return
    this.#pending.delete(key)
    this.#pendingBytes -= size
  }

  /** Bytes held and being read, as counted against the bound. */
  get size(): number {
    return this.#cache.calculatedSize + this.#pendingBytes
  }

  #key(narInfo: NarInfo, segments: readonly string[]): string {
    let narKey = this.#narKeys.get(narInfo)
    if (narKey === undefined) {
      narKey = formatHashNix32(narInfo.narHash)
      this.#narKeys.set(narInfo, narKey)
    }
    // NUL cannot occur in a NAR name, so the key is unambiguous.
    return `${narKey}\0${segments.join('\0')}`
  }
}

function entryBytes(file: HotFile, key: string): number {
  return file.bytes.byteLength + key.length + ENTRY_OVERHEAD_BYTES
}
