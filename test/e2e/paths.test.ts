/** Directories, symlinks, odd names and client mistakes, end to end against the xz fixture cache. */
import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { cacheDir, fixturePath } from '../helpers/fixtures.js'
import { rawRequest } from '../helpers/raw-http.js'
import { startTestUpstream, type TestUpstream } from '../helpers/test-upstream.js'
import { sha256Hex, startUnnar, type TestUnnar } from '../helpers/unnar.js'

const basic = fixturePath('basic')
const tricky = fixturePath('tricky')
const app = fixturePath('app')
const dep = fixturePath('dep')
const basicBase = `${basic.hash}-${basic.name}`
const trickyBase = `${tricky.hash}-${tricky.name}`

describe('paths inside a store path', { timeout: 60_000 }, () => {
  let upstream: TestUpstream
  let unnar: TestUnnar
  before(async () => {
    upstream = await startTestUpstream({ root: cacheDir('xz') })
    unnar = await startUnnar([upstream.url])
  })
  after(async () => {
    await unnar.stop()
    await upstream.close()
  })

  const get = (rest: string, init?: RequestInit) => fetch(unnar.store(rest), { redirect: 'manual', ...init })
  const expectStatus = async (rest: string, status: number, message?: RegExp) => {
    const res = await get(rest)
    const text = await res.text()
    assert.equal(res.status, status, `${rest}: ${text}`)
    if (message !== undefined) assert.match(text, message)
    return res
  }

  it('answers the store path root with a redirect to the slash form and then a listing', async () => {
    const res = await expectStatus(basicBase, 301)
    assert.equal(res.headers.get('location'), `/nix/store/${basicBase}/`)
    const listing = await get(`${basicBase}/`, { headers: { accept: 'text/html' } })
    assert.equal(listing.status, 200)
    assert.match(listing.headers.get('content-type')!, /^text\/html/)
    const html = await listing.text()
    for (const name of ['bin/', 'lib/', 'share/']) assert.ok(html.includes(`href="${name}"`), name)
  })

  it('accepts a bare hash without the name', async () => {
    const res = await get(`${basic.hash}/bin/hello`)
    assert.equal(res.status, 200)
    assert.equal(await sha256Hex(await res.arrayBuffer()), basic.entries['bin/hello']!.sha256)
  })

  it('answers 404 when the name does not match the narinfo', async () => {
    await expectStatus(`${basic.hash}-not-its-name/bin/hello`, 404, /is named "fixture-basic-1", not "not-its-name"/)
  })

  it('answers 404 for a store path no upstream has, naming the upstreams', async () => {
    await expectStatus(
      '0000000000000000000000000000000a-absent/x',
      404,
      new RegExp(`not in any upstream \\(${upstream.url}\\)`),
    )
  })

  it('answers 404 for a missing file, from the listing alone', async () => {
    const before = upstream.count(/^\/nar\//)
    await expectStatus(`${basicBase}/bin/nope`, 404, /no such file or directory: bin\/nope/)
    assert.equal(upstream.count(/^\/nar\//), before, 'no NAR download for a 404')
  })

  it('redirects a symlink as the last component to the end of its chain', async () => {
    const res = await expectStatus(`${trickyBase}/chain/a`, 301)
    assert.equal(res.headers.get('location'), `/nix/store/${trickyBase}/chain/target.txt`)
    const rel = await expectStatus(`${basicBase}/bin/docs-link`, 301)
    assert.equal(rel.headers.get('location'), `/nix/store/${basicBase}/share/doc/index.html`)
  })

  it('resolves a symlink in the middle of the path on the server', async () => {
    const res = await get(`${trickyBase}/via/chaindir/target.txt`)
    assert.equal(res.status, 200)
    assert.equal(await sha256Hex(await res.arrayBuffer()), tricky.entries['chain/target.txt']!.sha256)
  })

  it('redirects a symlink into another store path to that path', async () => {
    const res = await expectStatus(`${app.hash}-${app.name}/bin/dep-link`, 301)
    assert.equal(res.headers.get('location'), `/nix/store/${dep.hash}-${dep.name}/lib/dep.txt`)
    const abs = await expectStatus(`${basicBase}/lib/abs-link`, 301)
    assert.equal(abs.headers.get('location'), '/nix/store/00000000000000000000000000000000-absent/bin/x')
  })

  it('answers 404 saying which for dangling, looping and escaping symlinks', async () => {
    await expectStatus(`${trickyBase}/via/dangling`, 404, /dangling symlink/)
    await expectStatus(`${trickyBase}/via/loop1`, 404, /too many levels of symbolic links/)
    await expectStatus(`${trickyBase}/via/escape`, 404, /points outside the Nix store/)
  })

  it('serves names that need percent-encoding, encoded the way a browser does', async () => {
    for (const rel of [
      'unicode/über café.txt',
      'unicode/日本語.txt',
      'names/hash#sign.txt',
      'names/question?.txt',
      'names/percent%20.txt',
      'names/with space.txt',
      'names/plus+sign.txt',
    ]) {
      const url = new URL(`${unnar.url}/nix/store/${trickyBase}/`)
      url.pathname += rel.split('/').map(encodeURIComponent).join('/')
      const res = await fetch(url)
      assert.equal(res.status, 200, rel)
      assert.equal(await sha256Hex(await res.arrayBuffer()), tricky.entries[rel]!.sha256, rel)
    }
  })

  it('escapes names in the HTML listing and encodes their links', async () => {
    const html = await (await get(`${trickyBase}/names/`, { headers: { accept: 'text/html' } })).text()
    assert.ok(html.includes('href="hash%23sign.txt"'))
    assert.ok(html.includes('href="question%3F.txt"'))
    assert.ok(html.includes('href="percent%2520.txt"'))
    assert.ok(html.includes('quote&#39;.txt'))
    assert.ok(html.includes('amp&amp;.txt'))
  })

  it('picks Content-Type by extension, else by sniffing the bytes', async () => {
    const types: Record<string, RegExp> = {
      'types/page.html': /^text\/html; charset=utf-8$/,
      'types/style.css': /^text\/css; charset=utf-8$/,
      'types/doc.pdf': /^application\/pdf$/,
      'types/data.wasm': /^application\/wasm$/,
      'types/noext': /^text\/plain; charset=utf-8$/,
      'types/Makefile': /^text\/plain; charset=utf-8$/,
      'types/binary-noext': /^application\/octet-stream$/,
    }
    for (const [rel, type] of Object.entries(types)) {
      const res = await get(`${trickyBase}/${rel}`)
      await res.arrayBuffer()
      assert.match(res.headers.get('content-type')!, type, rel)
      assert.equal(res.headers.get('x-content-type-options'), 'nosniff')
    }
  })

  it('answers HEAD with the headers of GET and no body', async () => {
    for (const rel of ['bin/hello', 'share/doc/index.html', 'lib/blob.bin']) {
      const head = await get(`${basicBase}/${rel}`, { method: 'HEAD' })
      const full = await get(`${basicBase}/${rel}`)
      await full.arrayBuffer()
      assert.equal(head.status, 200)
      for (const name of ['content-type', 'content-length', 'etag', 'cache-control', 'nar-executable']) {
        assert.equal(head.headers.get(name), full.headers.get(name), `${rel}: ${name}`)
      }
      assert.equal((await head.arrayBuffer()).byteLength, 0)
    }
  })

  it('answers 304 for a matching If-None-Match', async () => {
    const first = await get(`${basicBase}/share/doc/index.html`)
    await first.arrayBuffer()
    const etag = first.headers.get('etag')!
    const res = await get(`${basicBase}/share/doc/index.html`, { headers: { 'if-none-match': `"other", ${etag}` } })
    assert.equal(res.status, 304)
  })

  const badPaths: Array<[string, string]> = [
    ['not-a-hash/x', 'a hash that is not 32 nix32 characters'],
    ['eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x/y', 'e is not in the nix32 alphabet'],
    [`${basicBase}/bin/%2e%2e/%2e%2e/etc/passwd`, 'encoded dot-dot segments'],
    [`${basicBase}/bin%2Fhello`, 'an encoded slash'],
    [`${basicBase}/bin/hello%00`, 'an encoded NUL'],
    [`${basicBase}//bin/hello`, 'an empty segment'],
    [`${basicBase}/%E0%A4%A`, 'broken percent-encoding'],
  ]
  for (const [rest, why] of badPaths) {
    it(`answers 400 for ${why}`, async () => {
      // A raw request: fetch() would normalise dot segments before they reach the server.
      const res = await rawRequest(unnar.url, { path: `/nix/store/${rest}` })
      const text = res.body.toString()
      assert.equal(res.status, 400, `${rest}: ${text}`)
      assert.doesNotMatch(text, /root:|\/work\/|at .*\.ts/)
    })
  }

  it('serves /healthz, /robots.txt and the landing page', async () => {
    assert.equal(await (await fetch(`${unnar.url}/healthz`)).text(), 'OK\n')
    assert.match(await (await fetch(`${unnar.url}/robots.txt`)).text(), /Disallow: \/nix\/store/)
    const landing = await fetch(`${unnar.url}/`)
    assert.match(landing.headers.get('content-type')!, /^text\/html/)
    assert.match(await landing.text(), /<h1>unnar<\/h1>/)
  })

  it('answers an HTML error page to browsers and plain text to curl', async () => {
    const browser = await get(`${basicBase}/nope`, { headers: { accept: 'text/html,*/*' } })
    assert.match(browser.headers.get('content-type')!, /^text\/html/)
    assert.match(await browser.text(), /<h1>404 Not Found<\/h1>/)
    const curl = await get(`${basicBase}/nope`, { headers: { accept: '*/*' } })
    assert.match(curl.headers.get('content-type')!, /^text\/plain/)
    assert.match(await curl.text(), /^404 Not Found: /)
  })
})
