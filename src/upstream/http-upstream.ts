/** An http(s):// binary cache, fetched with node:http over keep-alive connections. */
import http from 'node:http'
import https from 'node:https'
import type { LookupFunction } from 'node:net'
import { formatMs, guardBody } from './body-guard.js'
import type { CredentialSource } from './credential-files.js'
import { type Authorization, authorizationFor, type UpstreamCredentials } from './credentials.js'
import { keyProblem } from './cache-key.js'
import {
  type ByteRange,
  isExactRange,
  outsideCache,
  retryTransient,
  type Upstream,
  UpstreamError,
  type UpstreamResponse,
  type UpstreamTimeouts,
} from './upstream.js'

export interface HttpUpstreamOptions extends UpstreamTimeouts {
  readonly userAgent: string
  /** netrc entries and bearer tokens, asked for on every request; credentials in the URL win over both. */
  readonly credentials?: CredentialSource | undefined
  /** Host name resolution (tests pass one that never answers to model an unreachable host). */
  readonly lookup?: LookupFunction | undefined
}

const MISSING_STATUSES = new Set([403, 404, 410]) // Nix treats 403 like 404 (S3 without list permission)
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308])
const MAX_REDIRECTS = 5
const MAX_RETRY_AFTER_MS = 5_000

export class HttpUpstream implements Upstream {
  /** Scheme, host and path of the cache: no credentials, no query. */
  readonly name: string
  readonly #base: URL
  /** As given: it may carry `user:pass@`. */
  readonly #url: URL
  /** The credentials #authorization was made from. */
  #authorizedBy: UpstreamCredentials | undefined
  #authorization: Authorization | undefined
  #credentialsVersion = 0
  readonly #options: HttpUpstreamOptions
  readonly #agent: http.Agent

  constructor(url: URL, options: HttpUpstreamOptions) {
    this.#url = new URL(url.href)
    this.#authorization = authorizationFor(url)
    const base = new URL(url.href)
    base.username = ''
    base.password = ''
    base.search = '' // `?priority=N` is read by upstream-order, not sent
    base.hash = ''
    if (!base.pathname.endsWith('/')) base.pathname += '/'
    this.#base = base
    this.name = base.href.replace(/\/$/, '')
    this.#options = options
    const Agent = base.protocol === 'https:' ? https.Agent : http.Agent
    this.#agent = new Agent({ keepAlive: true, maxSockets: 64 })
  }

  credentialsVersion(): number {
    this.#currentAuthorization()
    return this.#credentialsVersion
  }

  /** The Authorization for the cache's own origin now (a credentials file may have changed). */
  #currentAuthorization(): Authorization | undefined {
    const credentials = this.#options.credentials?.current()
    if (credentials !== undefined && credentials !== this.#authorizedBy) {
      const authorization = authorizationFor(this.#url, credentials)
      if (this.#authorizedBy !== undefined && authorization?.header !== this.#authorization?.header)
        this.#credentialsVersion++
      this.#authorizedBy = credentials
      this.#authorization = authorization
    }
    return this.#authorization
  }

  /**
   * Transient failures (connection errors, 5xx, 408, 429) are retried with exponential backoff, or
   * after the server's Retry-After (capped), at most twice (retryTransient); a timeout is not retried.
   */
  async get(key: string, signal?: AbortSignal, range?: ByteRange): Promise<UpstreamResponse | undefined> {
    const url = this.#locate(key)
    return retryTransient(() => this.#getOnce(url, key, signal, range), signal)
  }

  /**
   * `key` resolved by the parser that makes the request, and checked where it points: the cache's
   * own scheme, host, port and (no) credentials, a path below its base path with no dot segment
   * left, no fragment. Throws outsideCache() otherwise.
   */
  #locate(key: string): URL {
    const problem = keyProblem(key)
    if (problem !== undefined) throw outsideCache(this.name, key, problem)
    const url = new URL(key, this.#base)
    const base = this.#base
    const rest = url.pathname.startsWith(base.pathname) ? url.pathname.slice(base.pathname.length) : undefined
    const inside =
      url.protocol === base.protocol &&
      url.host === base.host &&
      url.username === '' &&
      url.password === '' &&
      url.hash === '' &&
      rest !== undefined &&
      rest.split('/').every((segment) => segment !== '' && !/^(\.|%2e){1,2}$/i.test(segment))
    if (!inside) throw outsideCache(this.name, key, `it resolves to ${url.protocol}//${url.host}${url.pathname}`)
    return url
  }

  async #getOnce(
    target: URL,
    key: string,
    signal?: AbortSignal,
    range?: ByteRange,
  ): Promise<UpstreamResponse | undefined> {
    let url = target
    for (let hop = 0; ; hop++) {
      // Credentials go only to the cache's own origin, never to a host it redirects to.
      const authorization = url.origin === this.#base.origin ? this.#currentAuthorization() : undefined
      const res = await this.#request(url, authorization, signal, range)
      const status = res.statusCode ?? 0
      if (REDIRECT_STATUSES.has(status) && res.headers.location !== undefined && hop < MAX_REDIRECTS) {
        res.resume()
        url = this.#redirectTarget(res.headers.location, url, key)
        continue
      }
      if (MISSING_STATUSES.has(status)) {
        res.resume()
        return undefined
      }
      if (status < 200 || status > 299) {
        res.resume()
        const transient = status >= 500 || status === 408 || status === 429
        const retryAfter = Number(res.headers['retry-after'])
        throw new UpstreamError(
          this.name,
          'bad-status',
          `HTTP ${status} for ${key}${status === 401 ? this.#authHint(url, authorization) : ''}`,
          {
            transient,
            ...(Number.isFinite(retryAfter) && retryAfter >= 0
              ? { retryAfterMs: Math.min(retryAfter * 1000, MAX_RETRY_AFTER_MS) }
              : {}),
          },
        )
      }
      const length = res.headers['content-length']
      const idleTimeoutMs = this.#options.idleTimeoutMs ?? this.#options.timeoutMs
      return {
        body: guardBody(res, {
          idleTimeoutMs,
          onIdle: () =>
            new UpstreamError(
              this.name,
              'timeout',
              `idle timeout: the body of ${url.pathname} stalled for ${formatMs(idleTimeoutMs)}`,
            ),
          mapError: (err) =>
            signal?.aborted === true || err.name === 'AbortError'
              ? err
              : new UpstreamError(
                  this.name,
                  'network',
                  `reading ${url.pathname}: ${(err as NodeJS.ErrnoException).code ?? err.message}`,
                  { cause: err },
                ),
        }),
        size: length !== undefined && /^\d+$/.test(length) ? Number(length) : undefined,
        contentEncoding: res.headers['content-encoding']?.trim().toLowerCase() || undefined,
        partial: range !== undefined && status === 206 && isExactRange(res.headers['content-range'], range),
      }
    }
  }

  /** Where a redirect leads; an unusable Location (not a URL, not http(s)) is the upstream's fault. */
  #redirectTarget(location: string, from: URL, key: string): URL {
    let target: URL | undefined
    try {
      target = new URL(location, from)
    } catch {
      target = undefined
    }
    if (target === undefined || (target.protocol !== 'http:' && target.protocol !== 'https:')) {
      throw new UpstreamError(
        this.name,
        'bad-response',
        `${key}: redirected to an unusable location (not an http(s) URL)`,
      )
    }
    return target
  }

