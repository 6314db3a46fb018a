/** Running unnar as a service: metrics, request logs, readiness, limits, listeners and graceful shutdown. */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises'
import http from 'node:http'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { after, describe, it } from 'node:test'
import { cacheDir, fixturePath } from '../helpers/fixtures.js'
import { rawRequest } from '../helpers/raw-http.js'
import { startTestUpstream } from '../helpers/test-upstream.js'
import { sha256Hex, startUnnar, type TestUnnar } from '../helpers/unnar.js'
import { eventually } from '../helpers/wait.js'

const basic = fixturePath('basic')
const site = fixturePath('site')
const basicBase = `${basic.hash}-${basic.name}`
const BLOB = 'lib/blob.bin'
const NAR = /^\/nar\//

/** The value of one sample line of a Prometheus text exposition, or undefined. */
function sample(text: string, name: string, labels = ''): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `))
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1))
}

async function metricsText(url: string): Promise<string> {
  const res = await fetch(`${url}/metrics`)
  assert.equal(res.status, 200)
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/)
  return res.text()
}

function requestLines(unnar: TestUnnar): Array<Record<string, unknown>> {
  return unnar.logs.filter((l) => l.msg === 'request')
}

describe('operations', { timeout: 120_000 }, () => {
  const cleanups: Array<() => Promise<void>> = []
  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup()
  })
  const upstreamFor = async (cache = 'zstd') => {
    const u = await startTestUpstream({ root: cacheDir(cache) })
    cleanups.push(() => u.close())
    return u
  }
  const unnarFor = async (upstreams: readonly string[], env: Record<string, string> = {}) => {
    const unnar = await startUnnar(upstreams, env)
    cleanups.push(() => unnar.stop())
    return unnar
  }

  it('counts requests, cache hits and misses, bytes and upstream health in /metrics', async () => {
    const upstream = await upstreamFor()
    const unnar = await unnarFor([upstream.url])
    const first = await fetch(unnar.store(`${basicBase}/${BLOB}`))
    assert.equal(first.status, 200)
    await first.arrayBuffer()
    await eventually(() => unnar.narStore.entries === 1, 'the NAR committed')
    const second = await fetch(unnar.store(`${basicBase}/${BLOB}`))
    await second.arrayBuffer()
    await eventually(
      async () => sample(await metricsText(unnar.url), 'unnar_cache_hits_total') !== 0,
      'the hit counted',
    )

    const text = await metricsText(unnar.url)
    assert.equal(sample(text, 'unnar_cache_misses_total'), 1)
    assert.ok(sample(text, 'unnar_cache_hits_total')! >= 1)
    assert.equal(sample(text, 'unnar_nar_downloads_total', '{result="cached"}'), 1)
    assert.equal(sample(text, 'unnar_cache_bytes'), unnar.narStore.usedBytes)
    assert.ok(sample(text, 'unnar_cache_max_bytes')! > 0)
    assert.equal(sample(text, 'unnar_nar_downloads_in_flight'), 0)
    assert.ok(sample(text, 'unnar_http_requests_total', '{route="store",status="200"}')! >= 2)
    // Bytes on the wire: at least the two 3 MB bodies.
    assert.ok(sample(text, 'unnar_http_response_bytes_total', '{route="store"}')! >= 2 * basic.entries[BLOB]!.size!)
    assert.match(text, /unnar_upstream_healthy\{upstream="[^"]+"\} 1/)
    assert.match(text, /unnar_process_resident_memory_bytes \d+/)
    assert.match(
      text,
      /unnar_upstream_requests_total\{upstream="http:\/\/127\.0\.0\.1:\d+\/?",kind="narinfo",status="ok"\} 1/,
    )
    assert.match(text, /unnar_upstream_requests_total\{upstream="[^"]+",kind="nar",status="ok"\} 1/)
    assert.match(text, /unnar_upstream_request_duration_seconds_count\{upstream="[^"]+",kind="nar"\} 1/)
  })

  it('counts narinfos rejected for want of a trusted signature, and upstream errors by kind', async () => {
    const upstream = await upstreamFor()
    const unnar = await unnarFor([upstream.url], {
      TRUSTED_PUBLIC_KEYS: 'other-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=',
    })
    // The app fixture is input-addressed (the others are content-addressed, which Nix trusts unsigned).
    const app = fixturePath('app')
    assert.equal((await fetch(unnar.store(`${app.hash}-${app.name}/bin/uses-dep`))).status, 502)
    upstream.setFault(/\.narinfo$/, { kind: 'status', status: 500 })
    assert.equal((await fetch(unnar.store(`${site.hash}-${site.name}/`))).status, 502)
    const text = await metricsText(unnar.url)
    assert.equal(sample(text, 'unnar_verification_failures_total', '{what="narinfo-signature"}'), 1)
    assert.match(text, /unnar_upstream_errors_total\{upstream="[^"]+",kind="narinfo",error="bad-status"\} 1/)
  })

  it('serves /metrics on a separate listener, or not at all', async () => {
    const upstream = await upstreamFor()
    const separate = await unnarFor([upstream.url], { UNNAR_METRICS_ADDR: '127.0.0.1:0' })
    assert.ok(separate.metricsUrl !== undefined)
    assert.equal((await fetch(`${separate.url}/metrics`)).status, 404)
    assert.match(await metricsText(separate.metricsUrl), /unnar_http_requests_total/)
    assert.equal(
      (await fetch(`${separate.metricsUrl}/nix/store/${basicBase}/`)).status,
      404,
      'the metrics listener serves nothing else',
    )
    const off = await unnarFor([upstream.url], { UNNAR_METRICS_ADDR: 'off' })
    assert.equal((await fetch(`${off.url}/metrics`)).status, 404)
  })

  it('logs one line per request with its id, status, bytes, duration, cache and upstream', async () => {
    const upstream = await upstreamFor()
    const unnar = await unnarFor([upstream.url])
    const given = await fetch(unnar.store(`${basicBase}/${BLOB}`), { headers: { 'X-Request-Id': 'trace-42' } })
    assert.equal(given.headers.get('x-request-id'), 'trace-42')
    await given.arrayBuffer()
    await eventually(() => requestLines(unnar).some((l) => l.id === 'trace-42'), 'the request line')
    const line = requestLines(unnar).find((l) => l.id === 'trace-42')!
    assert.equal(line.status, 200)
    assert.equal(line.method, 'GET')
    assert.equal(line.cache, 'miss')
    assert.equal(line.upstream, upstream.url)
    assert.ok((line.bytes as number) > basic.entries[BLOB]!.size!, 'body and headers')
    assert.equal(typeof line.ms, 'number')

    await eventually(() => unnar.narStore.entries === 1, 'the NAR committed')
    const hit = await fetch(unnar.store(`${basicBase}/${BLOB}`), { headers: { 'X-Request-Id': 'bad id with spaces' } })
    await hit.arrayBuffer()
    const id = hit.headers.get('x-request-id')
    assert.match(id ?? '', /^[0-9a-f]{8}-[0-9a-z]+$/, 'an unusable client id is replaced')
    await eventually(() => requestLines(unnar).some((l) => l.id === id), 'the second request line')
    assert.equal(requestLines(unnar).find((l) => l.id === id)!.cache, 'hit')
  })

  it('logs the effective configuration at start with secrets redacted', async () => {
    const upstream = await upstreamFor()
    const withAuth = upstream.url.replace('http://', 'http://user:pw-secret@')
    const unnar = await unnarFor([withAuth], { UNNAR_UPSTREAM_TOKENS: 'example.org=tok-secret' })
    const start = unnar.logs.find((l) => l.msg === 'unnar listening')
    assert.ok(start !== undefined)
    const text = JSON.stringify(unnar.logs)
    assert.ok(!text.includes('pw-secret') && !text.includes('tok-secret'), text)
    await (await fetch(unnar.store(`${basicBase}/${BLOB}`))).arrayBuffer()
    const exposed = `${await metricsText(unnar.url)}${await (await fetch(`${unnar.url}/api/upstreams`)).text()}`
    assert.ok(exposed.includes('unnar_upstream_requests_total{upstream="http://127.0.0.1'), 'the upstream is labelled')
    assert.ok(
      !exposed.includes('pw-secret') && !exposed.includes('user:'),
      'no credentials in metrics or /api/upstreams',
    )
    assert.match(JSON.stringify(start.config), /"maxDownloads":8/)
  })

  it('answers /readyz 200 with a healthy upstream and 503 when every upstream fails', async () => {
    const upstream = await upstreamFor()
    const unnar = await unnarFor([upstream.url], { UNNAR_NEGATIVE_TTL: '0.001' })
    const ready = await fetch(`${unnar.url}/readyz`)
    assert.equal(ready.status, 200)
    assert.equal(((await ready.json()) as { ready: boolean }).ready, true)
    upstream.setFault(/\.narinfo$/, { kind: 'status', status: 500 })
    assert.equal((await fetch(unnar.store(`${site.hash}-${site.name}/`))).status, 502)
    const failing = await fetch(`${unnar.url}/readyz`)
    assert.equal(failing.status, 503)
    assert.match(((await failing.json()) as { reason: string }).reason, /every upstream is failing/)
    assert.equal((await fetch(`${unnar.url}/healthz`)).status, 200, 'liveness does not depend on upstreams')
  })

  it('queues downloads beyond UNNAR_MAX_DOWNLOADS instead of failing them', async () => {
    const upstream = await upstreamFor()
    upstream.setFault(NAR, { kind: 'throttle', bytesPerSecond: 1_000_000 })
    const unnar = await unnarFor([upstream.url], { UNNAR_MAX_DOWNLOADS: '1' })
    const blob = fetch(unnar.store(`${basicBase}/${BLOB}`)).then(
      async (r) => [r.status, await sha256Hex(await r.arrayBuffer())] as const,
    )
    await eventually(() => unnar.narStore.downloads.active === 1, 'the first download running')
    const other = fetch(unnar.store(`${site.hash}-${site.name}/docs/guide.md`)).then(
      async (r) => [r.status, await sha256Hex(await r.arrayBuffer())] as const,
    )
    await eventually(() => unnar.narStore.downloads.queued === 1, 'the second download queued')
    assert.equal(sample(await metricsText(unnar.url), 'unnar_nar_downloads_queued'), 1)
    assert.equal(upstream.count(NAR), 1, 'the queued download has not started')
    assert.deepEqual(await blob, [200, basic.entries[BLOB]!.sha256])
    assert.deepEqual(await other, [200, site.entries['docs/guide.md']!.sha256])
    assert.equal(upstream.count(NAR), 2)
  })

  it('answers 414 for request targets over UNNAR_MAX_URL_LENGTH', async () => {
    const upstream = await upstreamFor()
    const unnar = await unnarFor([upstream.url], { UNNAR_MAX_URL_LENGTH: '200' })
    const long = await rawRequest(unnar.store(`${basicBase}/${'a'.repeat(300)}`))
    assert.equal(long.status, 414)
    assert.match(long.body.toString(), /limit is 200/)
    assert.equal((await fetch(unnar.store(`${basicBase}/${BLOB}`))).status, 200)
  })

  it('closes connections that send their headers too slowly, while serving others', async () => {
    const upstream = await upstreamFor()
    const unnar = await unnarFor([upstream.url], { UNNAR_HEADER_TIMEOUT: '1' })
    const { port } = new URL(unnar.url)
    const slow = net.connect(Number(port), '127.0.0.1')
    let received = ''
    slow.on('data', (d: Buffer) => (received += d.toString()))
    const closed = new Promise<void>((resolve) => slow.on('close', () => resolve()))
    slow.write('GET /healthz HTTP/1.1\r\n')
    const drip = setInterval(() => slow.writable && slow.write('X-A: b\r\n'), 300)
    assert.equal((await fetch(`${unnar.url}/healthz`)).status, 200, 'other clients are served meanwhile')
    await closed
    clearInterval(drip)
    assert.doesNotMatch(received, /200 OK/)
  })

  it('drops connections beyond UNNAR_MAX_CONNECTIONS', async () => {
    const upstream = await upstreamFor()
    const unnar = await unnarFor([upstream.url], { UNNAR_MAX_CONNECTIONS: '2' })
    const agent = new http.Agent({ keepAlive: true, maxSockets: 2 })
    const get = (a: http.Agent | false) =>
      new Promise<number>((resolve, reject) => {
        http
          .get(`${unnar.url}/healthz`, { agent: a }, (res) => {
            res.resume()
            res.on('end', () => resolve(res.statusCode ?? 0))
          })
          .on('error', reject)
      })
    assert.deepEqual(await Promise.all([get(agent), get(agent)]), [200, 200])
    await assert.rejects(get(false), /ECONNRESET|socket hang up/)
    agent.destroy()
  })

  it('listens on a unix socket, replacing a stale socket file', async () => {
    const upstream = await upstreamFor()
    const dir = await mkdtemp(path.join(os.tmpdir(), 'unnar-sock-'))
    cleanups.push(() => rm(dir, { recursive: true, force: true }))
    const socketPath = path.join(dir, 'unnar.sock')
    // A socket file nobody listens on any more, as a killed process leaves it.
    const killed = spawn(process.execPath, [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(socketPath)}, () => process.kill(process.pid, 'SIGKILL'))`,
    ])
    await new Promise((resolve) => killed.on('exit', resolve))
    assert.ok((await stat(socketPath)).isSocket())
    const unnar = await unnarFor([upstream.url], { UNNAR_SOCKET: socketPath })
    assert.equal(unnar.socketPath, socketPath)
    const body = await new Promise<string>((resolve, reject) => {
      http
        .get({ socketPath, path: `/nix/store/${basicBase}/${BLOB}` }, (res) => {
          const chunks: Buffer[] = []
          res.on('data', (c: Buffer) => chunks.push(c))
          res.on('end', () => resolve(`${res.statusCode} ${Buffer.concat(chunks).length}`))
        })
        .on('error', reject)
    })
    assert.equal(body, `200 ${basic.entries[BLOB]!.size}`)
  })

  it('listens on IPv6', async (t) => {
    const upstream = await upstreamFor()
    const v6 = Object.values(os.networkInterfaces())
      .flat()
      .some((i) => i?.address === '::1')
    if (!v6) return t.skip('no IPv6 loopback on this machine')
    const unnar = await unnarFor([upstream.url], { HTTP_ADDR: '[::1]:0' })
    assert.match(unnar.url, /^http:\/\/\[::1\]:\d+$/)
    assert.equal((await fetch(`${unnar.url}/healthz`)).status, 200)
  })

  it('shuts down gracefully: no new connections, in-flight responses finish, nothing partial left', async () => {
    const upstream = await upstreamFor()
    upstream.setFault(NAR, { kind: 'throttle', bytesPerSecond: 2_000_000 })
    const unnar = await startUnnar([upstream.url], { UNNAR_SHUTDOWN_TIMEOUT: '30' })
    cleanups.push(() => rm(unnar.cacheDir, { recursive: true, force: true }))
    const inFlight = fetch(unnar.store(`${basicBase}/${BLOB}`)).then(
      async (r) => [r.status, await sha256Hex(await r.arrayBuffer())] as const,
    )
    await eventually(() => unnar.narStore.downloads.active === 1, 'the download running')
    const stopped = unnar.shutdown()
    await assert.rejects(fetch(`${unnar.url}/healthz`), 'no new connections')
    assert.deepEqual(await inFlight, [200, basic.entries[BLOB]!.sha256])
    await stopped
    assert.deepEqual(await readdir(path.join(unnar.cacheDir, 'tmp')), [], 'no temp file left')
  })

  it('bounds the shutdown wait by UNNAR_SHUTDOWN_TIMEOUT and leaves no partial entry', async () => {
    const upstream = await upstreamFor()
    upstream.setFault(NAR, { kind: 'throttle', bytesPerSecond: 100_000 })
    const unnar = await startUnnar([upstream.url], { UNNAR_SHUTDOWN_TIMEOUT: '1' })
    cleanups.push(() => rm(unnar.cacheDir, { recursive: true, force: true }))
    const inFlight = rawRequest(unnar.store(`${basicBase}/${BLOB}`)).then(
      (r) => r.body.length,
      () => -1,
    )
    await eventually(() => unnar.narStore.downloads.active === 1, 'the download running')
    const started = Date.now()
    await unnar.shutdown()
    assert.ok(Date.now() - started < 10_000, 'shutdown did not wait for the 30 s transfer')
    const got = await inFlight
    assert.ok(got < basic.entries[BLOB]!.size!, 'the unfinished response was cut, not completed')
    await eventually(async () => (await readdir(path.join(unnar.cacheDir, 'tmp'))).length === 0, 'temp files removed')
    assert.deepEqual(await readdir(path.join(unnar.cacheDir, 'nar')), [], 'nothing committed')
  })

  it('stops on SIGTERM with exit code 0 after finishing requests', async () => {
    const upstream = await upstreamFor()
    const dir = await mkdtemp(path.join(os.tmpdir(), 'unnar-sigterm-'))
    cleanups.push(() => rm(dir, { recursive: true, force: true }))
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', 'src/main.ts', '--listen', '127.0.0.1:0', '--upstream', upstream.url, '--cache-dir', dir],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    )
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    await eventually(() => /"unnar listening"/.test(stderr), 'the start line', 30_000)
    const url = /"url":"(http:[^"]+)"/.exec(stderr)![1]!
    assert.equal((await fetch(`${url}/healthz`)).status, 200)
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
    child.kill('SIGTERM')
    assert.equal(await exited, 0)
    assert.match(stderr, /"msg":"stopped"/)
  })
})
