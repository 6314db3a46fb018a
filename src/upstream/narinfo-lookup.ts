/**
 * Finds a store path's narinfo across the upstreams: in priority order, one after the other or all
 * at once, cached (found ones until evicted, "not found" for the negative TTL) and coalesced.
 */
import { LRUCache } from 'lru-cache'
import type { Logger } from '../log.js'
import type { NarInfo } from '../formats/narinfo.js'
import { fetchPathInfo, type NarInfoRules } from './narinfo-fetch.js'
import type { PathInfo } from './path-info.js'
import { type Upstream, UpstreamError } from './upstream.js'
import type { UpstreamHealthTracker } from './upstream-health.js'

/** Every upstream failed (none said "not here" while another failed, or all failed). */
export class UpstreamsFailedError extends Error {
  override readonly name = 'UpstreamsFailedError'
  readonly failures: readonly UpstreamError[]
  constructor(what: string, failures: readonly UpstreamError[]) {
    super(`${what}: ${failures.map((f) => f.message).join('; ')}`)
    this.failures = failures
  }
  /** True when every failure was a timeout: the answer is 504 rather than 502. */
  get timedOut(): boolean {
    return this.failures.every((f) => f.kind === 'timeout')
  }
}

export interface NarInfoLookupOptions extends NarInfoRules {
  readonly log: Logger
  /** Whom the breaker skips and who is asked last; told every outcome. */
  readonly health: UpstreamHealthTracker
  /** How long "no upstream has it" is remembered. */
  readonly negativeTtlMs: number
  /** How many narinfos are kept in memory. */
  readonly maxEntries: number
  /** Ask every upstream at once (see PathInfoLookupOptions.strategy) rather than one after the other. */
  readonly parallel: boolean
  /**
   * Called just before the first upstream in the order is asked for `hash` (the early `.ls`); what
   * it returns gets the PathInfo if that upstream has a usable narinfo.
   */
  readonly alongside?: ((upstream: Upstream, hash: string) => (found: PathInfo) => void) | undefined
}

type Found = { readonly info: PathInfo | undefined }

/** Narinfos kept in memory (with maxEntries): ~16,000 of 1 KiB, fewer with long reference lists. */
export const NARINFOS_MEMORY_BYTES = 16 * 1024 * 1024

/** About what a parsed narinfo takes: its strings (as two-byte strings) and ~512 bytes of objects. */
function narInfoMemoryBytes(narInfo: NarInfo): number {
  let chars = narInfo.storePath.length + narInfo.url.length + (narInfo.deriver?.length ?? 0) + (narInfo.ca?.length ?? 0)
  for (const text of narInfo.references) chars += text.length + 16
  for (const text of narInfo.sigs) chars += text.length + 16
  return 512 + 2 * chars
}
type Outcome = { readonly info: PathInfo | undefined } | { readonly error: unknown }

/** One upstream's narinfo request, started at once (eager) or by the first start(). */
interface Ask {
  start(): Promise<Outcome>
  abort(): void
}

export class NarInfoLookup {
  #upstreams: readonly Upstream[]
  readonly #options: NarInfoLookupOptions
  readonly #cache: LRUCache<string, Found>

  constructor(upstreams: readonly Upstream[], options: NarInfoLookupOptions) {
    this.#upstreams = upstreams
    this.#options = options
    // lru-cache's fetch() coalesces concurrent lookups of one key into one upstream round.
    // ignoreFetchAbort: a key evicted or deleted while its lookup runs must not fail the requests
    // waiting for it (lru-cache would reject them with "evicted"/"deleted").
    this.#cache = new LRUCache<string, Found>({
      max: options.maxEntries,
      maxSize: NARINFOS_MEMORY_BYTES,
      sizeCalculation: (found, hash) =>
        hash.length + (found.info === undefined ? 64 : narInfoMemoryBytes(found.info.narInfo)),
      ignoreFetchAbort: true,
      fetchMethod: async (hash, _stale, { options: setOptions }) => {
        const info = await this.#lookup(hash)
        if (info === undefined) setOptions.ttl = options.negativeTtlMs
        return { info }
      },
    })
  }

  /** The upstreams, highest priority first. */
  get upstreams(): readonly Upstream[] {
    return this.#upstreams
  }

  /** Replaces the order (after nix-cache-info was read); answers already cached stay valid. */
  reorder(upstreams: readonly Upstream[]): void {
    this.#upstreams = upstreams
  }

  /** The narinfo of `hash` from the first upstream that has it; undefined when none has it. */
  async find(hash: string): Promise<PathInfo | undefined> {
    return (await this.#cache.fetch(hash))?.info
  }

  /** The answer find() would give now from its cache, without asking any upstream. */
  peek(hash: string): PathInfo | undefined {
    return this.#cache.get(hash)?.info
  }

  /** Drops the cached answer for `hash`: the next find() asks the upstreams again. */
  forget(hash: string): void {
    this.#cache.delete(hash)
  }

  async #lookup(hash: string): Promise<PathInfo | undefined> {
    const failures: UpstreamError[] = []
    // Parallel: every request starts now; the loop below still takes the answers in priority order.
    const order = this.#options.health.order(this.upstreams, hash)
    const asks = order.map((upstream, i) => this.#ask(upstream, hash, i === 0))
    try {
      for (const ask of asks) {
        const outcome = await ask.start()
        if ('error' in outcome) {
          if (!(outcome.error instanceof UpstreamError)) throw outcome.error
          failures.push(outcome.error)
        } else if (outcome.info !== undefined) {
          return outcome.info
        }
      }
    } finally {
      // Upstreams below the winner (or after a bug) are not waited for.
      for (const ask of asks) ask.abort()
    }
    // A path no healthy upstream has is only "not found" when nobody failed: otherwise the
    // failing upstream might have had it.
    if (failures.length > 0) throw new UpstreamsFailedError(`looking up ${hash}`, failures)
    return undefined
  }

  /** Its outcome updates the upstream's health as soon as it is known, unless the request was aborted. */
  #ask(upstream: Upstream, hash: string, first: boolean): Ask {
    const { health, log, parallel } = this.#options
    const skipped = health.skipped(upstream)
    if (skipped !== undefined) return { start: () => Promise.resolve({ error: skipped }), abort: () => {} }
    const controller = parallel ? new AbortController() : undefined
    let outcome: Promise<Outcome> | undefined
    const start = () =>
      (outcome ??= this.#fetch(upstream, hash, controller?.signal, first).then(
        (info) => {
          health.succeeded(upstream)
          return { info }
        },
        (error: unknown) => {
          if (controller?.signal.aborted === true) return { error }
          if (error instanceof UpstreamError) {
            // An untrusted answer is the cache's content, not its health.
            if (error.kind !== 'untrusted') health.failed(upstream, error)
            log.warn('upstream failed', { upstream: upstream.name, hash, error: error.message })
          }
          return { error }
        },
      ))
    if (parallel) void start()
    return {
      start,
      abort: () => {
        // Aborting a request that has settled is harmless.
        if (outcome !== undefined) controller?.abort()
      },
    }
  }

  async #fetch(
    upstream: Upstream,
    hash: string,
    signal: AbortSignal | undefined,
    first: boolean,
  ): Promise<PathInfo | undefined> {
    // Started before the narinfo request, so both go out at once.
    const keep = first ? this.#options.alongside?.(upstream, hash) : undefined
    const info = await fetchPathInfo(upstream, hash, this.#options, signal)
    if (info !== undefined) keep?.(info)
    return info
  }
}
