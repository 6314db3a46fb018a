/** HotResponses alone, in front of a tiny hono app: what it keeps, for whom, and when it lets go. */
import assert from 'node:assert/strict'
import http, { createServer, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, beforeEach, describe, it } from 'node:test'
import { getRequestListener } from '@hono/node-server'
import { Hono } from 'hono'
import { HotResponses } from '../../src/http/hot-responses.js'
import { createRequestReporter, type RequestRecord } from '../../src/http/request-log.js'
import { createLogger } from '../../src/log.js'
import { createMetrics } from '../../src/metrics.js'
import { rawRequest } from '../helpers/raw-http.js'
import { eventually } from '../helpers/wait.js'

describe('HotResponses', () => {
  let server: Server
  let url: string
  let lane: HotResponses
  let appCalls: number
  let current: boolean
  let shared: number
  /** Requests the lane took (answered or held back), and the server side of each request by id. */
  let taken: number
  const responses = new Map<string, ServerResponse>()
  /** Holds every `/slow/` answer until the test opens it. */
  let open: () => void
  let gate: Promise<void>
  const logged: RequestRecord[] = []

  const start = (options: { maxBytes?: number; keyByHost?: boolean } = {}) => {
    const reporter = createRequestReporter(createLogger('silent'), createMetrics())
    lane = new HotResponses({
      reporter: { ...reporter, report: (record) => logged.push(record) },
      maxBytes: options.maxBytes ?? 1024 * 1024,
      maxUrlLength: 100,
      keyByHost: options.keyByHost ?? false,
      onShared: () => shared++,
    })
    const app = new Hono()
    app.onError((_err, c) => c.text('failed', 500))
    // As the store route does: the first of identical GETs leads; small 200s are shared.
    app.get('/slow/*', async (c) => {
      appCalls++
      const lead = lane.lead(c, 'store')
      try {
        await gate
        if (c.req.path.includes('fail')) throw new Error('the app failed')
        const body = new TextEncoder().encode(`slow ${c.req.path} ${appCalls}`)
        const res = c.body(body, c.req.path.includes('missing') ? 404 : 200, { 'Content-Length': String(body.length) })
        lead?.settle(
          c.req.path.includes('alone')
            ? undefined
            : { response: res, body, route: 'store', notes: { cache: 'miss' }, current: () => true },
        )
        return res
      } finally {
        lead?.settle()
      }
    })
    app.get('*', (c) => {
      appCalls++
      const body = new TextEncoder().encode(`body of ${c.req.path} for ${c.req.header('host') ?? ''}`)
      const status = c.req.path.startsWith('/missing') ? 404 : 200
      const res = c.body(body, status, { 'Content-Length': String(body.length), 'X-Request-Id': 'from-app' })
      lane.remember(c, res, body, { route: 'store', notes: { cache: 'hit' }, current: () => current })
      return res
    })
    const listener = getRequestListener(app.fetch)
    server = createServer((req, res) => {
      responses.set(String(req.headers['x-request-id']), res)
      if (lane.serve(req, res, (r, s) => void listener(r, s))) taken++
      else void listener(req, res)
    })
    return new Promise<void>((resolve) =>
      server.listen(0, '127.0.0.1', () => {
        url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
        resolve()
      }),
    )
  }
  const stop = () => new Promise<void>((resolve) => server.close(() => resolve()))

  beforeEach(() => {
    appCalls = 0
    current = true
    shared = 0
    taken = 0
    responses.clear()
    logged.length = 0
    gate = new Promise((resolve) => (open = resolve))
  })

  /** Starts the first request for `path`, then `n` more once the app is working on it. */
  const herd = async (path: string, n: number, headers: Record<string, string>[] = []) => {
    const first = rawRequest(url + path)
    await eventually(() => appCalls === 1, 'the first request at the app')
    const before = taken
    const rest = Array.from({ length: n }, (_, i) =>
      rawRequest(url + path, { headers: { 'X-Request-Id': `follower-${i}`, ...headers[i] } }),
    )
    await eventually(() => taken === before + n, `${n} requests held back by the lane`)
    return { first, rest }
  }

  describe('identical GETs while the first is answered', () => {
    before(() => start())
    after(stop)

    it("hold back, then get the first answer's bytes with their own request ids", async () => {
      const { first, rest } = await herd('/slow/a', 5)
      assert.equal(appCalls, 1, 'the others wait instead of reaching the app')
      open()
      const answers = await Promise.all([first, ...rest])
      assert.equal(appCalls, 1)
      for (const answer of answers) {
        assert.equal(answer.status, 200)
        assert.equal(answer.body.toString(), 'slow /slow/a 1')
      }
      assert.deepEqual(
        answers.slice(1).map((a) => a.headers['x-request-id']),
        ['follower-0', 'follower-1', 'follower-2', 'follower-3', 'follower-4'],
      )
      assert.equal(shared, 5)
      assert.deepEqual(
        logged.map((r) => [r.id, r.status, r.route, r.notes.cache, r.aborted]).sort(),
        [0, 1, 2, 3, 4].map((i) => [`follower-${i}`, 200, 'store', 'miss', false]),
      )
    })

    it('go to the app when the first answer is not one to share (an error status, a body not in memory, a failure)', async () => {
      for (const path of ['/slow/missing', '/slow/alone', '/slow/fail']) {
        appCalls = 0
        gate = new Promise((resolve) => (open = resolve))
        const { first, rest } = await herd(path, 3)
        assert.equal(appCalls, 1, path)
        open()
        const answers = await Promise.all([first, ...rest])
        assert.equal(appCalls, 4, `${path}: each asked the app`)
        assert.deepEqual(
          new Set(answers.map((a) => a.status)),
          new Set([path === '/slow/alone' ? 200 : path === '/slow/missing' ? 404 : 500]),
          path,
        )
      }
      assert.equal(shared, 0)
    })

    it('are not held when they differ: another Accept-Encoding, a Range, a validator, HEAD', async () => {
      const first = rawRequest(`${url}/slow/b`)
      await eventually(() => appCalls === 1, 'the first request at the app')
      const others = [
        rawRequest(`${url}/slow/b`, { headers: { 'Accept-Encoding': 'br' } }),
        rawRequest(`${url}/slow/b`, { headers: { Range: 'bytes=0-1' } }),
        rawRequest(`${url}/slow/b`, { headers: { 'If-None-Match': '"x"' } }),
        rawRequest(`${url}/slow/b`, { method: 'HEAD' }),
      ]
      await eventually(() => appCalls === 5, 'each at the app while the first still waits')
      open()
      await Promise.all([first, ...others])
      assert.equal(shared, 0)
    })

    it('log a client that left while waiting, and answer the others', async () => {
      const { first, rest } = await herd('/slow/c', 2)
      const before = taken
      const leaving = http.get(`${url}/slow/c`, { headers: { 'X-Request-Id': 'leaver' } }, () =>
        assert.fail('answered'),
      )
      leaving.on('error', () => {})
      await eventually(() => taken === before + 1, 'the leaver held back by the lane')
      const left = new Promise((resolve) => responses.get('leaver')!.once('close', resolve))
      leaving.destroy()
      await left // the server saw it go
      open()
      const answers = await Promise.all([first, ...rest])
      assert.ok(answers.every((a) => a.status === 200 && a.body.toString() === 'slow /slow/c 1'))
      const leaver = logged.find((r) => r.id === 'leaver')
      assert.equal(leaver?.aborted, true)
      assert.equal(leaver?.bytes, 0)
      assert.equal(shared, 2)
    })
  })

  describe('keyed by URL and Accept-Encoding', () => {
    before(() => start())
    after(stop)

    it('answers the second identical GET itself, with the same bytes and its own request id', async () => {
      const first = await rawRequest(`${url}/a?x=1`)
      const second = await rawRequest(`${url}/a?x=1`, { headers: { 'X-Request-Id': 'mine' } })
      assert.equal(appCalls, 1)
      assert.equal(second.body.toString(), first.body.toString())
      assert.equal(second.headers['content-length'], first.headers['content-length'])
      assert.equal(second.headers['x-request-id'], 'mine')
      assert.equal(logged.length, 1)
      assert.equal(logged[0]!.id, 'mine')
      assert.equal(logged[0]!.path, '/a')
      assert.equal(logged[0]!.status, 200)
    })

    it('asks the app for another query, another Accept-Encoding, a Range or a validator', async () => {
      await rawRequest(`${url}/b`)
      await rawRequest(`${url}/b?other`)
      await rawRequest(`${url}/b`, { headers: { 'Accept-Encoding': 'br' } })
      await rawRequest(`${url}/b`, { headers: { Range: 'bytes=0-1' } })
      await rawRequest(`${url}/b`, { headers: { 'If-None-Match': '"x"' } })
      await rawRequest(`${url}/b`, { method: 'HEAD' })
      assert.equal(appCalls, 6)
      await rawRequest(`${url}/b`)
      assert.equal(appCalls, 6, 'the plain GET was kept')
    })

    it('keeps nothing but complete 200 answers', async () => {
      await rawRequest(`${url}/missing`)
      await rawRequest(`${url}/missing`)
      assert.equal(appCalls, 2)
    })

    it('lets go of an answer once the narinfo it came from is no longer current', async () => {
      await rawRequest(`${url}/c`)
      await rawRequest(`${url}/c`)
      assert.equal(appCalls, 1)
      current = false
      await rawRequest(`${url}/c`)
      assert.equal(appCalls, 2)
    })

    it('leaves over-long request targets to the app', async () => {
      const long = `/${'d'.repeat(150)}`
      await rawRequest(url + long)
      await rawRequest(url + long)
      assert.equal(appCalls, 2)
    })
  })

  describe('bounded and keyed by Host', () => {
    before(() => start({ maxBytes: 2048, keyByHost: true }))
    after(stop)

    it('asks the app again for another Host', async () => {
      await rawRequest(`${url}/e`, { headers: { Host: 'one.test' } })
      const two = await rawRequest(`${url}/e`, { headers: { Host: 'two.test' } })
      assert.equal(appCalls, 2)
      assert.match(two.body.toString(), /two\.test/)
      await rawRequest(`${url}/e`, { headers: { Host: 'one.test' } })
      assert.equal(appCalls, 2)
    })

    it('stays within its bound', async () => {
      for (let i = 0; i < 20; i++) await rawRequest(`${url}/f${i}`)
      assert.ok(lane.size <= 2048, `${lane.size} bytes held`)
    })
  })
})
