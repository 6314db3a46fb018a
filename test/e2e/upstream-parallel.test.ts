/** UNNAR_LOOKUP=parallel: every upstream asked at once, the highest-priority hit wins, losers aborted. */
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, describe, it } from 'node:test'
import { cacheDir, FIXTURE_CACHES, fixturePath } from '../helpers/fixtures.js'
import { startTestUpstream, type TestUpstream } from '../helpers/test-upstream.js'
import { sha256Hex, startUnnar, type TestUnnar } from '../helpers/unnar.js'
import { gate } from '../helpers/wait.js'

const basic = fixturePath('basic')
const file = `${basic.hash}-${basic.name}/bin/hello`
const narinfoPath = `/${basic.hash}.narinfo`

describe('parallel lookup', { timeout: 60_000 }, () => {
  const cleanups: Array<() => Promise<void>> = []
  after(async () => {
    for (const c of cleanups.reverse()) await c()
  })
  const upstream = async (root: string): Promise<TestUpstream> => {
    const u = await startTestUpstream({ root })
    cleanups.push(() => u.close())
    return u
  }
  const emptyCache = async (): Promise<string> => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'unnar-empty-'))
    cleanups.push(() => rm(dir, { recursive: true, force: true }))
    return dir
  }
  const unnarFor = async (urls: string[], env: Record<string, string> = {}): Promise<TestUnnar> => {
    // Pinned order: the test decides the priorities, whatever nix-cache-info says.
    const unnar = await startUnnar(urls, { UNNAR_LOOKUP: 'parallel', UNNAR_UPSTREAM_ORDER: 'configured', ...env })
    cleanups.push(() => unnar.stop())
    return unnar
  }
  const timed = async (url: string): Promise<{ status: number; ms: number; sha: string }> => {
    const started = Date.now()
    const res = await fetch(url)
    const sha = await sha256Hex(await res.arrayBuffer())
    return { status: res.status, ms: Date.now() - started, sha }
  }

  it('does not wait for a slow higher-priority upstream longer than its timeout', async () => {
    const slow = await upstream(await emptyCache())
    const fast = await upstream(cacheDir('xz'))
    // Held until the answer is in: waiting for it would never answer.
    const held = gate()
    slow.setFault(narinfoPath, { kind: 'hold', until: held.opened })
    const unnar = await unnarFor([slow.url, fast.url], { UNNAR_UPSTREAM_TIMEOUT: '0.5' })
    const { status, sha } = await timed(unnar.store(file))
    held.open()
    assert.equal(status, 200)
    assert.equal(sha, basic.entries['bin/hello']!.sha256)
    assert.equal(slow.count(narinfoPath), 1)
    assert.equal(fast.count(narinfoPath), 1)
  })

  it('takes the higher-priority upstream’s narinfo when both have the path, even when it answers later', async () => {
    const first = await upstream(cacheDir('xz'))
    const second = await upstream(cacheDir('zstd'))
    // The first upstream answers only once the second has.
    const held = gate()
    first.setFault(narinfoPath, { kind: 'hold', until: held.opened })
    const unnar = await unnarFor([first.url, second.url])
    const answer = timed(unnar.store(file))
    await second.until(
      () => second.requests.some((r) => r.path === narinfoPath && r.bytes !== undefined),
      'the second upstream’s narinfo answered',
    )
    held.open()
    const { status, sha } = await answer
    assert.equal(status, 200)
    assert.equal(sha, basic.entries['bin/hello']!.sha256)
    assert.equal(second.count(narinfoPath), 1, 'asked at the same time')
    assert.equal(first.count(/^\/nar\/.*\.nar\.xz$/), 1, 'the NAR named by the first narinfo')
    assert.equal(second.count(/^\/nar\//), 0)
    const page = await (
      await fetch(unnar.store(`${basic.hash}-${basic.name}/`), { headers: { accept: 'text/html' } })
    ).text()
    assert.ok(page.includes(first.url), 'the listing page names the upstream that served it')
  })

  it('does not wait for slower lower-priority upstreams once a higher-priority hit is known, and aborts them', async () => {
    const first = await upstream(cacheDir('xz'))
    const slow = await upstream(cacheDir('zstd'))
    // Never opened: the answer comes while the slow upstream still holds its narinfo.
    slow.setFault(narinfoPath, { kind: 'hold', until: new Promise(() => {}) })
    const unnar = await unnarFor([first.url, slow.url], { UNNAR_UPSTREAM_TIMEOUT: '30' })
    const { status } = await timed(unnar.store(file))
    assert.equal(status, 200)
    await slow.until(
      () => slow.requests.some((r) => r.path === narinfoPath && r.aborted === true),
      'the loser’s request is aborted',
    )
    assert.equal(slow.count(/^\/nar\//), 0)
    const health = (await (await fetch(`${unnar.url}/api/upstreams`)).json()) as Array<{ name: string; state: string }>
    assert.deepEqual(
      health.map((h) => h.state),
      ['ok', 'unknown'],
      'an aborted request says nothing about the upstream’s health',
    )
  })

  it('falls to the next upstream when the higher-priority answer is untrusted', async () => {
    const key = readFileSync(path.join(FIXTURE_CACHES, 'test-key.pub'), 'utf8').trim()
    const app = fixturePath('app')
    const unsigned = await upstream(cacheDir('unsigned'))
    const signed = await upstream(cacheDir('xz'))
    const unnar = await unnarFor([unsigned.url, signed.url], { TRUSTED_PUBLIC_KEYS: key })
    const res = await fetch(unnar.store(`${app.hash}-${app.name}/bin/uses-dep`))
    assert.equal(res.status, 200)
    await res.arrayBuffer()
    assert.equal(signed.count(/^\/nar\//), 1)
    assert.equal(unsigned.count(/^\/nar\//), 0)
  })

  it('answers 404 only when every upstream said "not here", and 502 naming the failing one otherwise', async () => {
    const a = await upstream(await emptyCache())
    const b = await upstream(await emptyCache())
    const unnar = await unnarFor([a.url, b.url])
    assert.equal((await fetch(unnar.store('0000000000000000000000000000000a-absent/'))).status, 404)
    b.setFault(/\.narinfo$/, { kind: 'status', status: 500 })
    const res = await fetch(unnar.store('0000000000000000000000000000000b-absent/'))
    const text = await res.text()
    assert.equal(res.status, 502)
    assert.ok(text.includes(`${b.url}: HTTP 500`), text)
    assert.ok(!text.includes(`${a.url}:`), text)
  })
})
