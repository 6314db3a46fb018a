/**
 * Prometheus metrics with one registry per server, so several servers in one process (the tests)
 * keep separate counts. Gauges are read from their sources when scraped. The per-request metrics
 * are tallied in request-tally.ts, the rest in prom-client.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import { RequestTally } from './request-tally.js'
import type { Verification } from './http/request-log.js'
import type { NarStoreEvents } from './store/nar-store.js'
import type { UpstreamRequestEvent } from './upstream/instrument.js'
import type { UpstreamHealth } from './upstream/path-info-lookup.js'

export interface MetricSources {
  store(): { usedBytes: number; maxBytes: number; entries: number; downloads: { active: number; queued: number } }
  upstreams(): readonly UpstreamHealth[]
}

export interface Metrics {
  /** The Content-Type of text(). */
  readonly contentType: string
  /** Every metric in Prometheus' text format. */
  text(): Promise<string>
  readonly storeEvents: NarStoreEvents
  /** `verification`: for a file answer, how its bytes were verified (see RequestNotes). */
  request(route: string, status: number, bytes: number, seconds: number, verification?: Verification): void
  upstream(event: UpstreamRequestEvent): void
  /** A request answered from memory before routing (src/http/hot-responses.ts). */
  hotAnswer(): void
  /** A narinfo rejected for want of a trusted signature. */
  untrusted(): void
  /** An upstream `.ls` that its NAR contradicted (it is then not used). */
  listingMismatch(upstream: string): void
  /** Connects the scrape-time gauges to their sources (they exist only after the metrics). */
  watch(sources: MetricSources): void
}

export function createMetrics(): Metrics {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'unnar_' })
  const registers = [registry]
  let sources: MetricSources | undefined

  const requests = new RequestTally()
  // Registered in this order, which is the order of the scraped text.
  const cache = cacheCounters(registers)
  const rejections = rejectionCounters(registers)
  const upstreams = upstreamMetrics(registers)
  scrapedGauges(registers, () => sources)

  return {
    contentType: registry.contentType,
    text: async () => (await registry.metrics()) + requests.render(),
    storeEvents: {
      hit: () => cache.hits.inc(),
      miss: () => cache.misses.inc(),
      coalesced: () => cache.coalesced.inc(),
      evicted: (size) => {
        cache.evictions.inc()
        cache.evictedBytes.inc(size)
      },
      downloadEnded: (result) => {
        cache.downloads.inc({ result })
        if (result === 'verification-failed') rejections.verification.inc({ what: 'nar' })
      },
    },
    request(route, status, sent, seconds, verification) {
      requests.observe(route, status, sent, seconds, verification)
    },
    upstream(event) {
      upstreams.requests.inc({ upstream: event.upstream, kind: event.kind, status: event.status })
      upstreams.latency.observe({ upstream: event.upstream, kind: event.kind }, event.seconds)
      if (event.status === 'error')
        upstreams.errors.inc({ upstream: event.upstream, kind: event.kind, error: event.errorKind ?? 'unknown' })
    },
    hotAnswer() {
      requests.hotAnswer()
    },
    untrusted() {
      rejections.verification.inc({ what: 'narinfo-signature' })
    },
    listingMismatch(upstream) {
      rejections.listingMismatches.inc({ upstream })
    },
    watch(s) {
      sources = s
    },
  }
}

/** What the NAR cache and its downloads do. */
function cacheCounters(registers: Registry[]) {
  return {
    hits: new Counter({ name: 'unnar_cache_hits_total', help: 'Requests whose NAR was cached', registers }),
    misses: new Counter({
      name: 'unnar_cache_misses_total',
      help: 'Requests that started a NAR download',
      registers,
    }),
    coalesced: new Counter({
      name: 'unnar_nar_download_waiters_total',
      help: 'Requests that joined a NAR download already in flight',
      registers,
    }),
    evictions: new Counter({ name: 'unnar_cache_evictions_total', help: 'NARs evicted from the cache', registers }),
    evictedBytes: new Counter({
      name: 'unnar_cache_evicted_bytes_total',
      help: 'Bytes of NARs evicted from the cache',
      registers,
    }),
    downloads: new Counter({
      name: 'unnar_nar_downloads_total',
      help: 'Finished NAR downloads by result',
      labelNames: ['result'],
      registers,
    }),
  }
}

/** What upstreams sent that did not check out. */
function rejectionCounters(registers: Registry[]) {
  return {
    verification: new Counter({
      name: 'unnar_verification_failures_total',
      help: 'NARs or narinfos rejected: hash or size mismatch, or no trusted signature',
      labelNames: ['what'],
      registers,
    }),
    listingMismatches: new Counter({
      name: 'unnar_listing_mismatches_total',
      help: 'Upstream .ls listings contradicted by their NAR (then not used)',
      labelNames: ['upstream'],
      registers,
    }),
  }
}

function upstreamMetrics(registers: Registry[]) {
  return {
    requests: new Counter({
      name: 'unnar_upstream_requests_total',
      help: 'Requests to upstreams',
      labelNames: ['upstream', 'kind', 'status'],
      registers,
    }),
    errors: new Counter({
      name: 'unnar_upstream_errors_total',
      help: 'Failed upstream requests by error kind',
      labelNames: ['upstream', 'kind', 'error'],
      registers,
    }),
    latency: new Histogram({
      name: 'unnar_upstream_request_duration_seconds',
      help: 'Upstream request time, to the end of the body (or the answer, for a miss or an early error)',
      labelNames: ['upstream', 'kind'],
      buckets: [0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    }),
  }
}

/** Gauges read from `current()` when scraped; until watch() gives sources they keep no value. */
function scrapedGauges(registers: Registry[], current: () => MetricSources | undefined): void {
  const gauge = (name: string, help: string, read: (s: MetricSources) => number) =>
    new Gauge({
      name,
      help,
      registers,
      collect() {
        const sources = current()
        if (sources !== undefined) this.set(read(sources))
      },
    })
  gauge('unnar_cache_bytes', 'Bytes of NARs in the cache', (s) => s.store().usedBytes)
  gauge('unnar_cache_max_bytes', 'The cache bound', (s) => s.store().maxBytes)
  gauge('unnar_cache_nars', 'NARs in the cache', (s) => s.store().entries)
  gauge('unnar_nar_downloads_in_flight', 'NAR downloads running', (s) => s.store().downloads.active)
  gauge('unnar_nar_downloads_queued', 'NAR downloads waiting for a download slot', (s) => s.store().downloads.queued)
  new Gauge({
    name: 'unnar_upstream_healthy',
    help: '1 unless the upstream failed its last lookup or is skipped by the circuit breaker',
    labelNames: ['upstream'],
    registers,
    collect() {
      const sources = current()
      if (sources === undefined) return
      this.reset()
      for (const health of sources.upstreams()) this.set({ upstream: health.name }, health.state === 'failing' ? 0 : 1)
    },
  })
}
