/** Self-test for the fixture helpers and the fault-injecting test upstream server. */
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { request } from 'node:http'
import path from 'node:path'
import { test } from 'node:test'
import { brotliDecompressSync } from 'node:zlib'
import { decompress as zstdDecompress } from '@mongodb-js/zstd'
import { cacheDir, fixturePath } from './fixtures.js'
import { rawRequest } from './raw-http.js'
import { startTestUpstream } from './test-upstream.js'
import type { TestUpstream, TestUpstreamOptions } from './test-upstream.js'
import { eventually, gate } from './wait.js'

const root = cacheDir('xz')
const basic = fixturePath('basic')
const narinfoPath = `/${basic.hash}.narinfo`
const narinfoText = readFileSync(path.join(root, `${basic.hash}.narinfo`), 'utf8')
const narUrl = /^URL: (.+)$/m.exec(narinfoText)?.[1] ?? assert.fail('narinfo without URL')
const narFile = path.join(root, narUrl)

async function withUpstream(options: TestUpstreamOptions, body: (up: TestUpstream) => Promise<void>): Promise<void> {
  const up = await startTestUpstream(options)
  try {
    await body(up)
  } finally {
    await up.close()
  }
}

/** A raw GET that neither normalises the path nor decodes the body. */
const rawGet = (url: string, rawPath: string) => rawRequest(url, { path: rawPath })

test('The upstream serves a narinfo with its content type and length', async () => {
  await withUpstream({ root }, async (up) => {
    assert.match(up.url, /^http:\/\/127\.0\.0\.1:\d+$/)
    const res = await fetch(`${up.url}${narinfoPath}?x=1`)
    assert.equal(res.status, 200)
    assert.equal(res.headers.get('content-type'), 'text/x-nix-narinfo')
    assert.equal(res.headers.get('content-length'), String(Buffer.byteLength(narinfoText)))
    assert.equal(await res.text(), narinfoText)
    assert.deepEqual(
      up.requests.map(({ method, path, status }) => ({ method, path, status })),
      [{ method: 'GET', path: narinfoPath, status: 200 }],
    )
    await eventually(() => up.requests[0]!.bytes !== undefined, 'the response closed')
    assert.ok(up.requests[0]!.bytes! > Buffer.byteLength(narinfoText), 'bytes on the wire count headers and body')
  })
})

test('The upstream answers 404 for missing files and for paths escaping the root', async () => {
  await withUpstream({ root }, async (up) => {
    assert.equal((await fetch(`${up.url}/nope.narinfo`)).status, 404)
    // paths.txt exists one level above the cache root.
    for (const outside of ['/../paths.txt', '/%2e%2e/paths.txt', '/nar/..%2F..%2Fpaths.txt', '/nar']) {
      assert.equal((await rawGet(up.url, outside)).status, 404, outside)
    }
  })
})

test('The upstream serves a byte range of a NAR with 206', async () => {
  await withUpstream({ root }, async (up) => {
    const res = await fetch(`${up.url}/${narUrl}`, { headers: { Range: 'bytes=10-19' } })
    assert.equal(res.status, 206)
    assert.equal(res.headers.get('content-type'), 'application/x-nix-nar')
    assert.match(res.headers.get('content-range') ?? '', /^bytes 10-19\/\d+$/)
    assert.deepEqual(Buffer.from(await res.arrayBuffer()), readFileSync(narFile).subarray(10, 20))
  })
})

test('Listings sent with zstd or br content encoding decode back to the file', async () => {
  const file = readFileSync(path.join(root, `${basic.hash}.ls`))
  for (const encoding of ['zstd', 'br'] as const) {
    await withUpstream({ root, lsEncoding: encoding }, async (up) => {
      const res = await rawGet(up.url, `/${basic.hash}.ls`)
      assert.equal(res.status, 200)
      assert.equal(res.headers['content-encoding'], encoding)
      assert.equal(res.headers['content-type'], 'application/json')
      assert.equal(res.headers['content-length'], String(res.body.length))
      const decoded = encoding === 'br' ? brotliDecompressSync(res.body) : await zstdDecompress(res.body)
      assert.deepEqual(decoded, file)
    })
  }
})

test('A reset-after fault delivers a truncated body and the body read rejects', async () => {
  await withUpstream({ root }, async (up) => {
    up.setFault(`/${narUrl}`, { kind: 'reset-after', bytes: 1000 })
    const raw = await new Promise<{ length: string | undefined; received: number; aborted: boolean }>(
      (resolve, reject) => {
        const req = request(`${up.url}/${narUrl}`, (res) => {
          let received = 0
          res.on('data', (chunk: Buffer) => (received += chunk.length))
          res.on('close', () => resolve({ length: res.headers['content-length'], received, aborted: !res.complete }))
        })
        req.on('error', reject)
        req.end()
      },
    )
    assert.deepEqual(raw, { length: String(readFileSync(narFile).length), received: 1000, aborted: true })

    const res = await fetch(`${up.url}/${narUrl}`)
    assert.equal(res.status, 200)
    await assert.rejects(res.arrayBuffer())
  })
})

