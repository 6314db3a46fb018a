/**
 * Confinement by construction (issue 19), as properties: whatever a narinfo's `URL:` says (it is not
 * covered by the signature), unnar asks only its own cache for it. Checked where requests leave the
 * process, not on a checker's return value:
 *
 * - a recording upstream (node:http on 127.0.0.1, cache under `/cache`) checks every request it
 *   receives: raw target and parsed path below `/cache/` with no dot segment (also encoded), its own
 *   Host, no credentials;
 * - decoy listeners on other ports (127.0.0.1, 127.0.0.2 and ::1 where they can be bound) count
 *   connections, which must stay at zero;
 * - every HTTP request this process starts (diagnostics_channel `http.client.request.start`) must go
 *   to the upstream: this sees the ones to hosts nobody listens on (169.254.169.254) too;
 * - for file://, the bytes a FileUpstream returns (never the decoy's, only files below the root).
 *
 * Four harnessed properties (test/fuzz/runner.ts): HTTP through PathInfoLookup as the store uses it,
 * the same through the whole server, file:// and s3://. Used by fuzz.test.ts and bench/fuzz.ts.
 */
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import diagnostics from 'node:diagnostics_channel'
import { mkdir, mkdtemp, realpath, rm, symlink as makeSymlink, writeFile } from 'node:fs/promises'
import http from 'node:http'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import type { Readable } from 'node:stream'
import { pathToFileURL } from 'node:url'
import fc from 'fast-check'
import { formatHashNix32 } from '../../src/formats/hash.js'
import { encodeNix32 } from '../../src/formats/nixbase32.js'
import { createLogger } from '../../src/log.js'
import { createUpstream } from '../../src/upstream/create-upstream.js'
import { PathInfoLookup, UpstreamsFailedError } from '../../src/upstream/path-info-lookup.js'
import { S3Upstream } from '../../src/upstream/s3-upstream.js'
import { type ByteRange, type Upstream, UpstreamError } from '../../src/upstream/upstream.js'
import { buildNar, directory, regular } from '../formats/nar-builder.js'
import { startUnnar } from '../helpers/unnar.js'
import { listen } from '../helpers/listen.js'
import { hostileNarUrl } from './arbitraries.js'
import type { Harness, HarnessedProperty } from './runner.js'

const BASE = '/cache/'
/** The one object of the cache that accepted URLs are expected to reach. */
const GOOD_KEY = 'nar/good.nar'
const GOOD_FILE = 'hello.txt'
const UPSTREAM_OPTIONS = { userAgent: 'unnar-fuzz', timeoutMs: 5_000, connectTimeoutMs: 1_000, idleTimeoutMs: 5_000 }

/** URLs that must be accepted and fetched: keys exactly like these are checked to reach the good NAR. */
const MUST_FETCH = /^nar\/good\.nar(\?[A-Za-z0-9=&]*)?$/

/** A fresh store hash per case: narinfos, listings and failures cached under an earlier case's hash never answer it. */
function freshHash(): string {
  return encodeNix32(randomBytes(20))
}

// ---------------------------------------------------------------------------------------------
// Where requests leave the process

/**
 * Why a request target (raw, as it came off the wire) is not a plain path below `/cache/`, or
 * undefined. Checked on the raw string and on what `new URL` makes of it: both must be below the
 * base, every path segment non-empty and no `.`/`..` (also as `%2e`), no `\`, no encoded `/` or `\`.
 */
function targetProblem(target: string): string | undefined {
  if (/[^\x21-\x7e]/.test(target)) return 'unprintable characters in the target'
  if (!target.startsWith(BASE)) return `not below ${BASE}`
  const query = target.indexOf('?')
  const raw = segmentsProblem((query < 0 ? target : target.slice(0, query)).slice(BASE.length))
  if (raw !== undefined) return `raw path: ${raw}`
  let parsed: URL
  try {
    parsed = new URL(target, 'http://x')
  } catch {
    return 'new URL cannot parse it'
  }
  if (parsed.host !== 'x' || parsed.username !== '' || parsed.password !== '')
    return `new URL reads another host (${parsed.host})`
  if (!parsed.pathname.startsWith(BASE)) return `new URL reads the path ${parsed.pathname}`
  const parsedProblem = segmentsProblem(parsed.pathname.slice(BASE.length))
  return parsedProblem === undefined ? undefined : `path as new URL reads it: ${parsedProblem}`
}

function segmentsProblem(rest: string): string | undefined {
  for (const segment of rest.split('/')) {
    if (segment === '') return 'an empty segment'
    if (/^\.{1,2}$/.test(segment.replace(/%2e/gi, '.'))) return `a dot segment (${segment})`
    if (segment.includes('\\')) return 'a backslash'
    if (/%(2f|5c)/i.test(segment)) return 'an encoded separator'
  }
  return undefined
}

