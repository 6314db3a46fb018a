/** Finds a store path's narinfo (and `.ls`) in the prioritized upstreams, with caching and coalescing. */
import { LRUCache } from 'lru-cache'
import { checkListingFits, maxListingBytes, parseListing, type Listing, type ListingNode } from '../formats/listing.js'
import { parseNarInfo, type NarInfo } from '../formats/narinfo.js'
import { isContentAddressed, verifyNarInfo, type PublicKey } from '../formats/signature.js'
import { DEFAULT_STORE_DIR, parseStorePath, type StorePath } from '../formats/store-path.js'
import type { Logger } from '../log.js'
import { readSmallBody } from './read-body.js'
import { keyProblem } from './cache-key.js'
import { type Upstream, UpstreamError } from './upstream.js'

/** What one upstream knows about one store path. */
export interface PathInfo {
  readonly storePath: StorePath
  readonly narInfo: NarInfo
  readonly upstream: Upstream
  /** The NAR's key relative to that upstream's root (a plain relative path, see cache-key.ts; the upstream checks where it leads again on every request). */
  readonly narKey: string
  /** Which trusted key signed it, `content-address`, or undefined when the upstream is not checked. */
  readonly trustedBy: string | undefined
}

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

export const MAX_NARINFO_BYTES = 1024 * 1024
export const MAX_LISTING_BYTES = 64 * 1024 * 1024
/**
 * A `.ls` requested beside its narinfo is kept at most this big (~3,000 files; bigger ones are
 * asked for again with the limit their NarSize allows), this many at once, for this long: a burst
 * of lookups whose listings nobody reads holds at most PREFETCH_MAX × PREFETCH_MAX_BYTES.
 */
export const PREFETCH_MAX_BYTES = 256 * 1024
const PREFETCH_MAX = 64
const PREFETCH_TTL_MS = 10_000

/**
 * An early `.ls` answer: its body, undefined when there is none, `too-big` when its Content-Length
 * is over PREFETCH_MAX_BYTES, `retry` when the request failed (listing() asks again, and judges
 * that answer).
 */
type EarlyListing = Buffer | undefined | 'too-big' | 'retry'

/** What the landing page and `/api/upstreams` show about one upstream, from its last narinfo request. */
export interface UpstreamHealth {
  readonly name: string
  readonly state: 'ok' | 'failing' | 'unknown'
  readonly lastError?: string
  /** Consecutive failed lookups; at FAILURES_BEFORE_SKIP the upstream is skipped for a while. */
  readonly failures?: number
  /** ISO time until which the upstream is skipped (like Nix disabling a failing substituter). */
  readonly skippedUntil?: string
}

/** How long an upstream whose NAR of a path failed is asked last for that path. */
export const BROKEN_NAR_MS = 60_000

function brokenKey(upstream: Upstream, hash: string): string {
  return `${upstream.name}\n${hash}`
}

/** A circuit breaker: after this many failures in a row an upstream is left out for SKIP_MS. */
export const FAILURES_BEFORE_SKIP = 3
export const SKIP_MS = 60_000

type Found = { readonly info: PathInfo | undefined }
type ListingFound = { readonly listing: Listing | undefined }