test('A stall-after fault sends part of the body, then nothing, until close()', async () => {
  const up = await startTestUpstream({ root })
  up.setFault(`/${narUrl}`, { kind: 'stall-after', bytes: 1000 })
  let received = 0
  const closed = new Promise<{ length: string | undefined; complete: boolean }>((resolve, reject) => {
    const req = request(`${up.url}/${narUrl}`, (res) => {
      res.on('data', (chunk: Buffer) => (received += chunk.length))
      res.on('close', () => resolve({ length: res.headers['content-length'], complete: res.complete }))
      res.on('error', () => {})
    })
    req.on('error', reject)
    req.end()
  })
  await eventually(() => received >= 1000, 'the first 1000 bytes')
  await up.close()
  // Everything sent before close() arrives before the close: nothing came after the first 1000 bytes.
  assert.deepEqual(await closed, { length: String(readFileSync(narFile).length), complete: false })
  assert.equal(received, 1000, 'nothing after the first 1000 bytes')
})

test('A status fault with times=1 fails once and then serves normally', async () => {
  await withUpstream({ root }, async (up) => {
    up.setFault(narinfoPath, { kind: 'status', status: 503, times: 1 })
    assert.equal((await fetch(`${up.url}${narinfoPath}`)).status, 503)
    const res = await fetch(`${up.url}${narinfoPath}`)
    assert.equal(res.status, 200)
    assert.equal(await res.text(), narinfoText)
    assert.deepEqual(
      up.requests.map((r) => r.status),
      [503, 200],
    )
  })
})

test('Replace and throttle faults serve the given bytes and slow the body down', async () => {
  await withUpstream({ root }, async (up) => {
    up.setFault('/nix-cache-info', { kind: 'replace', body: new TextEncoder().encode('StoreDir: /other\n') })
    up.setFault(/\.narinfo$/, { kind: 'throttle', bytesPerSecond: 5000 })
    assert.equal(await (await fetch(`${up.url}/nix-cache-info`)).text(), 'StoreDir: /other\n')
    const started = Date.now()
    assert.equal(await (await fetch(`${up.url}${narinfoPath}`)).text(), narinfoText)
    assert.ok(Date.now() - started >= 50, 'throttled body arrived too fast')
  })
})

test('A hanging request is ended by close()', async () => {
  const up = await startTestUpstream({ root })
  up.setFault(narinfoPath, { kind: 'hang' })
  const pending = fetch(`${up.url}${narinfoPath}`)
  await up.arrived(narinfoPath)
  await up.close()
  await assert.rejects(pending)
  assert.deepEqual(
    up.requests.map(({ method, path, status }) => ({ method, path, status })),
    [{ method: 'GET', path: narinfoPath, status: 0 }],
  )
})

test('count() counts requests by exact path or pattern and by method', async () => {
  await withUpstream({ root }, async (up) => {
    await (await fetch(`${up.url}${narinfoPath}`)).text()
    await (await fetch(`${up.url}${narinfoPath}`)).text()
    await (await fetch(`${up.url}${narinfoPath}`, { method: 'HEAD' })).text()
    await (await fetch(`${up.url}/nix-cache-info`)).text()
    assert.equal(up.count(narinfoPath), 2)
    assert.equal(up.count(narinfoPath, 'HEAD'), 1)
    assert.equal(up.count(/\.narinfo$/), 2)
    assert.equal(up.count(/./), 3)
    assert.equal(up.count('/missing'), 0)
  })
})

test('A hold fault answers once its gate opens; arrived() and until() wait for requests', async () => {
  await withUpstream({ root }, async (up) => {
    const held = gate()
    up.setFault(narinfoPath, { kind: 'hold', until: held.opened })
    let answered = false
    const pending = fetch(`${up.url}${narinfoPath}`).then(async (res) => {
      answered = true
      return res.text()
    })
    await up.arrived(narinfoPath)
    // Another request is answered meanwhile: the held one waits for its gate alone.
    assert.equal((await fetch(`${up.url}/nix-cache-info`)).status, 200)
    assert.equal(answered, false)
    assert.equal(up.requests[0]!.status, 0)
    held.open()
    assert.equal(await pending, narinfoText)
    await up.until(() => up.requests[0]!.bytes !== undefined, 'the narinfo answer over')
    await assert.rejects(
      up.until(() => false, 'nothing', 50),
      /^Error: timed out after 50 ms waiting for: nothing \(requests so far: GET \/\S+\.narinfo 200, GET \/nix-cache-info 200\)$/,
    )
  })
})
