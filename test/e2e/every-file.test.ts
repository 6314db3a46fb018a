/** Every file of every fixture store path, through every compression, byte-for-byte against the manifest. */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { cacheDir, COMPRESSIONS, loadFixturePaths } from '../helpers/fixtures.js'
import { startTestUpstream, type TestUpstream } from '../helpers/test-upstream.js'
import { encodeRel, sha256Hex, startUnnar, type TestUnnar } from '../helpers/unnar.js'

for (const compression of [...COMPRESSIONS, 'no-listing']) {
  describe(`a ${compression} cache`, { timeout: 120_000 }, () => {
    let upstream: TestUpstream
    let unnar: TestUnnar
    before(async () => {
      upstream = await startTestUpstream({ root: cacheDir(compression) })
      unnar = await startUnnar([upstream.url])
    })
    after(async () => {
      await unnar.stop()
      await upstream.close()
    })

    for (const fixture of loadFixturePaths()) {
      it(`serves every entry of ${fixture.kind} exactly`, async () => {
        const base = `${fixture.hash}-${fixture.name}`
        for (const [rel, entry] of Object.entries(fixture.entries)) {
          try {
            await checkEntry(rel, entry)
          } catch (err) {
            // Keeps what unnar said about a failure (a rare cut transfer was once seen only in CI runs).
            const said = unnar.logs.filter((l) => l.level === 'warn' || l.level === 'error').slice(-5)
            throw new Error(`${rel}: ${(err as Error).message}; unnar's last warnings: ${JSON.stringify(said)}`, { cause: err })
          }
        }
        async function checkEntry(rel: string, entry: (typeof fixture.entries)[string]): Promise<void> {
          const url = unnar.store(`${base}/${encodeRel(rel)}`)
          const res = await fetch(url, { redirect: 'manual', headers: { 'accept-encoding': 'identity' } })
          if (entry.type === 'regular') {
            assert.equal(res.status, 200, `${rel}: status`)
            const body = await res.arrayBuffer()
            assert.equal(body.byteLength, entry.size, `${rel}: size`)
            assert.equal(await sha256Hex(body), entry.sha256, `${rel}: sha256`)
            assert.equal(res.headers.get('content-length'), String(entry.size), `${rel}: Content-Length`)
            assert.equal(res.headers.get('nar-executable'), entry.executable === true ? '1' : null, `${rel}: NAR-Executable`)
            assert.equal(res.headers.get('cache-control'), 'public, max-age=31536000, immutable')
            assert.match(res.headers.get('etag') ?? '', /^"[A-Za-z0-9_-]{32}"$/)
          } else if (entry.type === 'directory') {
            // Bodies are read, not cancelled: a cancelled response is the suspected cause of a rare
            // 'terminated' on the next request over the same keep-alive connection (CI runs only).
            assert.equal(res.status, 301, `${rel}: a directory without a slash redirects`)
            assert.equal(new URL(res.headers.get('location')!, url).pathname, new URL(url).pathname + '/')
            await res.arrayBuffer()
          } else {
            await res.arrayBuffer()
            assert.ok([301, 404].includes(res.status), `${rel}: symlink answers ${res.status}`)
          }
        }
        // Every NAR was downloaded once at most, however many files were asked for.
        assert.ok(upstream.count(/^\/nar\//) <= loadFixturePaths().length)
      })
    }
  })
}