export class PathInfoLookup {
  #upstreams: readonly Upstream[]
  readonly #log: Logger
  readonly #narInfos: LRUCache<string, Found>
  readonly #listings: LRUCache<PathInfo, ListingFound>
  readonly #negativeTtlMs: number
  readonly #trustedKeys: PathInfoLookupOptions['trustedKeys']
  readonly #onUntrusted: PathInfoLookupOptions['onUntrusted']
  readonly #onListingMismatch: PathInfoLookupOptions['onListingMismatch']
  readonly #storeDir: string
  readonly #brokenNars = new LRUCache<string, true>({ max: 10_000, ttl: BROKEN_NAR_MS })
  readonly #health = new Map<Upstream, UpstreamHealth>()
  /** Upstream.credentialsVersion() when the breaker left the upstream out. */
  readonly #skippedWith = new Map<Upstream, number>()
  readonly #parallel: boolean
  /**
   * `.ls` answers requested beside their narinfo, waiting for listing() (see #fetchNarInfo). One
   * that is never asked for (its NAR is on disk, the request was a 404) is dropped soon.
   */
  readonly #prefetched = new LRUCache<PathInfo, Promise<EarlyListing>>({
    max: PREFETCH_MAX,
    ttl: PREFETCH_TTL_MS,
    ttlAutopurge: true,
  })

  constructor(upstreams: readonly Upstream[], options: PathInfoLookupOptions) {
    this.#upstreams = upstreams
    this.#parallel = options.strategy === 'parallel'
    this.#log = options.log
    this.#negativeTtlMs = options.negativeTtlMs
    this.#trustedKeys = options.trustedKeys
    this.#onUntrusted = options.onUntrusted
    this.#onListingMismatch = options.onListingMismatch
    this.#storeDir = options.storeDir ?? DEFAULT_STORE_DIR
    // lru-cache's fetch() coalesces concurrent lookups of one key into one upstream round.
    // ignoreFetchAbort: a key evicted or deleted while its lookup runs must not fail the requests
    // waiting for it (lru-cache would reject them with "evicted"/"deleted").
    this.#narInfos = new LRUCache<string, Found>({
      max: options.maxEntries,
      ignoreFetchAbort: true,
      fetchMethod: async (hash, _stale, { options: setOptions }) => {
        const info = await this.#lookup(hash)
        if (info === undefined) setOptions.ttl = this.#negativeTtlMs
        return { info }
      },
    })
    this.#listings = new LRUCache<PathInfo, ListingFound>({
      max: options.maxEntries,
      ignoreFetchAbort: true,
      fetchMethod: async (info, _stale, { options: setOptions }) => {
        const { listing, upstreamFailed } = await this.#fetchListing(info)
        // An upstream that failed may well answer next time: forget that soon, like a "not found".
        if (upstreamFailed) setOptions.ttl = this.#negativeTtlMs
        return { listing }
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

  /** Upstreams in priority order with the outcome of their latest request. */
  health(): UpstreamHealth[] {
    return this.upstreams.map((u) => this.#health.get(u) ?? { name: u.name, state: 'unknown' })
  }

  /**
   * The NAR `info` points to failed (reset, wrong hash or size, not a NAR): forget that answer, and
   * ask that upstream last for this path for a while, so the next request gets the path from
   * another upstream if one has it (and from the same one again if none does).
   */
  reportBrokenNar(info: PathInfo): void {
    this.#brokenNars.set(brokenKey(info.upstream, info.storePath.hash), true)
    this.#narInfos.delete(info.storePath.hash)
    this.#listings.delete(info)
  }

  /**
   * The NAR of `info` contradicted its upstream's `.ls` (`why`): the NAR wins, so the listing is
   * no longer used for this path, and the upstream gets a counted fault.
   */
  distrustListing(info: PathInfo, why: string): void {
    this.#log.warn('upstream listing disagrees with its NAR; using the NAR', {
      upstream: info.upstream.name,
      storePath: info.narInfo.storePath,
      error: why,
    })
    this.#onListingMismatch?.(info.upstream.name)
    this.#listings.set(info, { listing: undefined })
  }

  /**
   * The NAR of `info` was verified, with `verified` as its listing: an upstream `.ls` of it in use
   * that says otherwise (an entry, type, size, mode, target or offset) is replaced by that listing.
   */
  confirmListing(info: PathInfo, verified: Listing): void {
    const listed = this.#listings.peek(info)?.listing
    if (listed === undefined || sameNode(listed.root, verified.root)) return
    this.distrustListing(info, 'the listing differs from the NAR')
    this.#listings.set(info, { listing: verified })
  }

  /** The narinfo of `hash` from the first upstream that has it; undefined when none has it. */
  async find(hash: string): Promise<PathInfo | undefined> {
    const found = await this.#narInfos.fetch(hash)
    return found?.info
  }

  /** The answer find() would give now from its cache, without asking any upstream. */
  peek(hash: string): PathInfo | undefined {
    return this.#narInfos.get(hash)?.info
  }

  /** The upstream's `.ls` listing, or undefined when it has none or it is unusable (then the NAR is the source). */
  async listing(info: PathInfo): Promise<Listing | undefined> {
    const found = await this.#listings.fetch(info)
    return found?.listing
  }

  async #lookup(hash: string): Promise<PathInfo | undefined> {
    const failures: UpstreamError[] = []
    // Parallel: every request starts now; the loop below still takes the answers in priority order.
    const broken = (u: Upstream) => this.#brokenNars.has(brokenKey(u, hash))
    const order = [...this.upstreams.filter((u) => !broken(u)), ...this.upstreams.filter(broken)]
    const asks = order.map((upstream, i) => this.#ask(upstream, hash, this.#parallel, i === 0))
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

  /**
   * One upstream's narinfo request, started at once (`eager`) or by the first start(). Its outcome
   * updates the upstream's health as soon as it is known, unless the request was aborted.
   */
  #ask(
    upstream: Upstream,
    hash: string,
    eager: boolean,
    withListing: boolean,
  ): { start(): Promise<{ info: PathInfo | undefined } | { error: unknown }>; abort(): void } {
    const health = this.#health.get(upstream)
    // Skipped, unless its credentials changed since: the failures may have been their refusal.
    if (
      health?.skippedUntil !== undefined &&
      Date.parse(health.skippedUntil) > Date.now() &&
      this.#skippedWith.get(upstream) === (upstream.credentialsVersion?.() ?? 0)
    ) {
      const error = new UpstreamError(
        upstream.name,
        'network',
        `skipped until ${health.skippedUntil} after ${health.failures} failures in a row (last: ${health.lastError})`,
      )
      return { start: () => Promise.resolve({ error }), abort: () => {} }
    }
    const controller = eager ? new AbortController() : undefined
    let outcome: Promise<{ info: PathInfo | undefined } | { error: unknown }> | undefined
    const start = () =>
      (outcome ??= this.#fetchNarInfo(upstream, hash, controller?.signal, withListing).then(
        (info) => {
          this.#health.set(upstream, { name: upstream.name, state: 'ok' })
          return { info }
        },
        (error: unknown) => {
          if (controller?.signal.aborted === true) return { error }
          if (error instanceof UpstreamError) {
            // An untrusted answer is the cache's content, not its health.
            if (error.kind !== 'untrusted') this.#recordFailure(upstream, error)
            this.#log.warn('upstream failed', { upstream: upstream.name, hash, error: error.message })
          }
          return { error }
        },
      ))
    if (eager) void start()
    return {
      start,
      abort: () => {
        if (outcome === undefined) return
        // Aborting a request that has settled is harmless.
        controller?.abort()
      },
    }
  }

  #recordFailure(upstream: Upstream, err: UpstreamError): void {
    const failures = (this.#health.get(upstream)?.failures ?? 0) + 1
    // Every FAILURES_BEFORE_SKIP-th failure in a row (after a skip, the next ones count on from there).
    const skip = failures % FAILURES_BEFORE_SKIP === 0
    if (skip) {
      this.#log.warn('skipping a failing upstream', { upstream: upstream.name, failures, seconds: SKIP_MS / 1000 })
      this.#skippedWith.set(upstream, upstream.credentialsVersion?.() ?? 0)
    }
    this.#health.set(upstream, {
      name: upstream.name,
      state: 'failing',
      lastError: err.message,
      failures,
      ...(skip ? { skippedUntil: new Date(Date.now() + SKIP_MS).toISOString() } : {}),
    })
  }

  /**
   * `withListing`: the `.ls` is requested at the same time, from the same upstream (the one asked
   * first), since nearly every lookup is followed by listing() and the key needs only the hash: a
   * cold path then costs one round trip to the upstream before its NAR, not two. When the narinfo is
   * not there, that answer is read and dropped rather than aborted, which would close a kept-alive
   * connection.
   */
  async #fetchNarInfo(
    upstream: Upstream,
    hash: string,
    signal?: AbortSignal,
    withListing = false,
  ): Promise<PathInfo | undefined> {
    const key = `${hash}.narinfo`
    const listingBody = withListing ? this.#readEarlyListing(upstream, hash) : undefined
    const res = await upstream.get(key, signal)
    if (res === undefined) return undefined
    const text = (await readSmallBody(res, MAX_NARINFO_BYTES, upstream.name, key)).toString('utf8')
    let narInfo: NarInfo
    let storePath: StorePath
    try {
      narInfo = parseNarInfo(text)
      storePath = parseStorePath(narInfo.storePath, this.#storeDir)
    } catch (err) {
      throw new UpstreamError(upstream.name, 'bad-response', `invalid ${key}: ${(err as Error).message}`, {
        cause: err,
      })
    }
    if (storePath.hash !== hash) {
      throw new UpstreamError(upstream.name, 'bad-response', `${key} describes another path (${narInfo.storePath})`)
    }
    // Refused before the NAR is asked for: its signature (if any) does not cover URL.
    const problem = keyProblem(narInfo.url)
    if (problem !== undefined) {
      throw new UpstreamError(
        upstream.name,
        'bad-response',
        `${key} has a URL outside the cache (${JSON.stringify(narInfo.url.slice(0, 200))}: ${problem})`,
      )
    }
    const info: PathInfo = {
      storePath,
      narInfo,
      upstream,
      narKey: narInfo.url,
      trustedBy: this.#checkTrust(upstream, narInfo, key),
    }
    if (listingBody !== undefined) this.#prefetched.set(info, listingBody)
    return info
  }

  /** Nix's rule: one valid signature by a trusted key, or a content address that recomputes. */
  #checkTrust(upstream: Upstream, narInfo: NarInfo, key: string): string | undefined {
    const keys = this.#trustedKeys(upstream)
    if (keys === undefined) return undefined
    const signer = verifyNarInfo(narInfo, keys, this.#storeDir)
    if (signer !== undefined) return signer
    if (isContentAddressed(narInfo, this.#storeDir)) return 'content-address'
    this.#onUntrusted?.(upstream.name)
    throw new UpstreamError(
      upstream.name,
      'untrusted',
      `${key} has no trusted signature (trusted keys: ${keys.map((k) => k.name).join(', ')})`,
    )
  }

  /** The (decoded) body of the upstream's `.ls`, or undefined when it has none. */
  async #readEarlyListing(upstream: Upstream, hash: string): Promise<EarlyListing> {
    try {
      const res = await upstream.get(`${hash}.ls`)
      if (res === undefined) return undefined
      if (res.size !== undefined && res.size > PREFETCH_MAX_BYTES) {
        res.body.destroy()
        return 'too-big'
      }
      return await readSmallBody(res, PREFETCH_MAX_BYTES, upstream.name, `${hash}.ls`)
    } catch {
      return 'retry'
    }
  }

  async #readListing(upstream: Upstream, hash: string, maxBytes: number): Promise<Buffer | undefined> {
    const key = `${hash}.ls`
    const res = await upstream.get(key)
    return res === undefined ? undefined : readSmallBody(res, maxBytes, upstream.name, key)
  }

  /** The upstream's `.ls`, or undefined; `upstreamFailed` when that is for now only (a timeout, a 5xx, a reset). */
  async #fetchListing(info: PathInfo): Promise<{ listing: Listing | undefined; upstreamFailed: boolean }> {
    const key = `${info.storePath.hash}.ls`
    const maxBytes = Math.min(MAX_LISTING_BYTES, maxListingBytes(info.narInfo.narSize))
    const prefetched = this.#prefetched.get(info)
    this.#prefetched.delete(info)
    try {
      const early = prefetched === undefined ? 'retry' : await prefetched
      // Over the prefetch limit and the NarSize limit alike: no need to ask again to refuse it.
      if (early === 'too-big' && maxBytes <= PREFETCH_MAX_BYTES)
        throw new UpstreamError(info.upstream.name, 'bad-response', `${key} is over the ${maxBytes}-byte limit`)
      const body =
        early === 'retry' || early === 'too-big'
          ? await this.#readListing(info.upstream, info.storePath.hash, maxBytes)
          : early
      if (body === undefined) return { listing: undefined, upstreamFailed: false }
      // A prefetched body was read before the narinfo said how big the NAR is.
      if (body.length > maxBytes)
        throw new UpstreamError(info.upstream.name, 'bad-response', `${key} is over the ${maxBytes}-byte limit`)
      const listing = parseListing(body.toString('utf8'))
      checkListingFits(listing, info.narInfo.narSize)
      return { listing, upstreamFailed: false }
    } catch (err) {
      // A broken listing only costs speed: the NAR itself is the authority.
      this.#log.warn('ignoring unusable listing', { upstream: info.upstream.name, key, error: err })
      return { listing: undefined, upstreamFailed: err instanceof UpstreamError && err.kind !== 'bad-response' }
    }
  }
}

/** Whether a `.ls` node says what the NAR's own says (its offsets, where it has any, included). */
function sameNode(listed: ListingNode, actual: ListingNode): boolean {
  switch (listed.type) {
    case 'regular':
      return (
        actual.type === 'regular' &&
        listed.size === actual.size &&
        listed.executable === actual.executable &&
        (listed.narOffset === undefined || listed.narOffset === actual.narOffset)
      )
    case 'symlink':
      return actual.type === 'symlink' && listed.target === actual.target
    case 'directory':
      if (actual.type !== 'directory' || listed.entries.size !== actual.entries.size) return false
      for (const [name, node] of listed.entries) {
        const other = actual.entries.get(name)
        if (other === undefined || !sameNode(node, other)) return false
      }
      return true
  }
}
