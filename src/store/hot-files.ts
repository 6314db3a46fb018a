/** Small files of verified NARs kept in memory, so a hot file costs no path resolution and no read. */
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
  /** Upper bound of the cached bytes (file contents plus a per-entry overhead). */
  readonly maxBytes: number
}

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

  constructor(options: HotFilesOptions) {
    this.#cache = new LRUCache<string, F>({
      maxSize: Math.max(1, options.maxBytes),
      sizeCalculation: (file, key) => file.bytes.byteLength + key.length + ENTRY_OVERHEAD_BYTES,
    })
  }

  get(narInfo: NarInfo, segments: readonly string[]): F | undefined {
    return this.#cache.get(this.#key(narInfo, segments))
  }

  set(narInfo: NarInfo, segments: readonly string[], file: F): void {
    const key = this.#key(narInfo, segments)
    // A file larger than the whole bound is simply not kept (lru-cache would refuse it too).
    if (file.bytes.byteLength + key.length + ENTRY_OVERHEAD_BYTES > this.#cache.maxSize) return
    this.#cache.set(key, file)
  }

  /** Bytes held, as counted against the bound. */
  get size(): number {
    return this.#cache.calculatedSize
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
