/** HotResponses alone, in front of a tiny hono app: what it keeps, for whom, and when it lets go. */
import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, beforeEach, describe, it } from 'node:test'
import { getRequestListener } from '@hono/node-server'
import { Hono } from 'hono'
import { HotResponses } from '../../src/http/hot-responses.js'
import { createRequestReporter, type RequestRecord } from '../../src/http/request-log.js'
import { createLogger } from '../../src/log.js'
import { createMetrics } from '../../src/metrics.js'
import { rawRequest } from '../helpers/raw-http.js'

describe('HotResponses', () => {
  let server: Server
  let url: string
  let lane: HotResponses
  let appCalls: number
  let current: boolean
  const logged: RequestRecord[] = []

  const start = (options: { maxBytes?: number; keyByHost?: boolean } = {}) => {
    const reporter = createRequestReporter(createLogger('silent'), createMetrics())
    lane = new HotResponses({
      reporter: { ...reporter, report: (record) => logged.push(record) },
      maxBytes: options.maxBytes ?? 1024 * 1024,
      maxUrlLength: 100,
      keyByHost: options.keyByHost ?? false,
    })
    const app = new Hono()
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
      if (!lane.serve(req, res)) void listener(req, res)
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
    logged.length = 0
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