/** One line for a violation: what was asked, of whom, and why it is wrong. */
function describeRequest(
  where: string,
  method: string | undefined,
  target: string,
  host: string | undefined,
  why: string,
): string {
  return `${where}: ${method ?? '?'} ${JSON.stringify(target)} Host ${JSON.stringify(host ?? '')}: ${why}`
}

interface Recorded {
  readonly method: string
  readonly target: string
  readonly host: string | undefined
}

/**
 * A node:http server on 127.0.0.1 that checks every request it receives (`problem`, undefined =
 * fine) before `answer` answers it. Violations and requests are kept for the cases to look at.
 */
interface RecordingServer {
  readonly port: number
  readonly host: string
  readonly requests: Recorded[]
  readonly violations: string[]
  /**
   * Resolves once a request for exactly `target` has arrived (among `requests` from index `since`
   * on); rejects after `ms`, naming it, so that a request that never comes fails the case readably.
   */
  asked(target: string, since: number, ms?: number): Promise<void>
  close(): Promise<void>
}

async function startRecordingServer(
  problem: (req: http.IncomingMessage) => string | undefined,
  answer: (req: http.IncomingMessage, res: http.ServerResponse) => void,
): Promise<RecordingServer> {
  const requests: Recorded[] = []
  const violations: string[] = []
  const waiters = new Set<{ readonly target: string; readonly resolve: () => void }>()
  let host = ''
  const server = http.createServer((req, res) => {
    const target = req.url ?? ''
    requests.push({ method: req.method ?? '', target, host: req.headers.host })
    const why = req.headers.host !== host ? `Host is not ${host}` : problem(req)
    if (why !== undefined)
      violations.push(describeRequest('upstream received', req.method, target, req.headers.host, why))
    for (const waiter of waiters) if (waiter.target === target) waiter.resolve()
    answer(req, res)
  })
  server.keepAliveTimeout = 60_000
  await listen(server, '127.0.0.1')
  const port = (server.address() as net.AddressInfo).port
  host = `127.0.0.1:${port}`
  return {
    port,
    host,
    requests,
    violations,
    asked: (target, since, ms = 20_000) => {
      if (requests.slice(since).some((r) => r.target === target)) return Promise.resolve()
      return new Promise<void>((resolve, reject) => {
        const waiter = {
          target,
          resolve: () => {
            clearTimeout(timer)
            waiters.delete(waiter)
            resolve()
          },
        }
        const timer = setTimeout(() => {
          waiters.delete(waiter)
          reject(new Error(`the upstream was never asked for ${target}`))
        }, ms)
        waiters.add(waiter)
      })
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}

interface Decoys {
  /** `host:port` of each decoy, in the spellings that reach it. */
  readonly hosts: readonly string[]
  readonly connections: () => number
  /** What connected (`remote → local`), for the failure message. */
  readonly seen: string[]
  close(): Promise<void>
}

/** Listeners that must never be contacted: 127.0.0.1 (another port), 127.0.0.2 and ::1 where they can be bound. */
async function startDecoys(): Promise<Decoys> {
  let connections = 0
  const seen: string[] = []
  const servers: net.Server[] = []
  const hosts: string[] = []
  for (const address of ['127.0.0.1', '127.0.0.2', '::1']) {
    const server = net.createServer((socket) => {
      connections++
      seen.push(`${socket.remoteAddress}:${socket.remotePort} → ${socket.localAddress}:${socket.localPort}`)
      socket.destroy()
    })
    try {
      await listen(server, address)
    } catch {
      continue // no 127.0.0.2 or no IPv6 here
    }
    servers.push(server)
    const port = (server.address() as net.AddressInfo).port
    if (address === '::1') hosts.push(`[::1]:${port}`)
    else hosts.push(`${address}:${port}`)
    if (address === '127.0.0.1') hosts.push(`localhost:${port}`)
  }
  return {
    hosts,
    connections: () => connections,
    seen,
    close: async () => {
      await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))))
    },
  }
}

/**
 * Every HTTP request node:http starts in this process (the http(s) upstream's and the S3 SDK's
 * alike), checked for going to `host` with a target below `/cache/`.
 */
interface OutgoingRequests {
  readonly count: () => number
  readonly violations: string[]
  close(): void
}

function watchOutgoingRequests(
  host: string,
  problem: (target: string) => string | undefined = targetProblem,
): OutgoingRequests {
  let count = 0
  const violations: string[] = []
  const onStart = (message: unknown): void => {
    const request = (message as { request: http.ClientRequest }).request
    count++
    const target = request.path
    const sentHost = request.getHeader('host')
    const hostText = typeof sentHost === 'string' ? sentHost : `${request.host}:?`
    let why =
      request.protocol !== 'http:'
        ? `protocol ${request.protocol}`
        : hostText !== host
          ? `to ${hostText}, not ${host}`
          : problem(target)
    const authorization = request.getHeader('authorization')
    // The S3 SDK signs every request (SigV4); the http upstream has no credentials to send here.
    if (
      why === undefined &&
      authorization !== undefined &&
      !/^AWS4-HMAC-SHA256 Credential=unnar-fuzz\//.test(String(authorization))
    )
      why = 'it carries credentials (Authorization)'
    if (why !== undefined) violations.push(describeRequest('process sent', request.method, target, hostText, why))
  }
  diagnostics.subscribe('http.client.request.start', onStart)
  return { count: () => count, violations, close: () => diagnostics.unsubscribe('http.client.request.start', onStart) }
}

