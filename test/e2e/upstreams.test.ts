/** Several upstreams, failing upstreams, and what unnar refuses to fetch. */
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { after, before, describe, it } from 'node:test'
import { cacheDir, FIXTURE_CACHES, fixturePath } from '../helpers/fixtures.js'
import { startTestUpstream, type TestUpstream } from '../helpers/test-upstream.js'
import { sha256Hex, startUnnar } from '../helpers/unnar.js'
import { eventually } from '../helpers/wait.js'

const basic = fixturePath('basic')
const basicBase = `${basic.hash}-${basic.name}`
const narinfoPath = `/${basic.hash}.narinfo`

describe('upstream selection and failures', { timeout: 60_000 }, () => {
  const upstreams: TestUpstream[] = []
  const start = async (root = cacheDir('xz'), lsEncoding?: 'br' | 'zstd' | 'gzip') => {
    const u = await startTestUpstream({ root, ...(lsEncoding === undefined ? {} : { lsEncoding }) })
    upstreams.push(u)
    return u
  }
  after(async () => {
    for (const u of upstreams) await u.close()
  })

  it('tries upstreams in order and serves from the first that has the path', async () => {
    const empty = await mkdtemp(path.join(os.tmpdir(), 'unnar-empty-'))
    const first = await start(empty)
    const second = await start()
    const unnar = await startUnnar([first.url, second.url])
    try {
      const res = await fetch(unnar.store(`${basicBase}/bin/hello`))
      assert.equal(res.status, 200)
      assert.equal(await sha256Hex(await res.arrayBuffer()), basic.entries['bin/hello']!.sha256)
      assert.equal(first.count(narinfoPath), 1)
      assert.equal(second.count(narinfoPath), 1)
      assert.equal(first.count(/^\/nar\//), 0)
      assert.equal(second.count(/^\/nar\//), 1)
    } finally {
      await unnar.stop()
      await rm(empty, { recursive: true })
    }
  })

  for (const location of ['ftp://mirror.example/x.narinfo', 'http://[not-a-host']) {
    it(`counts a redirect to an unusable location (${location}) as that upstream failing, and asks the next`, async () => {
      const first = await start()
      const second = await start()
      first.setFault(narinfoPath, { kind: 'redirect', location })
      const unnar = await startUnnar([first.url, second.url])
      try {
        const res = await fetch(unnar.store(`${basicBase}/bin/hello`))
        assert.equal(res.status, 200)
        await res.arrayBuffer()
        assert.equal(second.count(narinfoPath), 1)
      } finally {
        await unnar.stop()
      }
    })
  }

  it('retries a transient failure with backoff before giving up on an upstream', async () => {
    const only = await start()
    only.setFault(narinfoPath, { kind: 'status', status: 503, times: 2 })
    const unnar = await startUnnar([only.url])
    try {
      const res = await fetch(unnar.store(`${basicBase}/bin/hello`))
      assert.equal(res.status, 200)
      await res.arrayBuffer()
      assert.equal(only.count(narinfoPath), 3, 'two retries, then success')
    } finally {
      await unnar.stop()
    }
  })

  it('skips an upstream that keeps failing for a while, and reports it unhealthy', async () => {
    const failing = await start()
    const healthy = await start()
    failing.setFault(/\.narinfo$/, { kind: 'status', status: 500 })
    const unnar = await startUnnar([failing.url, healthy.url])
    try {
      for (let i = 0; i < 5; i++) {
        const res = await fetch(
          unnar.store(`${basicBase}/bin/hello`).replace(basic.hash, basic.hash.slice(0, 31) + String(i)),
        )
        await res.arrayBuffer()
      }
      // 3 lookups × 3 attempts reach the failing upstream; then it is skipped.
      assert.equal(failing.count(/\.narinfo$/), 9)
      assert.equal(healthy.count(/\.narinfo$/), 5)
      const health = (await (await fetch(`${unnar.url}/api/upstreams`)).json()) as Array<{
        state: string
        skippedUntil?: string
        failures?: number
      }>
      assert.equal(health[0]!.state, 'failing')
      assert.ok(health[0]!.skippedUntil !== undefined)
      assert.equal(health[0]!.failures, 3, 'the real count, not reset when skipping starts')
    } finally {
      await unnar.stop()
    }
  })

  it('says how many failures in a row made it skip an upstream', async () => {
    const failing = await start()
    failing.setFault(/\.narinfo$/, { kind: 'status', status: 500 })
    const unnar = await startUnnar([failing.url])
    try {
      const texts: string[] = []
      for (let i = 0; i < 4; i++) {
        const res = await fetch(
          unnar.store(`${basicBase}/bin/hello`).replace(basic.hash, basic.hash.slice(0, 31) + String(i)),
        )
        assert.equal(res.status, 502)
        texts.push(await res.text())
      }
      assert.match(texts[3]!, /skipped until \S+ after 3 failures in a row \(last: .*HTTP 500/)
    } finally {
      await unnar.stop()
    }
  })

  it('falls over to the next upstream when the first keeps answering 500', async () => {
    const first = await start()
    const second = await start()
    first.setFault(narinfoPath, { kind: 'status', status: 500 })
    const unnar = await startUnnar([first.url, second.url])
    try {
      const res = await fetch(unnar.store(`${basicBase}/bin/hello`))
      assert.equal(res.status, 200)
      await res.arrayBuffer()
      assert.equal(second.count(/^\/nar\//), 1)
      assert.ok(unnar.logs.some((l) => l.msg === 'upstream failed' && l.upstream === first.url))
    } finally {
      await unnar.stop()
    }
  })

  it('answers 502 naming every upstream when all fail, and does not remember the failure', async () => {
    const first = await start()
    const second = await start()
    first.setFault(narinfoPath, { kind: 'status', status: 500 })
    second.setFault(narinfoPath, { kind: 'status', status: 503, times: 3 })
    const unnar = await startUnnar([first.url, second.url])
    try {
      const res = await fetch(unnar.store(`${basicBase}/bin/hello`))
      const text = await res.text()
      assert.equal(res.status, 502)
      assert.ok(text.includes(first.url) && text.includes(second.url), text)
      assert.match(text, /HTTP 500/)
      assert.match(text, /HTTP 503/)
      const again = await fetch(unnar.store(`${basicBase}/bin/hello`))
      assert.equal(again.status, 200, 'a failure is not cached like a miss')
      await again.arrayBuffer()
    } finally {
      await unnar.stop()
    }
  })

  it('answers 504 when the only upstream hangs', async () => {
    const hung = await start()
    hung.setFault(narinfoPath, { kind: 'hang' })
    const unnar = await startUnnar([hung.url], { UNNAR_UPSTREAM_TIMEOUT: '0.5' })
    try {
      const res = await fetch(unnar.store(`${basicBase}/bin/hello`))
      assert.equal(res.status, 504)
      assert.match(await res.text(), /first-byte timeout: no response within 500 ms/)
    } finally {
      await unnar.stop()
    }
  })

  it('answers 404 when a path is in no upstream, and remembers that briefly', async () => {
    const only = await start()
    const unnar = await startUnnar([only.url])
    try {
      for (let i = 0; i < 3; i++) {
        const res = await fetch(unnar.store('0000000000000000000000000000000a-absent/'))
        assert.equal(res.status, 404)
        await res.text()
      }
      assert.equal(only.count('/0000000000000000000000000000000a.narinfo'), 1)
    } finally {
      await unnar.stop()
    }
  })

  for (const encoding of ['br', 'zstd', 'gzip'] as const) {
    it(`decodes a ${encoding}-encoded .ls and answers listings, HEAD and 404s without the NAR`, async () => {
      const u = await start(cacheDir('xz'), encoding)
      const unnar = await startUnnar([u.url])
      try {
        const listing = await fetch(unnar.store(`${basicBase}/lib/`), { headers: { accept: 'text/html' } })
        assert.equal(listing.status, 200)
        assert.ok((await listing.text()).includes('libfoo.so.1.2'))
        const head = await fetch(unnar.store(`${basicBase}/lib/blob.bin`), { method: 'HEAD' })
        assert.equal(head.headers.get('content-length'), String(basic.entries['lib/blob.bin']!.size))
        assert.equal((await fetch(unnar.store(`${basicBase}/missing`))).status, 404)
        assert.equal(u.count(`/${basic.hash}.ls`), 1)
        assert.equal(u.count(/^\/nar\//), 0)
      } finally {
        await unnar.stop()
      }
    })
  }

  describe('with nix-cache-info', () => {
    const caches: string[] = []
    after(async () => {
      for (const dir of caches) await rm(dir, { recursive: true })
    })
    const cacheWith = async (info: string) => {
      const dir = await mkdtemp(path.join(os.tmpdir(), 'unnar-info-'))
      caches.push(dir)
      await cp(cacheDir('xz'), dir, { recursive: true })
      await writeFile(path.join(dir, 'nix-cache-info'), info)
      return start(dir)
    }
    const order = async (url: string) => {
      const health = (await (await fetch(`${url}/api/upstreams`)).json()) as Array<{ name: string }>
      return health.map((h) => h.name)
    }

    it('asks upstreams by their Priority, lower first, unless the order is pinned', async () => {
      const low = await cacheWith('StoreDir: /nix/store\nPriority: 50\n')
      const high = await cacheWith('StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 10\n')
      const unnar = await startUnnar([low.url, high.url])
      const pinned = await startUnnar([low.url, high.url], { UNNAR_UPSTREAM_ORDER: 'configured' })
      try {
        await eventually(async () => (await order(unnar.url))[0] === high.url, 'the Priority read')
        assert.deepEqual(await order(unnar.url), [high.url, low.url])
        await (await fetch(unnar.store(`${basicBase}/bin/hello`))).arrayBuffer()
        assert.equal(low.count(narinfoPath), 0)
        assert.equal(high.count(narinfoPath), 1)
        assert.deepEqual(await order(pinned.url), [low.url, high.url])
      } finally {
        await unnar.stop()
        await pinned.stop()
      }
    })

    it('leaves an upstream for another StoreDir out of /nix/store, and says where it goes', async () => {
      const other = await cacheWith('StoreDir: /opt/store\n')
      const normal = await start()
      const unnar = await startUnnar([other.url, normal.url], { UNNAR_STORE_DIRS: '/nix/store' })
      try {
        await eventually(async () => (await order(unnar.url)).length === 1, 'the StoreDir read')
        assert.deepEqual(await order(unnar.url), [normal.url])
        assert.ok(
          unnar.logs.some(
            (l) =>
              l.msg === 'upstream is for a store dir that is not served (UNNAR_STORE_DIRS)' &&
              l.storeDir === '/opt/store',
          ),
        )
      } finally {
        await unnar.stop()
      }
    })
  })

  it('serves from a file:// upstream', async () => {
    const unnar = await startUnnar([pathToFileURL(cacheDir('zstd')).href])
    try {
      const res = await fetch(unnar.store(`${basicBase}/lib/libfoo.so.1.2`))
      assert.equal(await sha256Hex(await res.arrayBuffer()), basic.entries['lib/libfoo.so.1.2']!.sha256)
    } finally {
      await unnar.stop()
    }
  })

  describe('with doctored narinfos', () => {
    let dir: string
    before(async () => {
      dir = await mkdtemp(path.join(os.tmpdir(), 'unnar-doctored-'))
      await cp(cacheDir('no-listing'), dir, { recursive: true })
    })
    after(() => rm(dir, { recursive: true }))
    const doctor = async (edit: (text: string) => string) => {
      const file = path.join(dir, `${basic.hash}.narinfo`)
      const original = await readFile(path.join(cacheDir('no-listing'), `${basic.hash}.narinfo`), 'utf8')
      await writeFile(file, edit(original))
    }

    it('answers 502 naming an unsupported compression', async () => {
      await doctor((t) => t.replace('Compression: xz', 'Compression: lz4'))
      const u = await start(dir)
      const unnar = await startUnnar([u.url])
      try {
        const res = await fetch(unnar.store(`${basicBase}/bin/hello`))
        assert.equal(res.status, 502)
        assert.match(await res.text(), /unsupported NAR compression "lz4"/)
      } finally {
        await unnar.stop()
      }
    })

    for (const url of [
      'http://169.254.169.254/latest/meta-data',
      '../../etc/passwd',
      '/etc/passwd',
      'nar/%2e%2e/x.nar.xz',
    ]) {
      it(`never fetches a narinfo URL that leaves the cache (${url})`, async () => {
        await doctor((t) => t.replace(/^URL: .*$/m, `URL: ${url}`))
        const u = await start(dir)
        const unnar = await startUnnar([u.url])
        try {
          const res = await fetch(unnar.store(`${basicBase}/bin/hello`))
          assert.equal(res.status, 502)
          assert.match(await res.text(), /URL outside the cache/)
          // The `.ls` is asked for beside the narinfo; the NAR never is.
          assert.deepEqual(
            u.requests
              .map((r) => r.path)
              .filter((p) => p !== '/nix-cache-info')
              .sort(),
            [`/${basic.hash}.ls`, narinfoPath],
          )
        } finally {
          await unnar.stop()
        }
      })
    }

    it('answers 502 for a narinfo that describes another store path', async () => {
      await doctor((t) => t.replace(basic.hash, '0000000000000000000000000000000a'))
      const u = await start(dir)
      const unnar = await startUnnar([u.url])
      try {
        const res = await fetch(unnar.store(`${basicBase}/bin/hello`))
        assert.equal(res.status, 502)
        assert.match(await res.text(), /describes another path/)
      } finally {
        await unnar.stop()
      }
    })
  })
})

describe('trusted public keys', { timeout: 60_000 }, () => {
  const key = readFileSync(path.join(FIXTURE_CACHES, 'test-key.pub'), 'utf8').trim()
  const app = fixturePath('app')
  const appFile = `${app.hash}-${app.name}/bin/uses-dep`
  const cleanups: Array<() => Promise<void>> = []
  after(async () => {
    for (const c of cleanups) await c()
  })
  const setup = async (cache: string, env: Record<string, string>) => {
    const u = await startTestUpstream({ root: cacheDir(cache) })
    const unnar = await startUnnar([u.url], env)
    cleanups.push(
      () => u.close(),
      () => unnar.stop(),
    )
    return { u, unnar }
  }

  it('serves signed paths when the key is trusted, and says which key on the listing page', async () => {
    const { unnar } = await setup('xz', { TRUSTED_PUBLIC_KEYS: key })
    assert.equal((await fetch(unnar.store(appFile))).status, 200)
    const page = await (
      await fetch(unnar.store(`${app.hash}-${app.name}/`), { headers: { accept: 'text/html' } })
    ).text()
    assert.match(page, /key <code>nar-serve-test-1<\/code>/)
  })

  it('rejects unsigned input-addressed paths with a 502 that says why, and falls over to a signed upstream', async () => {
    const { unnar } = await setup('unsigned', { TRUSTED_PUBLIC_KEYS: key })
    const res = await fetch(unnar.store(appFile))
    assert.equal(res.status, 502)
    assert.match(await res.text(), /no trusted signature/)
    const signed = await startTestUpstream({ root: cacheDir('xz') })
    const unsigned = await startTestUpstream({ root: cacheDir('unsigned') })
    const both = await startUnnar([unsigned.url, signed.url], { TRUSTED_PUBLIC_KEYS: key })
    cleanups.push(
      () => signed.close(),
      () => unsigned.close(),
      () => both.stop(),
    )
    assert.equal((await fetch(both.store(appFile))).status, 200)
    assert.equal(signed.count(/^\/nar\//), 1)
    assert.equal(unsigned.count(/^\/nar\//), 0)
  })

  it('trusts unsigned content-addressed paths whose CA recomputes, as Nix does', async () => {
    const { unnar } = await setup('unsigned', { TRUSTED_PUBLIC_KEYS: key })
    const basic = fixturePath('basic')
    assert.equal((await fetch(unnar.store(`${basic.hash}-${basic.name}/bin/hello`))).status, 200)
  })

  it('rejects paths signed by a key that is not trusted, and checks nothing when the setting is empty', async () => {
    const other = 'someone-else-1:oIrzGFlHoLyk2IdOBAO/WHZfxNuKsFwxOjl+cCKZzJ8='
    const { unnar } = await setup('xz', { TRUSTED_PUBLIC_KEYS: other })
    assert.equal((await fetch(unnar.store(appFile))).status, 502)
    const open = await setup('unsigned', { TRUSTED_PUBLIC_KEYS: '' })
    assert.equal((await fetch(open.unnar.store(appFile))).status, 200)
  })
})