  /** Says why a 401 happened, by the credentials that request carried, without saying anything secret. */
  #authHint(url: URL, sent: Authorization | undefined): string {
    if (url.origin !== this.#base.origin) return ' (after a redirect to another host, which never gets the credentials)'
    const source = sent?.source
    if (source === undefined)
      return ' (no credentials for this host: give them in the URL, UNNAR_UPSTREAM_TOKENS or NETRC)'
    return ` (the credentials from ${source === 'url' ? 'the URL' : source === 'token' ? 'UNNAR_UPSTREAM_TOKENS' : 'NETRC'} were refused)`
  }

  #request(
    url: URL,
    authorization: Authorization | undefined,
    signal: AbortSignal | undefined,
    range?: ByteRange,
  ): Promise<http.IncomingMessage> {
    const headers: Record<string, string> = {
      'user-agent': this.#options.userAgent,
      'accept-encoding': 'zstd, br, gzip',
    }
    if (range !== undefined) {
      headers.range = `bytes=${range.start}-${range.end}`
      // Byte offsets are into the stored object: an encoded body would shift them.
      headers['accept-encoding'] = 'identity'
    }
    if (authorization !== undefined) headers.authorization = authorization.header
    const client = url.protocol === 'https:' ? https : http
    const { timeoutMs } = this.#options
    const connectTimeoutMs = this.#options.connectTimeoutMs ?? timeoutMs
    return new Promise((resolve, reject) => {
      const req = client.request(url, {
        agent: url.origin === this.#base.origin ? this.#agent : undefined,
        headers,
        ...(signal === undefined ? {} : { signal }),
        ...(this.#options.lookup === undefined ? {} : { lookup: this.#options.lookup }),
      })
      let timer: NodeJS.Timeout | undefined
      const clear = (): void => {
        if (timer !== undefined) clearTimeout(timer)
        timer = undefined
      }
      const expire = (detail: string): void => {
        timer = undefined
        const err = new UpstreamError(
          this.name,
          'timeout',
          `${detail} (${url.host === this.#base.host ? '' : url.host}${url.pathname})`,
        )
        req.destroy(err)
        // Settled here too: a request still queued in the agent only reports its error once it gets a socket.
        reject(err)
      }
      const waitForFirstByte = (): void => {
        clear()
        if (req.destroyed) return
        timer = setTimeout(() => expire(`first-byte timeout: no response within ${formatMs(timeoutMs)}`), timeoutMs)
      }
      // A request queued for one of the agent's sockets (all busy, say with bodies slow clients
      // read) gets no 'socket' event until one frees up: that wait counts against the limit too.
      timer = setTimeout(() => expire(`no free connection within ${formatMs(timeoutMs)}`), timeoutMs)
      req.once('socket', (socket) => {
        clear()
        if (!socket.connecting) {
          waitForFirstByte() // a kept-alive connection
          return
        }
        timer = setTimeout(
          () => expire(`connect timeout: no connection within ${formatMs(connectTimeoutMs)}`),
          connectTimeoutMs,
        )
        socket.once(url.protocol === 'https:' ? 'secureConnect' : 'connect', waitForFirstByte)
      })
      req.once('response', (res) => {
        clear()
        resolve(res)
      })
      req.once('close', clear)
      req.on('error', (err) => {
        clear()
        if (err instanceof UpstreamError || err.name === 'AbortError') reject(err)
        else
          reject(
            new UpstreamError(
              this.name,
              'network',
              `${(err as NodeJS.ErrnoException).code ?? err.message} (${url.pathname})`,
              { cause: err, transient: true },
            ),
          )
      })
      req.end()
    })
  }
}
