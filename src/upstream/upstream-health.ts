/**
 * How each upstream has been doing: a circuit breaker over failed narinfo requests, and the
 * demotion of an upstream whose NAR of a path turned out broken.
 */
import { LRUCache } from 'lru-cache'
import type { Logger } from '../log.js'
import { type Upstream, UpstreamError } from './upstream.js'

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

/** A circuit breaker: after this many failures in a row an upstream is left out for SKIP_MS. */
export const FAILURES_BEFORE_SKIP = 3
export const SKIP_MS = 60_000
/** How long an upstream whose NAR of a path failed is asked last for that path. */
export const BROKEN_NAR_MS = 60_000

export class UpstreamHealthTracker {
  readonly #log: Logger
  readonly #health = new Map<Upstream, UpstreamHealth>()
  /** Upstream.credentialsVersion() when the breaker left the upstream out. */
  readonly #skippedWith = new Map<Upstream, number>()
  /** `<upstream name>\n<hash>` of each recently broken NAR. */
  readonly #brokenNars = new LRUCache<string, true>({ max: 10_000, ttl: BROKEN_NAR_MS })

  constructor(log: Logger) {
    this.#log = log
  }

  /** `upstreams` (in priority order) with the outcome of their latest request. */
  report(upstreams: readonly Upstream[]): UpstreamHealth[] {
    return upstreams.map((u) => this.#health.get(u) ?? { name: u.name, state: 'unknown' })
  }

  /** Why `upstream` is not to be asked now (the breaker is open), or undefined when it may be. */
  skipped(upstream: Upstream): UpstreamError | undefined {
    const health = this.#health.get(upstream)
    if (health?.skippedUntil === undefined || Date.parse(health.skippedUntil) <= Date.now()) return undefined
    // Changed credentials end the skip: the failures may have been their refusal.
    if (this.#skippedWith.get(upstream) !== (upstream.credentialsVersion?.() ?? 0)) return undefined
    return new UpstreamError(
      upstream.name,
      'network',
      `skipped until ${health.skippedUntil} after ${health.failures} failures in a row (last: ${health.lastError})`,
    )
  }

  succeeded(upstream: Upstream): void {
    this.#health.set(upstream, { name: upstream.name, state: 'ok' })
  }

  failed(upstream: Upstream, err: UpstreamError): void {
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

  /** The NAR of `hash` from `upstream` was broken: ask that upstream last for it for BROKEN_NAR_MS. */
  demote(upstream: Upstream, hash: string): void {
    this.#brokenNars.set(brokenKey(upstream, hash), true)
  }

  /** `upstreams` in the order to ask them for `hash`: those that recently sent a broken NAR of it last. */
  order(upstreams: readonly Upstream[], hash: string): Upstream[] {
    const broken = (u: Upstream) => this.#brokenNars.has(brokenKey(u, hash))
    return [...upstreams.filter((u) => !broken(u)), ...upstreams.filter(broken)]
  }
}

function brokenKey(upstream: Upstream, hash: string): string {
  return `${upstream.name}\n${hash}`
}
