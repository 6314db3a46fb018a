/** The narinfo and `.ls` caches of PathInfoLookup against a real HTTP test upstream: what is remembered, and for how long. */
import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import { after, describe, it } from 'node:test'
import { createLogger } from '../../src/log.js'
import { HttpUpstream } from '../../src/upstream/http-upstream.js'
import { PathInfoLookup } from '../../src/upstream/path-info-lookup.js'
import { cacheDir, fixturePath } from '../helpers/fixtures.js'
import { startTestUpstream, type TestUpstream } from '../helpers/test-upstream.js'

const basic = fixturePath('basic')
const site = fixturePath('site')
const log = createLogger('silent')

describe('PathInfoLookup caches', () => {
  const upstreams: TestUpstream[] = []
  const start = async () => {
    const upstream = await startTestUpstream({ root: cacheDir('xz') })
    upstreams.push(upstream)
    return { upstream, http: new HttpUpstream(new URL(upstream.url), { userAgent: 'test', timeoutMs: 2000 }) }
  }
  after(async () => {
    for (const upstream of upstreams) await upstream.close()
  })

  it('asks for a `.ls` again once the upstream that failed it may have recovered', async () => {
    const { upstream, http } = await start()
    const lookup = new PathInfoLookup([http], { log, negativeTtlMs: 200, maxEntries: 100, trustedKeys: () => undefined })
    const info = await lookup.find(basic.hash)
    assert.ok(info !== undefined)
    upstream.setFault(`/${basic.hash}.ls`, { kind: 'status', status: 503, times: 3 })
    assert.equal(await lookup.listing(info), undefined, 'no listing while the upstream fails')
    upstream.clearFaults()
    await sleep(300)
    assert.ok((await lookup.listing(info)) !== undefined, 'the listing once it answers again')
  })

  it('still answers the requests waiting for a lookup whose entry was pushed out of the cache meanwhile', async () => {
    const { upstream, http } = await start()
    const lookup = new PathInfoLookup([http], { log, negativeTtlMs: 60_000, maxEntries: 1, trustedKeys: () => undefined })
    upstream.setFault(`/${basic.hash}.narinfo`, { kind: 'delay', ms: 300 })
    const slow = lookup.find(basic.hash)
    await sleep(50)
    await lookup.find(site.hash) // the only slot goes to another path while the first lookup runs
    assert.equal((await slow)?.storePath.hash, basic.hash)
  })
})
