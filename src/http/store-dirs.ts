/** Store dirs other than /nix/store that upstreams declare in nix-cache-info: one lookup and route each. */
import type { Context } from 'hono'
import type { Logger } from '../log.js'
import type { HotFiles } from '../store/hot-files.js'
import type { NarStore } from '../store/nar-store.js'
import { PathInfoLookup, type PathInfoLookupOptions } from '../upstream/path-info-lookup.js'
import type { Upstream } from '../upstream/upstream.js'
import type { ReadBuffers } from './read-buffers.js'
import { createStoreRoutes, type HotStoreFile, type StoreRoutes } from './store-route.js'

export interface OtherStoreDirsOptions {
  readonly defaultStoreDir: string
  /** The store dirs the user allows; undefined = every one an upstream declares. */
  readonly allowed: readonly string[] | undefined
  readonly lookup: Omit<PathInfoLookupOptions, 'storeDir'>
  readonly store: NarStore
  readonly hotFiles: HotFiles<HotStoreFile>
  readonly readBuffers: ReadBuffers
  readonly log: Logger
}

export class OtherStoreDirs {
  readonly #options: OtherStoreDirsOptions
  readonly #dirs = new Map<string, { lookup: PathInfoLookup; routes: StoreRoutes }>()

  constructor(options: OtherStoreDirsOptions) {
    this.#options = options
  }

  /** Takes the upstreams of each store dir (in priority order) after nix-cache-info was read. */
  update(byStoreDir: ReadonlyMap<string, Upstream[]>): void {
    const { defaultStoreDir, allowed, log } = this.#options
    for (const [storeDir, list] of byStoreDir) {
      if (storeDir === defaultStoreDir) continue
      if (allowed !== undefined && !allowed.includes(storeDir)) {
        log.error('upstream is for a store dir that is not served (UNNAR_STORE_DIRS)', {
          upstreams: list.map((u) => u.name),
          storeDir,
          served: allowed,
        })
        continue
      }
      const existing = this.#dirs.get(storeDir)
      if (existing !== undefined) {
        existing.lookup.reorder(list)
        continue
      }
      const lookup = new PathInfoLookup(list, { ...this.#options.lookup, storeDir })
      this.#dirs.set(storeDir, {
        lookup,
        routes: createStoreRoutes({
          lookup,
          store: this.#options.store,
          hotFiles: this.#options.hotFiles,
          readBuffers: this.#options.readBuffers,
          log,
          storeDir,
          domain: undefined,
        }),
      })
      log.info('serving another store dir', { storeDir, upstreams: list.map((u) => u.name) })
    }
    // A store dir no upstream declares any more answers 404s rather than disappearing mid-request.
    for (const [storeDir, entry] of this.#dirs) if (!byStoreDir.has(storeDir)) entry.lookup.reorder([])
  }

  lookup(storeDir: string): PathInfoLookup | undefined {
    return this.#dirs.get(storeDir)?.lookup
  }

  /** The route for `path` when it lies in one of these store dirs. */
  route(path: string): ((c: Context) => Promise<Response>) | undefined {
    for (const [storeDir, entry] of this.#dirs) if (path.startsWith(`${storeDir}/`)) return entry.routes.store
    return undefined
  }
}
