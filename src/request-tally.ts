/**
 * The HTTP request metrics, kept in plain numbers and written in Prometheus' text format when
 * scraped. prom-client hashes and validates the label object of every inc() and observe(); on the
 * hot-file lane that cost 12-20% of the request rate (bench/ "hot small file"), so requests are tallied here
 * with a map lookup and a few additions instead, and prom-client keeps the rarer metrics.
 */

/** Upper bounds of the duration buckets, in seconds. */
export const DURATION_BUCKETS: readonly number[] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30]

interface RouteTally {
  readonly byStatus: Map<number, number>
  bytes: number
  /** Requests per bucket, not cumulative; one more slot for those above the last bound. */
  readonly buckets: number[]
  seconds: number
  count: number
}

export class RequestTally {
  readonly #routes = new Map<string, RouteTally>()
  #hotAnswers = 0

  /** File answers by how their bytes were verified (see RequestNotes.verification). */
  readonly #verifications = new Map<string, number>()

  observe(route: string, status: number, bytes: number, seconds: number, verification?: string): void {
    if (verification !== undefined)
      this.#verifications.set(verification, (this.#verifications.get(verification) ?? 0) + 1)
    let tally = this.#routes.get(route)
    if (tally === undefined) {
      tally = {
        byStatus: new Map(),
        bytes: 0,
        buckets: new Array<number>(DURATION_BUCKETS.length + 1).fill(0),
        seconds: 0,
        count: 0,
      }
      this.#routes.set(route, tally)
    }
    tally.byStatus.set(status, (tally.byStatus.get(status) ?? 0) + 1)
    tally.bytes += bytes
    tally.seconds += seconds
    tally.count++
    let bucket = 0
    while (bucket < DURATION_BUCKETS.length && seconds > DURATION_BUCKETS[bucket]!) bucket++
    tally.buckets[bucket]!++
  }

  /** A request answered from memory before routing (src/http/hot-responses.ts). */
  hotAnswer(): void {
    this.#hotAnswers++
  }

  /** The metrics in Prometheus' text format (0.0.4), one `# HELP` and `# TYPE` per metric. */
  render(): string {
    const routes = [...this.#routes]
    const lines = [
      '# HELP unnar_http_requests_total HTTP requests by route and status',
      '# TYPE unnar_http_requests_total counter',
      ...routes.flatMap(([route, t]) =>
        [...t.byStatus].map(
          ([status, n]) => `unnar_http_requests_total{route="${escapeLabel(route)}",status="${status}"} ${n}`,
        ),
      ),
      '# HELP unnar_http_request_duration_seconds Time from request to the end of the response',
      '# TYPE unnar_http_request_duration_seconds histogram',
      ...routes.flatMap(([route, t]) =>
        histogramLines('unnar_http_request_duration_seconds', `route="${escapeLabel(route)}"`, t),
      ),
      '# HELP unnar_http_response_bytes_total Bytes written to clients (headers included)',
      '# TYPE unnar_http_response_bytes_total counter',
      ...routes.map(([route, t]) => `unnar_http_response_bytes_total{route="${escapeLabel(route)}"} ${t.bytes}`),
      '# HELP unnar_hot_responses_total Requests for hot small files answered from memory before routing',
      '# TYPE unnar_hot_responses_total counter',
      `unnar_hot_responses_total ${this.#hotAnswers}`,
      '# HELP unnar_file_responses_total File answers by verification: verified (before the first byte), held (last byte waited for it), unverified (stream mode)',
      '# TYPE unnar_file_responses_total counter',
      ...[...this.#verifications].map(
        ([verification, n]) => `unnar_file_responses_total{verification="${escapeLabel(verification)}"} ${n}`,
      ),
    ]
    return lines.join('\n') + '\n'
  }
}

function histogramLines(name: string, labels: string, t: RouteTally): string[] {
  let cumulative = 0
  const lines = DURATION_BUCKETS.map((bound, i) => {
    cumulative += t.buckets[i]!
    return `${name}_bucket{le="${bound}",${labels}} ${cumulative}`
  })
  lines.push(
    `${name}_bucket{le="+Inf",${labels}} ${t.count}`,
    `${name}_sum{${labels}} ${t.seconds}`,
    `${name}_count{${labels}} ${t.count}`,
  )
  return lines
}

/** A label value as the text format needs it (routes are fixed names; this keeps any name valid). */
function escapeLabel(value: string): string {
  return value.replace(/[\\"\n]/g, (c) => (c === '\n' ? '\\n' : `\\${c}`))
}
