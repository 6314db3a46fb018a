/** An http(s):// binary cache, fetched with node:http over keep-alive connections. */
import http from 'node:http'
import https from 'node:https'
import { setTimeout as sleep } from 'node:timers/promises'
import { type Upstream, UpstreamError, type UpstreamResponse } from './upstream.js'

export interface HttpUpstreamOptions {
  /** Socket idle time (connect, first byte, and between body chunks) before the request fails. */
  readonly timeoutMs: number
  readonly userAgent: string
}

const MISSING_STATUSES = new Set([403, 404, 410]) // Nix treats 403 like 404 (S3 without list permission)
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308])
const MAX_REDIRECTS = 5
const RETRIES = 2
const RETRY_BASE_MS = 200
const MAX_RETRY_AFTER_MS = 5_000

export class HttpUpstream implements Upstream {
  readonly name: string
  readonly #base: URL
  readonly #authorization: string | undefined
  readonly #options: HttpUpstreamOptions
  readonly #agent: http.Agent

  constructor(url: URL, options: HttpUpstreamOptions) {
    const base = new URL(url.href.endsWith('/') ? url.href : url.href + '/')
    this.#authorization =
      base.username !== ''
        ? 'Basic ' + Buffer.from(`${decodeURIComponent(base.username)}:${decodeURIComponent(base.password)}`).toString('base64')
        : undefined
    base.username = ''
    base.password = ''
    this.#base = base
    this.name = base.href.replace(/\/$/, '')
    this.#options = options
    const Agent = base.protocol === 'https:' ? https.Agent : http.Agent
    this.#agent = new Agent({ keepAlive: true, maxSockets: 64 })
  }

  /**
   * Transient failures (connection errors, 5xx, 408, 429) are retried with exponential backoff, or
   * after the server's Retry-After (capped), at most RETRIES times; a timeout is not retried.
   */
  async get(key: string, signal?: AbortSignal): Promise<UpstreamResponse | undefined> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.#getOnce(key, signal)
      } catch (err) {
        if (!(err instanceof UpstreamError) || !err.transient || attempt >= RETRIES || signal?.aborted === true) throw err
        await sleep(err.retryAfterMs ?? RETRY_BASE_MS * 2 ** attempt, undefined, signal === undefined ? {} : { signal })
      }
    }
  }

  async #getOnce(key: string, signal?: AbortSignal): Promise<UpstreamResponse | undefined> {
    let url = new URL(key, this.#base)
    for (let hop = 0; ; hop++) {
      const res = await this.#request(url, signal)
      const status = res.statusCode ?? 0
      if (REDIRECT_STATUSES.has(status) && res.headers.location !== undefined && hop < MAX_REDIRECTS) {
        res.resume()
        url = new URL(res.headers.location, url)
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
        throw new UpstreamError(this.name, 'bad-status', `HTTP ${status} for ${key}`, {
          transient,
          ...(Number.isFinite(retryAfter) && retryAfter >= 0 ? { retryAfterMs: Math.min(retryAfter * 1000, MAX_RETRY_AFTER_MS) } : {}),
        })
      }
      const length = res.headers['content-length']
      return {
        body: res,
        size: length !== undefined && /^\d+$/.test(length) ? Number(length) : undefined,
        contentEncoding: res.headers['content-encoding']?.trim().toLowerCase() || undefined,
      }
    }
  }

  #request(url: URL, signal: AbortSignal | undefined): Promise<http.IncomingMessage> {
    const sameOrigin = url.origin === this.#base.origin
    const headers: Record<string, string> = { 'user-agent': this.#options.userAgent, 'accept-encoding': 'zstd, br, gzip' }
    // Credentials go only to the cache's own origin, never to a host it redirects to.
    if (sameOrigin && this.#authorization !== undefined) headers.authorization = this.#authorization
    const client = url.protocol === 'https:' ? https : http
    return new Promise((resolve, reject) => {
      const req = client.request(url, {
        agent: sameOrigin ? this.#agent : undefined,
        headers,
        ...(signal === undefined ? {} : { signal }),
      })
      const timeoutMs = this.#options.timeoutMs
      // Socket inactivity covers a slow connect, a slow first byte and a stalled body alike.
      req.setTimeout(timeoutMs, () => {
        req.destroy(new UpstreamError(this.name, 'timeout', `no data for ${timeoutMs} ms (${url.pathname})`))
      })
      req.on('response', resolve)
      req.on('error', (err) => {
        if (err instanceof UpstreamError || err.name === 'AbortError') reject(err)
        else reject(new UpstreamError(this.name, 'network', `${(err as NodeJS.ErrnoException).code ?? err.message} (${url.pathname})`, { cause: err, transient: true }))
      })
      req.end()
    })
  }
}
