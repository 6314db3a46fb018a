/** The three upstream timeouts (connect, first byte, idle body), each named in the error, and 504s. */
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { after, describe, it } from 'node:test'
import { HttpUpstream } from '../../src/upstream/http-upstream.js'
import { S3Upstream } from '../../src/upstream/s3-upstream.js'
import { UpstreamError, type UpstreamResponse } from '../../src/upstream/upstream.js'
import { cacheDir, fixturePath } from '../helpers/fixtures.js'
import { startBlackhole, startTestUpstream, type TestUpstream } from '../helpers/test-upstream.js'
import { sha256Hex, startUnnar, type TestUnnar } from '../helpers/unnar.js'
import { elapse } from '../helpers/wait.js'

const basic = fixturePath('basic')
const basicBase = `${basic.hash}-${basic.name}`
const narinfoPath = `/${basic.hash}.narinfo`

async function readAll(res: UpstreamResponse): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of res.body) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

async function rejectsWithTimeout(promise: Promise<unknown>, pattern: RegExp): Promise<UpstreamError> {
  try {
    await promise
  } catch (err) {
    assert.ok(err instanceof UpstreamError, String(err))
    assert.equal(err.kind, 'timeout', err.message)
    assert.match(err.message, pattern)
    return err
  }
  assert.fail('expected a timeout')
}

async function narKeyOf(cache: string, hash: string): Promise<string> {
  const text = await readFile(path.join(cacheDir(cache), `${hash}.narinfo`), 'utf8')
  return /^URL: (.*)$/m.exec(text)![1]!
}