interface Mark {
  readonly requests: number
  readonly violations: number
  readonly outgoing: number
  readonly decoys: number
}

/** The three observation points, and what each has seen so far. */
class Watch {
  readonly #server: RecordingServer
  readonly #decoys: Decoys
  readonly #outgoing: OutgoingRequests
  /** Violations up to these were looked at by a case already. */
  #checked = { violations: 0, outgoing: 0, decoys: 0 }
  constructor(server: RecordingServer, decoys: Decoys, outgoing: OutgoingRequests) {
    this.#server = server
    this.#decoys = decoys
    this.#outgoing = outgoing
  }

  mark(): Mark {
    return {
      requests: this.#server.requests.length,
      violations: this.#server.violations.length,
      outgoing: this.#outgoing.violations.length,
      decoys: this.#decoys.connections(),
    }
  }

  /**
   * Throws, listing what went wrong, when anything left the cache since the last check (since
   * `mark`, unless something arrived after an earlier case was checked: that is reported here too).
   */
  assertConfined(mark: Mark, what: string): void {
    const from = this.#checked
    const now = {
      violations: this.#server.violations.length,
      outgoing: this.#outgoing.violations.length,
      decoys: this.#decoys.connections(),
    }
    this.#checked = now
    const problems = [
      ...this.#server.violations.slice(from.violations),
      ...this.#outgoing.violations.slice(from.outgoing),
    ]
    const decoys = now.decoys - from.decoys
    if (decoys > 0)
      problems.push(`${decoys} connection(s) to a decoy listener (${this.#decoys.seen.slice(-decoys).join(', ')})`)
    if (problems.length === 0) return
    const late =
      from.violations < mark.violations || from.outgoing < mark.outgoing || from.decoys < mark.decoys
        ? ' (or an earlier case, after it was checked)'
        : ''
    const asked = this.#server.requests.slice(mark.requests).map((r) => `${r.method} ${JSON.stringify(r.target)}`)
    assert.fail(
      `${what}${late} led outside the cache:\n  ${problems.join('\n  ')}\n  (the upstream received in this case: ${asked.join(', ') || 'nothing'})`,
    )
  }

  /** After the run: nothing left the cache after the last case was checked, and the process-wide watch saw requests at all. */
  assertNothingLate(): void {
    assert.ok(
      this.#outgoing.count() > 0,
      'diagnostics_channel http.client.request.start saw no request: that watch is blind',
    )
    const problems = [
      ...this.#server.violations.slice(this.#checked.violations),
      ...this.#outgoing.violations.slice(this.#checked.outgoing),
    ]
    const decoys = this.#decoys.connections() - this.#checked.decoys
    if (decoys > 0) problems.push(`${decoys} connection(s) to a decoy listener`)
    if (problems.length > 0) assert.fail(`after the last case, requests left the cache:\n  ${problems.join('\n  ')}`)
  }

  requestsSince(mark: Mark): readonly Recorded[] {
    return this.#server.requests.slice(mark.requests)
  }

  /** Drops the requests kept so far (a long run would keep every one); violations are kept. */
  forgetRequests(): void {
    this.#server.requests.length = 0
  }
}

// ---------------------------------------------------------------------------------------------
// (a) and (b): an http:// cache whose narinfos carry the generated URL

/** One case's store path: its NAR (served as `nar/good.nar`) and the contents of its one file. */
interface Published {
  readonly nar: Buffer
  readonly contents: string
}

interface HttpCache {
  readonly url: string
  readonly watch: Watch
  readonly decoys: Decoys
  readonly server: RecordingServer
  /**
   * Serves `<hash>.narinfo` with `URL: <url>` written verbatim (an LF in it simply breaks the
   * narinfo), and a NAR of its own as `nar/good.nar`: a NAR that is new to unnar every case, so
   * that it is fetched by the URL, never answered from unnar's cache (which knows NARs by NarHash).
   */
  publish(hash: string, url: string): Published
  unpublish(hash: string): void
  close(): Promise<void>
}

