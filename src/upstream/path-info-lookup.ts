/**
 * What the HTTP layer and the store ask about store paths, in one place: the narinfo lookup, the
 * upstreams' health and the `.ls` listings (each in its own module), wired together.
 */
import type { Listing } from '../formats/listing.js'
import type { PublicKey } from '../formats/signature.js'
import { DEFAULT_STORE_DIR } from '../formats/store-path.js'
import type { Logger } from '../log.js'
import { UpstreamListings } from './listings.js'
import { NarInfoLookup } from './narinfo-lookup.js'
import type { PathInfo } from './path-info.js'
import type { Upstream } from './upstream.js'
import { type UpstreamHealth, UpstreamHealthTracker } from './upstream-health.js'

// The lookup's vocabulary, for its users.
export type { PathInfo } from './path-info.js'
export { UpstreamsFailedError } from './narinfo-lookup.js'
export { FAILURES_BEFORE_SKIP, type UpstreamHealth } from './upstream-health.js'

export interface PathInfoLookupOptions {
  readonly log: Logger
  /** How long "no upstream has it" is remembered. */
  readonly negativeTtlMs: number
  /** How many narinfos and listings are kept in memory. */
  readonly maxEntries: number
  /** The keys an upstream's narinfos must be signed with; undefined = not checked. */
  readonly trustedKeys: (upstream: Upstream) => readonly PublicKey[] | undefined
  /**
   * `sequential` (default): ask one upstream after the other, in priority order. `parallel`: ask every
   * upstream at once and take the answer of the highest-priority upstream that has a trusted narinfo,
   * as soon as every upstream above it has answered (or failed, or timed out); the requests still
   * running below it are aborted.
   */
  readonly strategy?: 'sequential' | 'parallel' | undefined
  /** The store directory the narinfos must be for (default /nix/store). */
  readonly storeDir?: string | undefined
  /** Called for each narinfo rejected for want of a trusted signature (metrics). */
  readonly onUntrusted?: ((upstream: string) => void) | undefined
  /** Called for each upstream `.ls` that its NAR contradicted (metrics). */
  readonly onListingMismatch?: ((upstream: string) => void) | undefined
}

export class PathInfoLookup {
  readonly #health: UpstreamHealthTracker
  readonly #narInfos: NarInfoLookup
  readonly #listings: UpstreamListings

  constructor(upstreams: readonly Upstream[], options: PathInfoLookupOptions) {
    this.#health = new UpstreamHealthTracker(options.log)
    this.#listings = new UpstreamListings(options)
    this.#narInfos = new NarInfoLookup(upstreams, {
      ...options,
      storeDir: options.storeDir ?? DEFAULT_STORE_DIR,
      health: this.#health,
      parallel: options.strategy === 'parallel',
      alongside: (upstream, hash) => this.#listings.requestEarly(upstream, hash),
    })
  }

  /** The upstreams, highest priority first. */
  get upstreams(): readonly Upstream[] {
    return this.#narInfos.upstreams
  }

  /** Replaces the order (after nix-cache-info was read); answers already cached stay valid. */
  reorder(upstreams: readonly Upstream[]): void {
    this.#narInfos.reorder(upstreams)
  }

  /** Upstreams in priority order with the outcome of their latest request. */
  health(): UpstreamHealth[] {
    return this.#health.report(this.upstreams)
  }

  /** The narinfo of `hash` from the first upstream that has it; undefined when none has it. */
  find(hash: string): Promise<PathInfo | undefined> {
    return this.#narInfos.find(hash)
  }

  /** The answer find() would give now from its cache, without asking any upstream. */
  peek(hash: string): PathInfo | undefined {
    return this.#narInfos.peek(hash)
  }

  /** The upstream's `.ls` listing, or undefined when it has none or it is unusable (then the NAR is the source). */
  listing(info: PathInfo): Promise<Listing | undefined> {
    return this.#listings.listing(info)
  }

  /**
   * The NAR `info` points to failed (reset, wrong hash or size, not a NAR): forget that answer, and
   * ask that upstream last for this path for a while, so the next request gets the path from
   * another upstream if one has it (and from the same one again if none does).
   */
  reportBrokenNar(info: PathInfo): void {
    this.#health.demote(info.upstream, info.storePath.hash)
    this.#narInfos.forget(info.storePath.hash)
    this.#listings.forget(info)
  }

  /** The NAR of `info` contradicted its upstream's `.ls` (`why`): see UpstreamListings.distrust. */
  distrustListing(info: PathInfo, why: string): void {
    this.#listings.distrust(info, why)
  }

  /** The NAR of `info` was verified with `verified` as its listing: see UpstreamListings.confirm. */
  confirmListing(info: PathInfo, verified: Listing): void {
    this.#listings.confirm(info, verified)
  }
}
