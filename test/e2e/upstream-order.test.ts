/** nix-cache-info re-reads (Priority/StoreDir changes) and the per-request hook for metrics. */
import assert from 'node:assert/strict'
import { Readable } from 'node:stream'
import { after, describe, it } from 'node:test'
import { createLogger } from '../../src/log.js'
import { createUpstream } from '../../src/upstream/create-upstream.js'
import type { UpstreamRequestEvent } from '../../src/upstream/instrument.js'
import { readSmallBody } from '../../src/upstream/read-body.js'
import { watchUpstreamOrder } from '../../src/upstream/upstream-order.js'
import { type Upstream, UpstreamError, type UpstreamResponse } from '../../src/upstream/upstream.js'
import { cacheDir, fixturePath } from '../helpers/fixtures.js'
import { startTestUpstream, type TestUpstream } from '../helpers/test-upstream.js'
import { eventually } from '../helpers/wait.js'

/** An upstream whose nix-cache-info the test rewrites (or breaks) at will. */
class FakeUpstream implements Upstream {
  cacheInfo: string | Error | undefined
  reads = 0
  constructor(
    readonly name: string,
    cacheInfo: string,
  ) {
    this.cacheInfo = cacheInfo
  }
  async get(key: string): Promise<UpstreamResponse | undefined> {
    assert.equal(key, 'nix-cache-info')
    this.reads++
    if (this.cacheInfo instanceof Error) throw this.cacheInfo
    if (this.cacheInfo === undefined) return undefined
    return { body: Readable.from([Buffer.from(this.cacheInfo)]), size: undefined, contentEncoding: undefined }
  }
}

describe('watchUpstreamOrder', () => {
  it('orders by Priority at start and follows later Priority and StoreDir changes', async () => {
    const a = new FakeUpstream('http://a', 'StoreDir: /nix/store\nPriority: 50\n')
    const b = new FakeUpstream('http://b', 'StoreDir: /nix/store\nPriority: 10\n')
    const c = new FakeUpstream('http://c', 'StoreDir: /nix/store\n')
    const lines: Array<Record<string, unknown>> = []
    const log = createLogger('debug', (line) => lines.push(JSON.parse(line) as Record<string, unknown>))
    const orders: string[][] = []
    const watch = watchUpstreamOrder([a, b, c], ['http://a', 'http://b', 'http://c?priority=30'], {
      storeDir: '/nix/store',
      pinned: false,
      log,
      intervalMs: 20,
      onOrder: (ordered) => orders.push(ordered.map((u) => u.name)),
    })
    try {
      await watch.ready
      assert.deepEqual(orders, [['http://b', 'http://c', 'http://a']], '?priority= in the URL wins over nix-cache-info')

      a.cacheInfo = 'StoreDir: /nix/store\nPriority: 5\n'
      await eventually(() => orders.length === 2, 'the new Priority is picked up')
      assert.deepEqual(orders[1], ['http://a', 'http://b', 'http://c'])
      assert.ok(lines.some((l) => l.msg === 'upstream order changed'))

      const readsBefore = a.reads
      await eventually(() => a.reads >= readsBefore + 3, 'reads go on')
      assert.equal(orders.length, 2, 'an unchanged order is not reported again')

      a.cacheInfo = new UpstreamError('http://a', 'network', 'ECONNRESET (/nix-cache-info)')
      const readsAtFailure = a.reads
      await eventually(() => a.reads >= readsAtFailure + 3, 'reads go on while one fails')
      assert.equal(orders.length, 2, 'a failed re-read keeps what the upstream said before')
      assert.ok(lines.some((l) => l.msg === 'cannot re-read nix-cache-info; keeping what it said before'))

      b.cacheInfo = 'StoreDir: /opt/store\nPriority: 10\n'
      await eventually(() => orders.length === 3, 'the StoreDir change is picked up')
      assert.deepEqual(orders[2], ['http://a', 'http://c'])
      assert.ok(
        lines.some((l) => l.msg === 'upstream is for another store dir and is not used' && l.upstream === 'http://b'),
      )
    } finally {
      watch.stop()
    }
    const readsAtStop = a.reads + b.reads + c.reads
    // A watcher left running on the same interval shows the time in which re-reads would have happened.
    const control = new FakeUpstream('http://d', 'StoreDir: /nix/store\n')
    const running = watchUpstreamOrder([control], ['http://d'], {
      storeDir: '/nix/store',
      pinned: false,
      log,
      intervalMs: 20,
      onOrder: () => {},
    })
    try {
      await running.ready
      const controlReads = control.reads
      await eventually(() => control.reads >= controlReads + 5, 'five re-reads of a watcher still running')
    } finally {
      running.stop()
    }
    assert.ok(a.reads + b.reads + c.reads <= readsAtStop + 3, 'stop() ends the re-reads (one round may be in flight)')
  })

  it('keeps the configured order when pinned, and does not keep the process alive', async () => {
    const a = new FakeUpstream('http://a', 'Priority: 50\n')
    const b = new FakeUpstream('http://b', 'Priority: 10\n')
    const orders: string[][] = []
    const watch = watchUpstreamOrder([a, b], ['http://a', 'http://b'], {
      storeDir: '/nix/store',
      pinned: true,
      log: createLogger('silent'),
      intervalMs: 60_000,
      onOrder: (ordered) => orders.push(ordered.map((u) => u.name)),
    })
    await watch.ready
    assert.deepEqual(orders, [['http://a', 'http://b']])
    watch.stop()
  })
})

