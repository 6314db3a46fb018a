/** HTTP for browsers and curl: ranges, downloads, compression, listing formats, sandboxing, subdomain sites. */
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { readdir } from 'node:fs/promises'
import { connect } from 'node:net'
import path from 'node:path'
import { brotliDecompressSync, gunzipSync } from 'node:zlib'
import { after, before, describe, it } from 'node:test'
import { decompress as zstdDecompress } from 'zstd-napi'
import { cacheDir, fixturePath } from '../helpers/fixtures.js'
import { rawRequest } from '../helpers/raw-http.js'
import { startTestUpstream, type TestUpstream } from '../helpers/test-upstream.js'
import { startUnnar, type TestUnnar } from '../helpers/unnar.js'
import { eventually } from '../helpers/wait.js'

const basic = fixturePath('basic')
const site = fixturePath('site')
const tricky = fixturePath('tricky')
const app = fixturePath('app')
const dep = fixturePath('dep')
const basicBase = `${basic.hash}-${basic.name}`
const siteBase = `${site.hash}-${site.name}`
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex')

describe('HTTP semantics', { timeout: 60_000 }, () => {
  let upstream: TestUpstream
  let unnar: TestUnnar
  let blob: Buffer
  before(async () => {
    upstream = await startTestUpstream({ root: cacheDir('xz') })
    unnar = await startUnnar([upstream.url], { DOMAIN: 'nix.test' })
    blob = (await rawRequest(unnar.store(`${basicBase}/lib/blob.bin`))).body
    assert.equal(sha(blob), basic.entries['lib/blob.bin']!.sha256)
  })
  after(async () => {
    await unnar.stop()
    await upstream.close()
  })
  const get = (rest: string, headers: Record<string, string> = {}, method = 'GET') =>
    rawRequest(unnar.store(rest), { headers, method })

  describe('Range', () => {
    const size = 3_000_000
    const cases: Array<[string, number, number]> = [
      ['bytes=0-99', 0, 99],
      ['bytes=1000-', 1000, size - 1],
      ['bytes=-500', size - 500, size - 1],
      ['bytes=2999990-5000000', 2999990, size - 1],
    ]
    for (const [header, start, end] of cases) {
      it(`answers ${header} with 206 and exactly those bytes`, async () => {
        const res = await get(`${basicBase}/lib/blob.bin`, { range: header })
        assert.equal(res.status, 206)
        assert.equal(res.headers['content-range'], `bytes ${start}-${end}/${size}`)
        assert.equal(res.headers['content-length'], String(end - start + 1))
        assert.ok(res.body.equals(blob.subarray(start, end + 1)))
      })
    }

    it('answers an unsatisfiable range with 416 and the size', async () => {
      const res = await get(`${basicBase}/lib/blob.bin`, { range: 'bytes=3000000-' })
      assert.equal(res.status, 416)
      assert.equal(res.headers['content-range'], `bytes */${size}`)
    })

    it('ignores malformed and multiple ranges and sends the whole file', async () => {
      for (const header of ['bytes=abc', 'items=0-1', 'bytes=5-2', 'bytes=0-1,5-6']) {
        const res = await get(`${basicBase}/lib/blob.bin`, { range: header })
        assert.equal(res.status, 200, header)
        assert.equal(res.body.length, size)
      }
    })

    it('honours If-Range only when it names the current ETag', async () => {
      const etag = (await get(`${basicBase}/lib/blob.bin`, {}, 'HEAD')).headers.etag!
      assert.equal((await get(`${basicBase}/lib/blob.bin`, { range: 'bytes=0-9', 'if-range': etag })).status, 206)
      assert.equal((await get(`${basicBase}/lib/blob.bin`, { range: 'bytes=0-9', 'if-range': '"stale"' })).status, 200)
    })

    it('serves a range of a NAR that is not cached yet, as the bytes arrive', async () => {
      const fresh = await startUnnar([upstream.url])
      try {
        const res = await rawRequest(fresh.store(`${basicBase}/lib/libfoo.so.1.2`), {
          headers: { range: 'bytes=100-199' },
        })
        assert.equal(res.status, 206)
        assert.equal(res.body.length, 100)
      } finally {
        await fresh.stop()
      }
    })

    it('sends exactly the bytes asked for across read boundaries (64 KiB waits, 512 KiB reads), cached or downloading', async () => {
      const edges = [65536, 524288, 2 * 524288, 65536 + 524288]
      const ranges = edges
        .flatMap((e) => [
          [e - 1, e],
          [e - 3, e + 2],
          [e, e + 1048576 * 1.5],
        ])
        .concat([[1, size - 2]])
      const fresh = await startUnnar([upstream.url])
      try {
        for (const server of [unnar, fresh]) {
          for (const [start, end] of ranges as Array<[number, number]>) {
            const last = Math.min(end, size - 1)
            const res = await rawRequest(server.store(`${basicBase}/lib/blob.bin`), {
              headers: { range: `bytes=${start}-${last}` },
            })
            assert.equal(res.status, 206)
            assert.ok(res.body.equals(blob.subarray(start, last + 1)), `bytes=${start}-${last}`)
          }
        }
      } finally {
        await fresh.stop()
      }
    })

    it('advertises Accept-Ranges on files', async () => {
      assert.equal((await get(`${basicBase}/bin/hello`, {}, 'HEAD')).headers['accept-ranges'], 'bytes')
    })
  })

  it('sends ?download as an attachment with an RFC 6266 name that keeps Unicode', async () => {
    const res = await get(
      `m7b82dkimaq4aybdiry085zsnj9lc5fn-fixture-tricky-1/unicode/${encodeURIComponent('über café.txt')}?download`,
    )
    assert.equal(
      res.headers['content-disposition'],
      `attachment; filename="_ber caf_.txt"; filename*=UTF-8''%C3%BCber%20caf%C3%A9.txt`,
    )
    const named = await get(`${basicBase}/bin/hello?download=hello-${encodeURIComponent('ü')}.sh`)
    assert.equal(
      named.headers['content-disposition'],
      `attachment; filename="hello-_.sh"; filename*=UTF-8''hello-%C3%BC.sh`,
    )
    assert.equal(tricky.kind, 'tricky')
  })

  describe('compression', () => {
    const readme = basic.entries['share/doc/README']!
    const decoders: Record<string, (b: Buffer) => Buffer> = {
      br: brotliDecompressSync,
      gzip: gunzipSync,
      zstd: (b) => Buffer.from(zstdDecompress(b)),
    }
    for (const [encoding, decode] of Object.entries(decoders)) {
      it(`compresses text with ${encoding} for clients that accept it`, async () => {
        const res = await get(`${basicBase}/share/doc/README`, { 'accept-encoding': encoding })
        assert.equal(res.headers['content-encoding'], encoding)
        // Small files are compressed whole (length known); large ones are streamed (no length).
        assert.equal(res.headers['content-length'] ?? String(res.body.length), String(res.body.length))
        assert.equal(res.headers.vary, 'Accept-Encoding')
        assert.match(res.headers.etag!, new RegExp(`-${encoding}"$`))
        assert.equal(sha(decode(res.body)), readme.sha256)
        const head = await get(`${basicBase}/share/doc/README`, { 'accept-encoding': encoding }, 'HEAD')
        assert.equal(head.headers['content-encoding'], encoding, 'HEAD matches GET')
      })
    }

    it('says Vary: Accept-Encoding on every answer for a compressible file (ranges and 304s too)', async () => {
      const ranged = await get(`${basicBase}/share/doc/README`, { range: 'bytes=0-9' })
      assert.equal(ranged.status, 206)
      assert.equal(ranged.headers.vary, 'Accept-Encoding')
      const plain = await get(`${basicBase}/share/doc/README`)
      const notModified = await get(`${basicBase}/share/doc/README`, { 'if-none-match': plain.headers.etag! })
      assert.equal(notModified.status, 304)
      assert.equal(notModified.headers.vary, 'Accept-Encoding')
    })

    it('gives a 304 the tag its 200 would carry: the compressed representation when one would be sent', async () => {
      // guide.md is text by its name; README only by its bytes, which a 304 does not read.
      for (const file of [`${siteBase}/docs/guide.md`, `${basicBase}/share/doc/README`]) {
        const plainTag = (await get(file)).headers.etag!
        const brTag = (await get(file, { 'accept-encoding': 'br' })).headers.etag!
        const gzipTag = (await get(file, { 'accept-encoding': 'gzip' })).headers.etag!
        assert.notEqual(brTag, plainTag)
        const cases: Array<[Record<string, string>, string, string]> = [
          [{ 'accept-encoding': 'br', 'if-none-match': brTag }, brTag, 'the same request again'],
          [{ 'accept-encoding': 'gzip', 'if-none-match': brTag }, gzipTag, 'a 200 would now be gzip'],
          [{ 'if-none-match': brTag }, plainTag, 'a 200 would now be uncompressed'],
          [
            { 'accept-encoding': 'br', range: 'bytes=0-9', 'if-none-match': brTag },
            plainTag,
            'a 200 would be an uncompressed 206',
          ],
        ]
        for (const [headers, tag, what] of cases) {
          const res = await get(file, headers)
          assert.equal(res.status, 304, `${file}: ${what}`)
          assert.equal(res.headers.etag, tag, `${file}: ${what}`)
        }
      }
      const binary = await get(`${basicBase}/lib/blob.bin`, { 'accept-encoding': 'br' }, 'HEAD')
      const revalidated = await get(`${basicBase}/lib/blob.bin`, {
        'accept-encoding': 'br',
        'if-none-match': binary.headers.etag!,
      })
      assert.equal(revalidated.status, 304)
      assert.equal(revalidated.headers.etag, binary.headers.etag, 'a binary is never compressed')
    })

    it('does not recompress archives or compress tiny files', async () => {
      const res = await get(`${siteBase}/archive/release.tar.gz`, { 'accept-encoding': 'gzip' })
      assert.equal(res.headers['content-encoding'], undefined, 'a .tar.gz is not recompressed')
      const big = await get(`m7b82dkimaq4aybdiry085zsnj9lc5fn-fixture-tricky-1/many/f00001.txt`, {
        'accept-encoding': 'gzip',
      })
      assert.equal(big.headers['content-encoding'], undefined, 'under 1 KiB')
    })

    it('leaves binaries, small files, ranges and identity clients uncompressed', async () => {
      const accept = { 'accept-encoding': 'br, gzip, zstd' }
      assert.equal((await get(`${basicBase}/lib/blob.bin`, accept)).headers['content-encoding'], undefined)
      assert.equal((await get(`${siteBase}/css/style.css`, accept)).headers['content-encoding'], undefined)
      const ranged = await get(`${basicBase}/share/doc/README`, { ...accept, range: 'bytes=0-9' })
      assert.equal(ranged.status, 206)
      assert.equal(ranged.headers['content-encoding'], undefined)
      const plain = await get(`${basicBase}/share/doc/README`, { 'accept-encoding': 'br;q=0, identity' })
      assert.equal(plain.headers['content-encoding'], undefined)
      assert.equal(plain.headers['content-length'], String(readme.size))
    })
  })

  describe('directory listings', () => {
    it('answers ?json and Accept: application/json with the directory one level deep, in a stable key order', async () => {
      const expected =
        '{"type":"directory","entries":{"abs-link":{"type":"symlink","target":"/nix/store/00000000000000000000000000000000-absent/bin/x"},' +
        '"blob.bin":{"type":"regular","size":3000000,"executable":false},"libfoo.so":{"type":"symlink","target":"libfoo.so.1.2"},' +
        '"libfoo.so.1.2":{"type":"regular","size":300000,"executable":false}}}\n'
      const byQuery = await get(`${basicBase}/lib/?json`)
      assert.equal(byQuery.headers['content-type'], 'application/json')
      assert.equal(byQuery.body.toString(), expected)
      assert.equal((await get(`${basicBase}/lib/`, { accept: 'application/json' })).body.toString(), expected)
      const root = JSON.parse((await get(`${basicBase}/?json`)).body.toString())
      assert.deepEqual(root.entries.bin, { type: 'directory' })
    })

    it('answers curl with a plain-text listing like ls -l', async () => {
      const res = await get(`${basicBase}/bin/`, { accept: '*/*', 'user-agent': 'curl/7.88.1' })
      assert.match(res.headers['content-type']!, /^text\/plain/)
      assert.equal(
        res.body.toString(),
        'lrwxrwxrwx            - docs-link -> ../share/doc/index.html\n-r-xr-xr-x           21 hello\n',
      )
      const root = (await get(`${basicBase}/`, { accept: '*/*', 'user-agent': 'curl/8.5.0' })).body.toString()
      assert.match(root, /^dr-xr-xr-x {12}- bin\/$/m)
      assert.match(res.headers.vary!, /User-Agent/)
    })

    it('answers browsers, and every client that does not ask for something else, with HTML', async () => {
      for (const headers of [
        { accept: 'text/html,application/xhtml+xml,*/*;q=0.8', 'user-agent': 'Mozilla/5.0' },
        { accept: '*/*', 'user-agent': 'Wget/1.21.3' },
        { 'user-agent': 'rclone/v1.60.1' },
        { accept: '*/*', 'user-agent': 'lftp/4.9.2' },
        { accept: 'text/html', 'user-agent': 'curl/7.88.1' },
      ]) {
        const res = await get(`${basicBase}/bin/`, headers)
        assert.match(res.headers['content-type']!, /^text\/html/, JSON.stringify(headers))
        assert.equal(res.headers.vary, 'Accept, Accept-Encoding, User-Agent')
      }
    })

    it('answers text or JSON to any client that asks for it', async () => {
      for (const [headers, type] of [
        [{ accept: 'text/plain', 'user-agent': 'Wget/1.21.3' }, 'text/plain'],
        [{ accept: 'application/json' }, 'application/json'],
        [{ accept: 'application/json', 'user-agent': 'curl/7.88.1' }, 'application/json'],
        [{ accept: 'text/html;q=0.5, text/plain' }, 'text/plain'],
      ] as const) {
        const res = await get(`${basicBase}/bin/`, headers)
        assert.match(res.headers['content-type']!, new RegExp(`^${type}`), JSON.stringify(headers))
      }
    })

    it('compresses large listings for clients that accept it', async () => {
      const many = 'm7b82dkimaq4aybdiry085zsnj9lc5fn-fixture-tricky-1/many/'
      const plain = await get(many, { accept: 'text/html' })
      const br = await get(many, { accept: 'text/html', 'accept-encoding': 'br' })
      assert.equal(br.headers['content-encoding'], 'br')
      assert.ok(brotliDecompressSync(br.body).equals(plain.body))
      assert.ok(br.body.length < plain.body.length / 4)
      assert.equal(br.headers['content-length'], String(br.body.length))
    })
  })

  it('answers for a small file held in memory exactly as it did before the file was hot', async () => {
    const variants: Array<[string, Record<string, string>, string?]> = [
      ['plain', {}],
      ['HEAD', {}, 'HEAD'],
      ['range', { range: 'bytes=10-99' }],
      ['suffix range', { range: 'bytes=-5' }],
      ['unsatisfiable range', { range: 'bytes=5000-' }],
      ['If-Range with a stale tag', { range: 'bytes=0-9', 'if-range': '"stale"' }],
      ['If-None-Match', { 'if-none-match': '"unused", "other"' }],
      ['br', { 'accept-encoding': 'br' }],
      ['gzip', { 'accept-encoding': 'gzip' }],
    ]
    const file = `${basicBase}/share/doc/README`
    const strip = (r: Awaited<ReturnType<typeof rawRequest>>) => {
      const { date: _date, 'x-request-id': _id, ...headers } = r.headers
      return { status: r.status, headers, body: r.body.toString('base64') }
    }
    for (const [what, headers, method] of variants) {
      for (const query of ['', '?download']) {
        const fresh = await startUnnar([upstream.url])
        try {
          const cold = await rawRequest(fresh.store(file) + query, { headers, method: method ?? 'GET' })
          await eventually(
            async () => (await readdir(path.join(fresh.cacheDir, 'nar'))).some((n) => n.endsWith('.nar')),
            'the NAR is committed',
          )
          await rawRequest(fresh.store(file)) // now read from a verified NAR: the file becomes hot
          const hot = await rawRequest(fresh.store(file) + query, { headers, method: method ?? 'GET' })
          // Cold, the NAR is not verified yet: a compressed answer is streamed (its last byte held
          // back until it is), so its framing differs from the hot answer's one-go body.
          if (cold.headers['content-encoding'] !== undefined && cold.headers['transfer-encoding'] === 'chunked') {
            assert.equal(hot.headers['content-length'], String(hot.body.length))
            delete cold.headers['transfer-encoding']
            delete hot.headers['content-length']
          }
          assert.deepEqual(strip(hot), strip(cold), `${what}${query}`)
        } finally {
          await fresh.stop()
        }
      }
    }
  })

  it('sandboxes store files so their scripts cannot reach unnar pages', async () => {
    const res = await get(`${siteBase}/index.html`, {}, 'HEAD')
    assert.match(String(res.headers['content-security-policy']), /^sandbox allow-scripts/)
    assert.doesNotMatch(String(res.headers['content-security-policy']), /allow-same-origin/)
  })

  it('answers 304 to If-None-Match without downloading the NAR', async () => {
    const fresh = await startUnnar([upstream.url])
    try {
      const etag = (await rawRequest(fresh.store(`${siteBase}/index.html`), { method: 'HEAD' })).headers.etag!
      const before = upstream.count(/^\/nar\//)
      const res = await rawRequest(fresh.store(`${siteBase}/index.html`), { headers: { 'if-none-match': etag } })
      assert.equal(res.status, 304)
      assert.equal(
        (await rawRequest(fresh.store(`${siteBase}/index.html`), { headers: { 'if-none-match': '*' } })).status,
        304,
        'If-None-Match: * (the file exists)',
      )
      assert.equal(upstream.count(/^\/nar\//), before)
      assert.equal(
        (await rawRequest(fresh.store(`${siteBase}/index.html`), { headers: { 'if-none-match': '"other"' } })).status,
        200,
      )
    } finally {
      await fresh.stop()
    }
  })

  it('gives unnar pages a strict CSP of their own, and jumps from /?path= without JavaScript', async () => {
    for (const path of ['/', `/nix/store/${basicBase}/bin/`, '/nix/store/not-a-hash']) {
      const res = await rawRequest(`${unnar.url}${path}`, { headers: { accept: 'text/html' } })
      assert.match(String(res.headers['content-security-policy']), /^default-src 'none'; script-src 'self'/, path)
    }
    const jump = await rawRequest(
      `${unnar.url}/?path=${encodeURIComponent(`/nix/store/${basicBase}/share/doc/index.html`)}`,
    )
    assert.equal(jump.status, 302)
    assert.equal(jump.headers.location, `/nix/store/${basicBase}/share/doc/index.html`)
    assert.equal((await rawRequest(`${unnar.url}/?path=${basic.hash}`)).headers.location, `/nix/store/${basic.hash}/`)
    assert.equal((await rawRequest(`${unnar.url}/?path=nonsense`)).status, 400)
    // What the landing page's script accepts, without it: a .narinfo name, and URLs (already encoded).
    const jumpTo = async (input: string) =>
      (await rawRequest(`${unnar.url}/?path=${encodeURIComponent(input)}`)).headers.location
    assert.equal(await jumpTo(`${basic.hash}.narinfo`), `/nix/store/${basic.hash}/`)
    assert.equal(
      await jumpTo(` https://cache.example.org/nix/store/${basicBase}/share/doc/index.html `),
      `/nix/store/${basicBase}/share/doc/index.html`,
    )
    assert.equal(
      await jumpTo(`http://localhost:8383/nix/store/${basicBase}/a%20b/%C3%BC`),
      `/nix/store/${basicBase}/a%20b/%C3%BC`,
    )
    assert.equal(await jumpTo(`/nix/store/${basicBase}/über`), `/nix/store/${basicBase}/%C3%BCber`)
    // A control character in the name is a client's mistake all the way through, never a 500.
    const nul = await rawRequest(`${unnar.url}/?path=${basic.hash}%00`)
    assert.equal(nul.status, 302)
    assert.equal((await rawRequest(`${unnar.url}${nul.headers.location}`)).status, 400)
  })

  it('answers an HTTP/1.0 request without Host the same before and after its file is hot', async () => {
    // node's client always sends Host: speak HTTP/1.0 on a plain socket.
    const http10 = (urlPath: string) =>
      new Promise<string>((resolve, reject) => {
        const socket = connect(Number(new URL(unnar.url).port), '127.0.0.1', () =>
          socket.write(`GET ${urlPath} HTTP/1.0\r\n\r\n`),
        )
        let answer = ''
        socket.on('data', (chunk) => (answer += chunk.toString('latin1')))
        socket.on('close', () => resolve(answer.split('\r\n')[0]!))
        socket.on('error', reject)
      })
    const file = `/nix/store/${basicBase}/share/doc/README`
    for (let i = 0; i < 3; i++) assert.equal(await http10(file), 'HTTP/1.1 200 OK', `request ${i + 1}`)
  })

  it('answers the bare store directory with a 404 that says why', async () => {
    for (const path of ['/nix/store', '/nix/store/']) {
      const res = await rawRequest(`${unnar.url}${path}`)
      assert.equal(res.status, 404, path)
      assert.match(res.body.toString(), /does not list the whole store/, path)
    }
  })

  it('lists upstreams and their health at /api/upstreams', async () => {
    const res = await rawRequest(`${unnar.url}/api/upstreams`)
    assert.deepEqual(JSON.parse(res.body.toString()), [{ name: upstream.url, state: 'ok' }])
  })

  describe('subdomain mode (DOMAIN)', () => {
    const onSite = (hash: string, path: string, headers: Record<string, string> = {}) =>
      rawRequest(`${unnar.url}${path}`, { headers: { host: `${hash}.nix.test`, ...headers } })

    it('serves a store path as a site root, with index.html for directories', async () => {
      const root = await onSite(site.hash, '/')
      assert.equal(root.status, 200)
      assert.equal(sha(root.body), site.entries['index.html']!.sha256)
      assert.equal(root.headers['content-security-policy'], undefined, 'each store path is its own origin')
      const docs = await onSite(site.hash, '/docs/')
      assert.equal(sha(docs.body), site.entries['docs/index.html']!.sha256)
      assert.equal((await onSite(site.hash, '/docs')).headers.location, '/docs/')
      assert.equal(sha((await onSite(site.hash, '/css/style.css')).body), site.entries['css/style.css']!.sha256)
    })

    it('lists directories without index.html and keeps redirects on the site', async () => {
      const lib = await onSite(basic.hash, '/lib/', { accept: '*/*' })
      assert.match(lib.body.toString(), /blob\.bin/)
      assert.equal((await onSite(basic.hash, '/bin/docs-link')).headers.location, '/share/doc/index.html')
      assert.equal((await onSite(app.hash, '/bin/dep-link')).headers.location, `//${dep.hash}.nix.test/lib/dep.txt`)
    })

    it('leaves other hosts to the normal routes', async () => {
      assert.equal(
        (await rawRequest(`${unnar.url}/healthz`, { headers: { host: 'nix.test' } })).body.toString(),
        'OK\n',
      )
    })
  })
})
