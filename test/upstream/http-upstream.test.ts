/** HttpUpstream's own limits, against a real HTTP test upstream. */
import assert from 'node:assert/strict'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { describe, it } from 'node:test'
import { HttpUpstream } from '../../src/upstream/http-upstream.js'
import { UpstreamError } from '../../src/upstream/upstream.js'
import { cacheDir, fixturePath } from '../helpers/fixtures.js'
import { startTestUpstream } from '../helpers/test-upstream.js'

describe('HttpUpstream', () => {
  it('times out a request that waits for a connection while every socket is held by an unread body', async () => {
    const upstream = await startTestUpstream({ root: cacheDir('none') })
    upstream.setFault('/nar/big.nar', { kind: 'replace', body: Buffer.alloc(8 * 1024 * 1024, 1) })
    const http = new HttpUpstream(new URL(upstream.url), { userAgent: 'test', timeoutMs: 500 })
    const bodies = []
    try {
      // 64 bodies nobody reads (clients of direct streams that stopped reading): all the agent's sockets.
      for (let i = 0; i < 64; i++) bodies.push((await http.get('nar/big.nar'))!.body)
      const outcome = await Promise.race([
        http.get(`${fixturePath('basic').hash}.narinfo`).then(
          () => 'answered',
          (err: Error) => err,
        ),
        // Unreferenced: a passing test does not wait for it.
        sleep(3000, undefined, { ref: false }).then(() => 'still waiting after 3 s'),
      ])
      assert.ok(
        outcome instanceof UpstreamError && outcome.kind === 'timeout' && /no free connection/.test(outcome.message),
        String(outcome),
      )
    } finally {
      for (const body of bodies) body.destroy()
      await upstream.close()
    }
  })

  it('takes a 206 as the range asked for only when its Content-Range says exactly that range', async () => {
    let contentRange = 'bytes 10-19/100'
    const server = createServer((_req, res) => {
      res.writeHead(206, { 'content-range': contentRange, 'content-length': '10' })
      res.end('0123456789')
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const http = new HttpUpstream(new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/`), {
      userAgent: 'test',
      timeoutMs: 2000,
    })
    try {
      const partial = async () => {
        const res = (await http.get('nar/x.nar', undefined, { start: 10, end: 19 }))!
        res.body.resume()
        return res.partial
      }
      assert.equal(await partial(), true)
      contentRange = 'bytes 0-9/100' // another range than asked for: its bytes are not those of the range
      assert.equal(await partial(), false)
      contentRange = 'bytes */100'
      assert.equal(await partial(), false)
    } finally {
      server.closeAllConnections()
      await new Promise((resolve) => server.close(resolve))
    }
  })
})