describe('the onRequest hook', { timeout: 30_000 }, () => {
  const basic = fixturePath('basic')
  const upstreams: TestUpstream[] = []
  after(async () => {
    for (const u of upstreams) await u.close()
  })

  it('sees every request once it is over, with its kind, outcome and duration', async () => {
    const u = await startTestUpstream({ root: cacheDir('xz') })
    upstreams.push(u)
    const events: UpstreamRequestEvent[] = []
    const upstream = createUpstream(u.url.replace('http://', 'http://user:secret@'), {
      userAgent: 'test',
      timeoutMs: 5000,
      onRequest: (event) => {
        events.push(event)
        throw new Error('a broken hook changes nothing')
      },
    })
    assert.equal(upstream.name, u.url)
    const narinfo = await upstream.get(`${basic.hash}.narinfo`)
    assert.ok(narinfo !== undefined)
    assert.equal(events.length, 0, 'not over before the body is read')
    const text = (await readSmallBody(narinfo, 1 << 20, upstream.name, 'x')).toString('utf8')
    assert.match(text, /^StorePath: /)
    assert.equal(await upstream.get('0000000000000000000000000000000a.narinfo'), undefined)
    const info = await upstream.get('nix-cache-info')
    await readSmallBody(info!, 1 << 20, upstream.name, 'nix-cache-info')
    u.setFault(/\.ls$/, { kind: 'status', status: 500 })
    await assert.rejects(upstream.get(`${basic.hash}.ls`))
    const narKey = /^URL: (.*)$/m.exec(text)![1]!
    const controller = new AbortController()
    const nar = await upstream.get(narKey, controller.signal)
    assert.ok(nar !== undefined)
    controller.abort()
    await new Promise((r) => nar.body.once('close', r))

    assert.deepEqual(
      events.map(({ upstream, kind, status, errorKind }) => ({ upstream, kind, status, errorKind })),
      [
        { upstream: u.url, kind: 'narinfo', status: 'ok', errorKind: undefined },
        { upstream: u.url, kind: 'narinfo', status: 'miss', errorKind: undefined },
        { upstream: u.url, kind: 'cache-info', status: 'ok', errorKind: undefined },
        { upstream: u.url, kind: 'listing', status: 'error', errorKind: 'bad-status' },
        { upstream: u.url, kind: 'nar', status: 'aborted', errorKind: undefined },
      ],
    )
    assert.ok(events.every((e) => e.seconds >= 0 && e.seconds < 10))
    assert.ok(!JSON.stringify(events).includes('secret'))
  })
})
