import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Counter, Histogram, Registry } from 'prom-client'
import { DURATION_BUCKETS, RequestTally } from '../src/request-tally.js'

/** Sample lines (no comments) of a Prometheus text, sorted, for an order-insensitive comparison. */
const samples = (text: string) =>
  text
    .split('\n')
    .filter((l) => l !== '' && !l.startsWith('#'))
    .sort()

const OBSERVATIONS: [route: string, status: number, bytes: number, seconds: number][] = [
  ['store', 200, 4300, 0.0004],
  ['store', 200, 1000, 0.001],
  ['store', 404, 250, 0.0051],
  ['store', 200, 9_000_000, 42],
  ['/healthz', 200, 120, 0.7],
]

describe('RequestTally', () => {
  it('writes the same samples as prom-client given the same observations', async () => {
    const registry = new Registry()
    const registers = [registry]
    const requests = new Counter({
      name: 'unnar_http_requests_total',
      help: 'x',
      labelNames: ['route', 'status'],
      registers,
    })
    const duration = new Histogram({
      name: 'unnar_http_request_duration_seconds',
      help: 'x',
      labelNames: ['route'],
      buckets: [...DURATION_BUCKETS],
      registers,
    })
    const bytes = new Counter({ name: 'unnar_http_response_bytes_total', help: 'x', labelNames: ['route'], registers })
    const hot = new Counter({ name: 'unnar_hot_responses_total', help: 'x', registers })
    const tally = new RequestTally()
    for (const [route, status, sent, seconds] of OBSERVATIONS) {
      requests.inc({ route, status })
      duration.observe({ route }, seconds)
      bytes.inc({ route }, sent)
      tally.observe(route, status, sent, seconds)
    }
    hot.inc()
    hot.inc()
    tally.hotAnswer()
    tally.hotAnswer()
    assert.deepEqual(samples(tally.render()), samples(await registry.metrics()))
  })

  it('declares every metric once, with its type, before any request', () => {
    const text = new RequestTally().render()
    for (const [name, type] of [
      ['unnar_http_requests_total', 'counter'],
      ['unnar_http_request_duration_seconds', 'histogram'],
      ['unnar_http_response_bytes_total', 'counter'],
      ['unnar_hot_responses_total', 'counter'],
    ]) {
      assert.equal(text.split('\n').filter((l) => l === `# TYPE ${name} ${type}`).length, 1, name)
    }
    assert.deepEqual(samples(text), ['unnar_hot_responses_total 0'])
    assert.ok(text.endsWith('\n'))
  })

  it('escapes a label value the text format could not hold as is', () => {
    const tally = new RequestTally()
    tally.observe('a"b\\c\nd', 200, 1, 0)
    assert.ok(tally.render().includes('unnar_http_requests_total{route="a\\"b\\\\c\\nd",status="200"} 1'))
  })
})