async function startHttpCache(): Promise<HttpCache> {
  const narInfos = new Map<string, string>()
  let nar = Buffer.alloc(0)
  const decoys = await startDecoys()
  let server: RecordingServer
  try {
    server = await startRecordingServer(
      (req) =>
        req.method !== 'GET'
          ? `method ${req.method}`
          : req.headers.authorization !== undefined
            ? 'it carries credentials (Authorization)'
            : targetProblem(req.url ?? ''),
      (req, res) => {
        const target = req.url ?? ''
        const pathname = target.split('?')[0]!
        const narInfo = /^\/cache\/([0-9a-z]{32})\.narinfo$/.exec(pathname)
        const text = narInfo === null ? undefined : narInfos.get(narInfo[1]!)
        if (text !== undefined) {
          res.end(text)
        } else if (pathname === `${BASE}${GOOD_KEY}`) {
          res.setHeader('content-length', nar.length)
          res.end(nar)
        } else if (pathname === `${BASE}nix-cache-info`) {
          res.end('StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n')
        } else {
          res.statusCode = 404
          res.end('not here')
        }
      },
    )
  } catch (err) {
    await decoys.close()
    throw err
  }
  const outgoing = watchOutgoingRequests(server.host)
  return {
    url: `http://${server.host}/cache`,
    watch: new Watch(server, decoys, outgoing),
    decoys,
    server,
    publish: (hash, url) => {
      const contents = `the good file of ${hash}\n`
      nar = Buffer.from(buildNar(directory({ [GOOD_FILE]: regular(contents) })))
      const narHash = formatHashNix32({
        algorithm: 'sha256',
        digest: new Uint8Array(createHash('sha256').update(nar).digest()),
      })
      narInfos.set(
        hash,
        `StorePath: /nix/store/${hash}-x\nURL: ${url}\nCompression: none\nNarHash: ${narHash}\nNarSize: ${nar.length}\nReferences: \n`,
      )
      return { nar, contents }
    },
    unpublish: (hash) => narInfos.delete(hash),
    close: async () => {
      outgoing.close()
      await Promise.all([server.close(), decoys.close()])
    },
  }
}

function httpUrls(cache: HttpCache): fc.Arbitrary<string> {
  const self = cache.server.host
  return hostileNarUrl({
    decoyHosts: cache.decoys.hosts,
    selfHosts: [self, `localhost:${cache.server.port}`],
    goodKeys: [GOOD_KEY],
    names: [
      'cache',
      'cache/nar/good.nar',
      '../cache/nar/good.nar',
      '../other/nar/good.nar',
      'nix-cache-info',
      `//${self}/cache/nar/good.nar`,
      `http://${self}/cache/nar/good.nar`,
    ],
  })
}

/** An Upstream that remembers its pending requests, so that a case can wait for all of them to be over. */
function settling(inner: Upstream): { readonly upstream: Upstream; settled(): Promise<void> } {
  const pending = new Set<Promise<unknown>>()
  return {
    upstream: {
      name: inner.name,
      get(key: string, signal?: AbortSignal, range?: ByteRange) {
        const request = inner.get(key, signal, range)
        pending.add(request)
        const done = (): void => void pending.delete(request)
        request.then(done, done)
        return request
      },
    },
    settled: async () => {
      while (pending.size > 0) await Promise.allSettled([...pending])
    },
  }
}

async function readAll(body: Readable): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of body) chunks.push(Buffer.from(chunk as Uint8Array))
  return Buffer.concat(chunks)
}

/** An UpstreamError or UpstreamsFailedError is an answer (the URL was refused, the narinfo broken); anything else fails the case. */
function expectedFailure(err: unknown): void {
  if (!(err instanceof UpstreamError || err instanceof UpstreamsFailedError)) throw err
}

const logger = createLogger('silent')