describe('upstream timeouts', { timeout: 60_000 }, () => {
  const cleanups: Array<() => Promise<void>> = []
  after(async () => {
    for (const c of cleanups.reverse()) await c()
  })
  const upstream = async (cache = 'xz'): Promise<TestUpstream> => {
    const u = await startTestUpstream({ root: cacheDir(cache) })
    cleanups.push(() => u.close())
    return u
  }
  const unnarFor = async (urls: string[], env: Record<string, string>): Promise<TestUnnar> => {
    const unnar = await startUnnar(urls, env)
    cleanups.push(() => unnar.stop())
    return unnar
  }

  it('connect timeout: a port that never completes the handshake', async () => {
    const hole = await startBlackhole()
    cleanups.push(() => hole.close())
    const direct = new HttpUpstream(new URL(hole.url), {
      userAgent: 'test',
      timeoutMs: 10_000,
      connectTimeoutMs: 300,
      idleTimeoutMs: 10_000,
    })
    const started = Date.now()
    const err = await rejectsWithTimeout(
      direct.get('x.narinfo'),
      /^http:\/\/127\.0\.0\.1:\d+: connect timeout: no connection within 300 ms \(\/x\.narinfo\)$/,
    )
    assert.equal(err.upstream, hole.url)
    assert.ok(Date.now() - started < 5000, 'not retried, not the first-byte timeout')

    const unnar = await unnarFor([hole.url], { UNNAR_UPSTREAM_CONNECT_TIMEOUT: '0.3', UNNAR_UPSTREAM_TIMEOUT: '10' })
    const res = await fetch(unnar.store(`${basicBase}/bin/hello`))
    const text = await res.text()
    assert.equal(res.status, 504)
    assert.ok(text.includes(`${hole.url}: connect timeout`), text)
  })

  it('connect timeout: a host name that never resolves (covers DNS)', async () => {
    const direct = new HttpUpstream(new URL('http://cache.invalid'), {
      userAgent: 'test',
      timeoutMs: 10_000,
      connectTimeoutMs: 200,
      lookup: () => {}, // never calls back
    })
    await rejectsWithTimeout(direct.get('x.narinfo'), /connect timeout: no connection within 200 ms/)
  })

  it('first-byte timeout: a server that accepts the request and never answers → 504 naming the upstream', async () => {
    const u = await upstream()
    u.setFault(narinfoPath, { kind: 'hang' })
    const unnar = await unnarFor([u.url], {
      UNNAR_UPSTREAM_TIMEOUT: '0.5',
      UNNAR_UPSTREAM_CONNECT_TIMEOUT: '10',
      UNNAR_UPSTREAM_IDLE_TIMEOUT: '10',
    })
    const started = Date.now()
    const res = await fetch(unnar.store(`${basicBase}/bin/hello`))
    const text = await res.text()
    assert.equal(res.status, 504)
    assert.ok(text.includes(`${u.url}: first-byte timeout: no response within 500 ms (${narinfoPath})`), text)
    assert.ok(Date.now() - started < 5000)
    assert.equal(u.count(narinfoPath), 1, 'a timeout is not retried')
  })

  it('first-byte timeout on a kept-alive connection too', async () => {
    const u = await upstream()
    // Long enough that the first, answered request never runs into it on a loaded machine.
    const direct = new HttpUpstream(new URL(u.url), { userAgent: 'test', timeoutMs: 1500 })
    const first = await direct.get('nix-cache-info')
    assert.ok(first !== undefined)
    await readAll(first)
    u.setFault(narinfoPath, { kind: 'hang' })
    await rejectsWithTimeout(direct.get(narinfoPath.slice(1)), /first-byte timeout: no response within 1.5 s/)
  })

  it('idle timeout: a narinfo body that stalls → 504', async () => {
    const u = await upstream()
    u.setFault(narinfoPath, { kind: 'stall-after', bytes: 20 })
    const unnar = await unnarFor([u.url], { UNNAR_UPSTREAM_IDLE_TIMEOUT: '0.4', UNNAR_UPSTREAM_TIMEOUT: '10' })
    const res = await fetch(unnar.store(`${basicBase}/bin/hello`))
    const text = await res.text()
    assert.equal(res.status, 504)
    assert.ok(text.includes(`${u.url}: idle timeout: the body of ${narinfoPath} stalled for 400 ms`), text)
  })

  it('idle timeout: a NAR that stalls mid-way fails the transfer and is not kept', async () => {
    const u = await upstream('none')
    const narPath = `/${await narKeyOf('none', basic.hash)}`
    u.setFault(narPath, { kind: 'stall-after', bytes: 1_000_000 })
    const unnar = await unnarFor([u.url], { UNNAR_UPSTREAM_IDLE_TIMEOUT: '0.4', UNNAR_UPSTREAM_TIMEOUT: '10' })
    const res = await fetch(unnar.store(`${basicBase}/lib/blob.bin`))
    if (res.status === 200) await assert.rejects(res.arrayBuffer(), 'the body must not look complete')
    else assert.equal(res.status, 504, await res.text())
    const failure = await unnar.waitForLog((l) => l.msg === 'NAR download failed', 'NAR download failed')
    assert.match(String(failure?.error), /idle timeout: the body of \/nar\/\S+ stalled for 400 ms/)
    u.clearFaults()
    const again = await fetch(unnar.store(`${basicBase}/lib/blob.bin`))
    assert.equal(await sha256Hex(await again.arrayBuffer()), basic.entries['lib/blob.bin']!.sha256)
  })

  /** The basic fixture's uncompressed NAR straight from an HttpUpstream with a 200 ms idle timeout. */
  async function uncompressedNar() {
    const u = await upstream('none')
    const direct = new HttpUpstream(new URL(u.url), { userAgent: 'test', timeoutMs: 5000, idleTimeoutMs: 200 })
    const res = await direct.get(await narKeyOf('none', basic.hash))
    assert.ok(res !== undefined)
    return { u, res }
  }

  it('a reader that pauses longer than the idle timeout is not an idle upstream', async () => {
    const { res } = await uncompressedNar()
    // Time is the subject: a pause of twice the idle timeout. The NAR is 3 MB, far more than the
    // buffers hold, so the upstream is held back meanwhile.
    await elapse(400)
    const body = await readAll(res)
    assert.equal(body.length, res.size)
  })

  it('S3: connect and first-byte timeouts through the SDK request handler', async () => {
    const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY }
    process.env.AWS_ACCESS_KEY_ID = 'test-key-id'
    process.env.AWS_SECRET_ACCESS_KEY = 'test-secret'
    try {
      const hole = await startBlackhole()
      cleanups.push(() => hole.close())
      const unreachable = new S3Upstream(new URL(`s3://bucket?endpoint=${hole.url}`), {
        timeoutMs: 10_000,
        connectTimeoutMs: 300,
      })
      cleanups.push(async () => unreachable.destroy())
      await rejectsWithTimeout(
        unreachable.get('x.narinfo'),
        /^s3:\/\/bucket\?endpoint=\S+: connect timeout: no connection within 300 ms \(x\.narinfo\)$/,
      )

      const u = await upstream()
      u.setFault(/x\.narinfo$/, { kind: 'hang' })
      const silent = new S3Upstream(new URL(`s3://bucket?endpoint=${u.url}`), {
        timeoutMs: 300,
        connectTimeoutMs: 10_000,
      })
      cleanups.push(async () => silent.destroy())
      await rejectsWithTimeout(silent.get('x.narinfo'), /first-byte timeout: no response within 300 ms \(x\.narinfo\)$/)
    } finally {
      for (const [key, value] of [
        ['AWS_ACCESS_KEY_ID', saved.id],
        ['AWS_SECRET_ACCESS_KEY', saved.secret],
      ] as const) {
        if (value === undefined) delete process.env[key]
        else process.env[key] = value
      }
    }
  })

  it('a reader that stops early releases the connection without an error', async () => {
    const { u, res } = await uncompressedNar()
    for await (const _chunk of res.body) break
    await u.until(() => u.requests.at(-1)?.aborted === true, 'the NAR request aborted')
  })
})
