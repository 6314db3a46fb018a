/** The interface every binary-cache backend implements, and its typed error. */
import type { Readable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'

export interface UpstreamResponse {
  readonly body: Readable
  /** Content-Length when known. */
  readonly size: number | undefined
  /** HTTP Content-Encoding of the body (`.ls` files may be served br/gzip/zstd-encoded). */
  readonly contentEncoding: string | undefined
  /** True when the body is exactly the requested byte range (HTTP 206); a whole body otherwise. */
  readonly partial?: boolean
  /**
   * The local file whose whole contents `body` streams (file:// upstreams): a decoder program can
   * read it itself, and `body` is then destroyed unread.
   */
  readonly file?: string
}

/** Bytes `start` to `end` of an object, inclusive (HTTP Range semantics). */
export interface ByteRange {
  readonly start: number
  readonly end: number
}

export interface Upstream {
  /** The cache URL with credentials removed: safe for logs, errors and pages. */
  readonly name: string
  /**
   * Fetches `key` (a path relative to the cache root, such as `<hash>.narinfo` or `nar/x.nar.xz`).
   * A missing object is `undefined`; any other failure throws UpstreamError.
   */
  get(key: string, signal?: AbortSignal, range?: ByteRange): Promise<UpstreamResponse | undefined>
  /**
   * Changes whenever the credentials it sends change (a rotated credentials file): an upstream
   * left out after failures, refused credentials among them, is then asked again at once.
   */
  credentialsVersion?(): number
}

export type UpstreamErrorKind = 'timeout' | 'network' | 'bad-status' | 'bad-response' | 'untrusted'

/** The three upstream timeouts (a 'timeout' UpstreamError names the one that fired). */
export interface UpstreamTimeouts {
  /** From sending the request (once connected) to the response headers: the first-byte timeout. */
  readonly timeoutMs: number
  /** DNS, TCP connect and TLS handshake of a new connection; default timeoutMs. */
  readonly connectTimeoutMs?: number | undefined
  /** Longest silence between two body chunks while unnar is ready for more; default timeoutMs. */
  readonly idleTimeoutMs?: number | undefined
}

export interface UpstreamErrorOptions extends ErrorOptions {
  /** Worth retrying (a reset connection, a 5xx, a 429). */
  readonly transient?: boolean
  /** The server's Retry-After, when it gave one. */
  readonly retryAfterMs?: number
}

export class UpstreamError extends Error {
  override readonly name = 'UpstreamError'
  readonly upstream: string
  readonly kind: UpstreamErrorKind
  readonly transient: boolean
  readonly retryAfterMs: number | undefined
  constructor(upstream: string, kind: UpstreamErrorKind, detail: string, options?: UpstreamErrorOptions) {
    super(`${upstream}: ${detail}`, options)
    this.upstream = upstream
    this.kind = kind
    this.transient = options?.transient ?? false
    this.retryAfterMs = options?.retryAfterMs
  }
}

/**
 * The error every upstream throws for a key that would lead outside its cache (see cache-key.ts):
 * nothing is requested.
 */
export function outsideCache(upstream: string, key: string, why: string): UpstreamError {
  const shown = JSON.stringify(key.length > 200 ? `${key.slice(0, 200)}…` : key)
  return new UpstreamError(upstream, 'bad-response', `refusing ${shown}, a URL outside the cache: ${why}`)
}

const RETRIES = 2
const RETRY_BASE_MS = 200

/**
 * Runs `request` again after a transient UpstreamError (connection errors, 5xx, 408, 429): after
 * the server's Retry-After (capped by whoever set retryAfterMs) or with exponential backoff, at most
 * twice. Timeouts and other failures are not retried.
 */
export async function retryTransient<T>(request: () => Promise<T>, signal?: AbortSignal): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await request()
    } catch (err) {
      if (!(err instanceof UpstreamError) || !err.transient || attempt >= RETRIES || signal?.aborted === true) throw err
      await sleep(err.retryAfterMs ?? RETRY_BASE_MS * 2 ** attempt, undefined, signal === undefined ? {} : { signal })
    }
  }
}

/**
 * Whether a 206's Content-Range is exactly `range`: anything else (another range, none) is treated
 * as an upstream that does not honour Range, whose bytes are then never used as the range's.
 */
export function isExactRange(contentRange: string | undefined, range: ByteRange): boolean {
  const match = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(contentRange?.trim() ?? '')
  return match !== null && Number(match[1]) === range.start && Number(match[2]) === range.end
}