/** What a setup has started, closed in reverse order: by the harness's close(), or at once when the setup fails half-way. */
class Resources {
  readonly #closers: Array<() => Promise<void> | void> = []
  defer(close: () => Promise<void> | void): void {
    this.#closers.push(close)
  }
  async close(): Promise<void> {
    for (let close = this.#closers.pop(); close !== undefined; close = this.#closers.pop()) await close()
  }
}

async function settingUp<T>(build: (resources: Resources) => Promise<T>): Promise<T> {
  const resources = new Resources()
  try {
    return await build(resources)
  } catch (err) {
    await resources.close()
    throw err
  }
}

/** (a) PathInfoLookup over an HttpUpstream, then the NAR fetched as the store does: `info.upstream.get(info.narKey)`. */
export const httpConfinement: HarnessedProperty = {
  name: 'narinfo URLs reach only the http upstream cache (lookup and NAR fetch)',
  runs: { test: 600, fuzz: 40_000 },
  setup: () =>
    settingUp(async (resources): Promise<Harness<string>> => {
      const cache = await startHttpCache()
      resources.defer(() => cache.close())
      const upstream = createUpstream(cache.url, UPSTREAM_OPTIONS)
      const counts = { fetchedGood: 0, fetchedOther: 0, missing: 0, refused: 0, brokenNarInfo: 0 }
      const lookup = new PathInfoLookup([], {
        log: logger,
        negativeTtlMs: 60_000,
        maxEntries: 100,
        trustedKeys: () => undefined,
      })
      const property = fc.asyncProperty(httpUrls(cache), async (url) => {
        const hash = freshHash()
        const published = cache.publish(hash, url)
        const mark = cache.watch.mark()
        // A new Upstream object per case (the same HttpUpstream inside): the lookup's circuit breaker,
        // which counts failures per Upstream, would otherwise leave it out after three refusals.
        const tracked = settling(upstream)
        lookup.reorder([tracked.upstream])
        let fetched: Buffer | undefined
        try {
          const info = await lookup.find(hash)
          assert.ok(info !== undefined, 'the narinfo is there')
          const res = await info.upstream.get(info.narKey)
          if (res !== undefined) fetched = await readAll(res.body)
          else counts.missing++
        } catch (err) {
          expectedFailure(err)
          if (/URL outside the cache/.test((err as Error).message)) counts.refused++
          else if (/invalid [0-9a-z]{32}\.narinfo/.test((err as Error).message)) counts.brokenNarInfo++
        } finally {
          await tracked.settled()
          cache.unpublish(hash)
        }
        cache.watch.assertConfined(mark, `narinfo URL ${JSON.stringify(url)}`)
        if (fetched !== undefined) {
          if (published.nar.equals(fetched)) counts.fetchedGood++
          else counts.fetchedOther++
        }
        if (MUST_FETCH.test(url))
          assert.ok(
            fetched !== undefined && published.nar.equals(fetched),
            `${JSON.stringify(url)} is a plain key of the cache's NAR: it must be fetched`,
          )
        cache.watch.forgetRequests()
      })
      return {
        property,
        examples: [
          GOOD_KEY,
          `${GOOD_KEY}?hash=abc`,
          `http://${cache.decoys.hosts[0]}/nar/x.nar`,
          `https:${cache.decoys.hosts[0]}/x`,
          `\thttp://${cache.decoys.hosts[0]}/x`,
          'nar/%2e%2e/%2e%2e/x.nar',
        ],
        close: async () => {
          await resources.close()
          cache.watch.assertNothingLate()
          assert.ok(counts.fetchedGood > 0, 'no generated URL was accepted and fetched: the property is vacuous')
          return `${counts.fetchedGood} fetched the good NAR, ${counts.fetchedOther} fetched another object of the cache, ${counts.missing} asked for a key the cache does not have, ${counts.refused} refused as outside the cache, ${counts.brokenNarInfo} broke the narinfo`
        },
      }
    }),
}

/** The 502s a URL inside the cache can get: its narinfo is broken, or what it names is missing or no NAR. */
const OTHER_502 = /invalid [0-9a-z]{32}\.narinfo|NAR .* is missing|upstream sent a bad NAR/

/** (b) The same through the whole server: a store path's listing and a file of it. */
export const serverConfinement: HarnessedProperty = {
  name: 'narinfo URLs reach only the http upstream cache (through the server)',
  runs: { test: 100, fuzz: 2_000 },
  setup: () =>
    settingUp(async (resources): Promise<Harness<string>> => {
      const cache = await startHttpCache()
      resources.defer(() => cache.close())
      // Short upstream timeouts: a request to a host nobody answers (a bypass) fails the case in a second, not thirty.
      const unnar = await startUnnar([cache.url], {
        TRUSTED_PUBLIC_KEYS: '',
        UNNAR_UPSTREAM_TIMEOUT: '5',
        UNNAR_UPSTREAM_CONNECT_TIMEOUT: '1',
      })
      resources.defer(() => unnar.stop())
      const counts = { served: 0, refused: 0, other: 0 }
      const statuses = new Map<number, number>()
      /** Waits until the upstream has been asked for `<hash>.ls`: unnar asks for it beside the narinfo, and answers without waiting for it. */
      const listingAsked = (hash: string, mark: Mark): Promise<void> =>
        cache.server.asked(`${BASE}${hash}.ls`, mark.requests)
      const property = fc.asyncProperty(httpUrls(cache), async (url) => {
        const hash = freshHash()
        const published = cache.publish(hash, url)
        const mark = cache.watch.mark()
        const answers: Array<{ readonly rest: string; readonly status: number; readonly body: string }> = []
        try {
          for (const rest of ['/', `/${GOOD_FILE}`]) {
            const res = await fetch(unnar.store(`${hash}-x${rest}`))
            answers.push({ rest, status: res.status, body: await res.text() })
          }
          await listingAsked(hash, mark)
        } finally {
          cache.unpublish(hash)
        }
        const summary = answers.map((a) => `${a.rest}: ${a.status}`)
        // Where it went first; then what unnar answered.
        cache.watch.assertConfined(mark, `narinfo URL ${JSON.stringify(url)} (answers ${summary.join(', ')})`)
        for (const { rest, status, body } of answers) {
          statuses.set(status, (statuses.get(status) ?? 0) + 1)
          const shown = `${JSON.stringify(url)}: GET ${rest} answered ${status} ${JSON.stringify(body.slice(0, 300))}`
          if (status === 200) {
            if (rest === '/') assert.ok(body.includes(GOOD_FILE), shown)
            else assert.equal(body, published.contents, shown)
            counts.served++
          } else if (status === 502 && /URL outside the cache/.test(body)) {
            counts.refused++
          } else {
            // A broken narinfo (an LF or CR in the URL), a key the cache does not have, another
            // object of the cache that is no NAR; never a 500, never another host's answer.
            assert.ok(status === 404 || (status === 502 && OTHER_502.test(body)), shown)
            counts.other++
          }
        }
        if (MUST_FETCH.test(url))
          assert.deepEqual(summary, ['/: 200', `/${GOOD_FILE}: 200`], `${JSON.stringify(url)} must be served`)
        // A path nobody has: the upstream answers, which resets unnar's count of its failures (three in a row would leave it out).
        const reset = freshHash()
        const resetMark = cache.watch.mark()
        const res = await fetch(unnar.store(`${reset}-x/`))
        await res.arrayBuffer()
        assert.equal(res.status, 404)
        await listingAsked(reset, resetMark)
        cache.watch.forgetRequests()
        unnar.logs.length = 0
      })
      return {
        property,
        examples: [GOOD_KEY, `${GOOD_KEY}?hash=abc`, `https:${cache.decoys.hosts[0]}/x`],
        close: async () => {
          await resources.close()
          cache.watch.assertNothingLate()
          assert.ok(counts.served > 0, 'no generated URL was served: the property is vacuous')
          const byStatus = [...statuses].sort(([a], [b]) => a - b).map(([s, n]) => `${n}× ${s}`)
          return `${counts.served} answers from the good NAR, ${counts.refused} 502 "URL outside the cache", ${counts.other} other 404/502: broken narinfo, missing or bad NAR (${byStatus.join(', ')})`
        },
      }
    }),
}

// ---------------------------------------------------------------------------------------------
// (c) file://: a root with symlinks that lead out of it, and decoy files beside it

/** Every byte of a decoy file; no file inside the root has one. */
const DECOY_BYTE = 0xdd

export const fileConfinement: HarnessedProperty = {
  name: 'keys read only files below a file:// cache root, never through a symlink out',
  runs: { test: 1_000, fuzz: 35_000 },
  setup: () =>
    settingUp(async (resources): Promise<Harness<{ key: string; range: ByteRange | undefined }>> => {
      const tmp = await realpath(await mkdtemp(path.join(os.tmpdir(), 'unnar-fuzz-file-')))
      resources.defer(() => rm(tmp, { recursive: true, force: true }))
      const root = path.join(tmp, 'cache')
      const inside = new Map<string, string>() // relative path → contents (ASCII, no DECOY_BYTE)
      const put = async (rel: string, contents: string | Buffer): Promise<void> => {
        await mkdir(path.dirname(path.join(tmp, rel)), { recursive: true })
        await writeFile(path.join(tmp, rel), contents)
      }
      const decoy = Buffer.alloc(64, DECOY_BYTE)
      for (const rel of [
        'decoy.nar',
        'decoy.narinfo',
        'outside/decoy.nar',
        'outside/good.nar',
        'cache-evil/nar/good.nar',
        'cache-evil/good.narinfo',
      ])
        await put(rel, decoy)
      for (const rel of ['nar/good.nar', 'good.narinfo', 'good.ls', 'nix-cache-info', 'nar/sub/deep.nar.xz']) {
        const contents = `inside ${rel} ${randomBytes(4).toString('hex')}\n`
        inside.set(rel, contents)
        await put(`cache/${rel}`, contents)
      }
      const links: Array<[string, string]> = [
        ['nar/alias.nar', 'good.nar'], // inside: allowed
        ['inner', 'nar'], // a directory inside: allowed
        ['nar/escape.nar', '../../decoy.nar'],
        ['escape.narinfo', '../decoy.narinfo'],
        ['escape.ls', path.join(tmp, 'decoy.nar')],
        ['out', '../outside'],
        ['up', '..'],
        ['nar/chain.nar', '../out/decoy.nar'],
        ['evil', '../cache-evil'],
        ['loop', 'loop'],
      ]
      for (const [link, target] of links) await makeSymlink(target, path.join(root, link))
      const url = pathToFileURL(root).href
      const upstream = createUpstream(url, UPSTREAM_OPTIONS)
      const insideContents = [...inside.values()]
      const counts = { read: 0, missing: 0, refused: 0, failed: 0 }
      const keys = hostileNarUrl({
        decoyHosts: ['localhost', '127.0.0.1'],
        selfHosts: ['localhost', ''],
        goodKeys: [GOOD_KEY, 'good.narinfo', 'nar/alias.nar', 'inner/good.nar'],
        names: [
          'nar/escape.nar',
          'escape.narinfo',
          'escape.ls',
          'out/decoy.nar',
          'out/good.nar',
          'up/decoy.nar',
          'up/cache/nar/good.nar',
          'nar/chain.nar',
          'evil/nar/good.nar',
          '../cache-evil/nar/good.nar',
          'cache-evil',
          'decoy.nar',
          'loop',
          'loop/x',
          'nar/sub/deep.nar.xz',
          'nar/sub',
          path.join(tmp, 'decoy.nar'),
          `file://${path.join(tmp, 'decoy.nar')}`,
          `${root}-evil/nar/good.nar`,
          '../decoy.nar',
          'nar/../../decoy.nar',
        ],
      })
      const range = fc.option(
        fc
          .record({ start: fc.nat({ max: 40 }), length: fc.nat({ max: 40 }) })
          .map(({ start, length }) => ({ start, end: start + length })),
        { freq: 4, nil: undefined },
      )
      const cases = fc.record({ key: keys, range })
      const property = fc.asyncProperty(cases, async ({ key, range }) => {
        let res: Awaited<ReturnType<typeof upstream.get>>
        try {
          res = await upstream.get(key, undefined, range)
        } catch (err) {
          expectedFailure(err)
          if (/a URL outside the cache/.test((err as Error).message)) counts.refused++
          else counts.failed++
          return
        }
        if (key === GOOD_KEY)
          assert.ok(res !== undefined, `${JSON.stringify(key)} names a file of the cache: it must be read`)
        if (res === undefined) {
          counts.missing++
          return
        }
        // Where the bytes leave the upstream: never a decoy's, only one file's below the root.
        const body = await readAll(res.body)
        const what = `key ${JSON.stringify(key)}${range === undefined ? '' : ` bytes ${range.start}-${range.end}`}`
        assert.ok(
          !body.includes(DECOY_BYTE),
          `${what} read a file outside the root: ${JSON.stringify(body.toString('latin1'))}`,
        )
        const from = insideContents.find((c) =>
          range === undefined ? c === body.toString('latin1') : c.includes(body.toString('latin1')),
        )
        assert.ok(
          from !== undefined,
          `${what} read bytes of no file below the root: ${JSON.stringify(body.toString('latin1'))}`,
        )
        if (res.file !== undefined) {
          const real = await realpath(res.file)
          assert.ok(real.startsWith(root + path.sep), `${what} names the file ${real}, outside the root`)
        }
        counts.read++
      })
      return {
        property,
        examples: [
          { key: GOOD_KEY, range: undefined },
          { key: 'good.narinfo', range: undefined },
          { key: 'nar/escape.nar', range: undefined },
          { key: 'escape.narinfo', range: undefined },
          { key: 'up/decoy.nar', range: { start: 0, end: 10 } },
        ],
        close: async () => {
          await resources.close()
          assert.ok(counts.read > 0, 'no generated key was read: the property is vacuous')
          return `${counts.read} read a file below the root, ${counts.refused} refused as outside the cache, ${counts.missing} missing, ${counts.failed} other errors`
        },
      }
    }),
}

// ---------------------------------------------------------------------------------------------
// (d) s3://: a recording endpoint that answers every GetObject with NoSuchKey

const AWS_ENV = [
  'AWS_ACCESS_KEY_ID',
  'AWS_SECRET_ACCESS_KEY',
  'AWS_SESSION_TOKEN',
  'AWS_PROFILE',
  'AWS_REGION',
  'AWS_CONFIG_FILE',
  'AWS_SHARED_CREDENTIALS_FILE',
  'AWS_EC2_METADATA_DISABLED',
]

/** Sets the AWS_* variables (and only those given); returns the restorer. */
function setAwsEnv(values: Record<string, string>): () => void {
  const saved = new Map(AWS_ENV.map((k) => [k, process.env[k]]))
  for (const key of AWS_ENV) delete process.env[key]
  Object.assign(process.env, values)
  return () => {
    for (const [key, value] of saved) {
      if (value === undefined) delete process.env[key]
      else process.env[key] = value
    }
  }
}

/** Why an S3 request target is not `/cache/` + segments that each decode to a plain name, or undefined. */
function s3TargetProblem(target: string): string | undefined {
  if (/[^\x21-\x7e]/.test(target)) return 'unprintable characters in the target'
  if (!target.startsWith(BASE)) return `not below ${BASE}`
  const query = target.indexOf('?')
  for (const segment of (query < 0 ? target : target.slice(0, query)).slice(BASE.length).split('/')) {
    let decoded: string
    try {
      decoded = decodeURIComponent(segment)
    } catch {
      return `segment ${JSON.stringify(segment)} does not decode`
    }
    if (decoded === '' || decoded === '.' || decoded === '..')
      return `segment ${JSON.stringify(segment)} decodes to ${JSON.stringify(decoded)}`
    if (/[/\\]/.test(decoded)) return `segment ${JSON.stringify(segment)} decodes to a separator`
  }
  const parsed = new URL(target, 'http://x')
  if (parsed.host !== 'x' || !parsed.pathname.startsWith(BASE))
    return `new URL reads it as ${parsed.host}${parsed.pathname}`
  return undefined
}

/** The key an S3 request target names (its path below the bucket, decoded). */
function s3Key(target: string): string {
  const query = target.indexOf('?')
  return (query < 0 ? target : target.slice(0, query))
    .slice(BASE.length)
    .split('/')
    .map((s) => decodeURIComponent(s))
    .join('/')
}

export const s3Confinement: HarnessedProperty = {
  name: 'keys reach only their own object of the s3 bucket',
  runs: { test: 600, fuzz: 30_000 },
  setup: () =>
    settingUp(async (resources): Promise<Harness<string>> => {
      const restoreEnv = setAwsEnv({
        AWS_ACCESS_KEY_ID: 'unnar-fuzz',
        AWS_SECRET_ACCESS_KEY: 'unnar-fuzz-secret',
        AWS_EC2_METADATA_DISABLED: 'true',
        AWS_CONFIG_FILE: path.join(os.tmpdir(), 'unnar-fuzz-no-aws-config'),
        AWS_SHARED_CREDENTIALS_FILE: path.join(os.tmpdir(), 'unnar-fuzz-no-aws-credentials'),
      })
      resources.defer(restoreEnv)
      const decoys = await startDecoys()
      resources.defer(() => decoys.close())
      const server = await startRecordingServer(
        (req) => (req.method !== 'GET' ? `method ${req.method}` : s3TargetProblem(req.url ?? '')),
        (_req, res) => {
          res.statusCode = 404
          res.setHeader('content-type', 'application/xml')
          res.end(
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message><RequestId>1</RequestId></Error>',
          )
        },
      )
      resources.defer(() => server.close())
      const outgoing = watchOutgoingRequests(server.host, s3TargetProblem)
      resources.defer(() => outgoing.close())
      const watch = new Watch(server, decoys, outgoing)
      const upstream = createUpstream(
        `s3://cache?endpoint=${server.host}&scheme=http&region=us-east-1`,
        UPSTREAM_OPTIONS,
      )
      resources.defer(() => {
        if (upstream instanceof S3Upstream) upstream.destroy()
      })
      const counts = { asked: 0, refused: 0 }
      // Loads the SDK and checks the endpoint is reached at all.
      assert.equal(await upstream.get('nix-cache-info'), undefined)
      assert.deepEqual(
        server.requests.map((r) => s3Key(r.target)),
        ['nix-cache-info'],
      )
      watch.forgetRequests()
      const keys = hostileNarUrl({
        decoyHosts: decoys.hosts,
        selfHosts: [server.host, `localhost:${server.port}`],
        goodKeys: [GOOD_KEY, 'abc.narinfo'],
        names: [
          'cache',
          'cache/nar/good.nar',
          '?x-id=ListObjects',
          '?list-type=2',
          '?acl',
          '?versionId=1',
          '?uploads',
          'x-id=GetObject',
          '%3F',
          '%252e%252e',
          'other-bucket',
        ],
      })
      const property = fc.asyncProperty(keys, async (key) => {
        const mark = watch.mark()
        try {
          const res = await upstream.get(key)
          res?.body.destroy()
          assert.equal(res, undefined, 'the endpoint has no objects')
        } catch (err) {
          expectedFailure(err)
          if (/a URL outside the cache/.test((err as Error).message)) counts.refused++
        }
        watch.assertConfined(mark, `key ${JSON.stringify(key)}`)
        const asked = watch.requestsSince(mark)
        // The request names exactly this key, nothing derived from it.
        for (const request of asked)
          assert.equal(
            s3Key(request.target),
            key,
            `key ${JSON.stringify(key)} was asked for as ${JSON.stringify(request.target)}`,
          )
        if (asked.length > 0) counts.asked++
        if (MUST_FETCH.test(key))
          assert.ok(asked.length > 0, `${JSON.stringify(key)} is a plain key: it must be asked for`)
        watch.forgetRequests()
      })
      return {
        property,
        examples: [GOOD_KEY, `${GOOD_KEY}?hash=abc`, '../x', 'nar/%2e%2e/x', `https:${decoys.hosts[0]}/x`],
        close: async () => {
          await resources.close()
          watch.assertNothingLate()
          assert.ok(counts.asked > 0, 'no generated key reached the endpoint: the property is vacuous')
          return `${counts.asked} asked the bucket for their own key, ${counts.refused} refused as outside the cache`
        },
      }
    }),
}

/** The confinement properties, in the order they run; `runs.fuzz` adds up to 107,000 cases in `npm run fuzz`. */
export const CONFINEMENT_PROPERTIES: readonly HarnessedProperty[] = [
  httpConfinement,
  serverConfinement,
  fileConfinement,
  s3Confinement,
]
