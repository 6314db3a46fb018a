/** A hook that sees every upstream request once it is over: for metrics (counts, latency, errors per upstream). */
import type { Readable } from 'node:stream'
import {
  type ByteRange,
  type Upstream,
  UpstreamError,
  type UpstreamErrorKind,
  type UpstreamResponse,
} from './upstream.js'

/** What was asked for, from the key: `<hash>.narinfo`, `<hash>.ls`, `nix-cache-info`, anything else is a NAR. */
export type UpstreamRequestKind = 'narinfo' | 'listing' | 'cache-info' | 'nar'

export interface UpstreamRequestEvent {
  /** Upstream.name: the cache URL without credentials or query; safe as a metrics label. */
  readonly upstream: string
  readonly kind: UpstreamRequestKind
  /**
   * `ok`: the body was read to its end, or the reader stopped early on its own; `miss`: the upstream
   * does not have it (404/403/410, NoSuchKey); `error`: see errorKind; `aborted`: unnar gave up on the
   * request through its abort signal (a parallel lookup another upstream won, a client that left).
   */
  readonly status: 'ok' | 'miss' | 'error' | 'aborted'
  /** With status `error`: the UpstreamError kind ('timeout', 'network', 'bad-status', 'bad-response'). */
  readonly errorKind?: UpstreamErrorKind
  /** From the request to the end of the body (or the answer, for a miss or an error without a body). */
  readonly seconds: number
}

export type UpstreamRequestHook = (event: UpstreamRequestEvent) => void

export function requestKind(key: string): UpstreamRequestKind {
  if (key.endsWith('.narinfo')) return 'narinfo'
  if (key.endsWith('.ls')) return 'listing'
  if (key === 'nix-cache-info') return 'cache-info'
  return 'nar'
}

/** Wraps `upstream` so that `hook` sees each request once, when it is over. A throwing hook is ignored. */
export function instrumentUpstream(upstream: Upstream, hook: UpstreamRequestHook): Upstream {
  return new InstrumentedUpstream(upstream, hook)
}

class InstrumentedUpstream implements Upstream {
  readonly name: string
  readonly #inner: Upstream
  readonly #hook: UpstreamRequestHook

  constructor(inner: Upstream, hook: UpstreamRequestHook) {
    this.name = inner.name
    this.#inner = inner
    this.#hook = hook
  }

  credentialsVersion(): number {
    return this.#inner.credentialsVersion?.() ?? 0
  }

  async get(key: string, signal?: AbortSignal, range?: ByteRange): Promise<UpstreamResponse | undefined> {
    const started = performance.now()
    const emit = (status: UpstreamRequestEvent['status'], err?: unknown): void => {
      const aborted = status !== 'ok' && status !== 'miss' && signal?.aborted === true
      const event: UpstreamRequestEvent = {
        upstream: this.name,
        kind: requestKind(key),
        status: aborted ? 'aborted' : status,
        ...(status === 'error' && !aborted ? { errorKind: err instanceof UpstreamError ? err.kind : 'network' } : {}),
        seconds: (performance.now() - started) / 1000,
      }
      try {
        this.#hook(event)
      } catch {
        // metrics must never break serving
      }
    }
    let res: UpstreamResponse | undefined
    try {
      res = await this.#inner.get(key, signal, range)
    } catch (err) {
      emit('error', err)
      throw err
    }
    if (res === undefined) {
      emit('miss')
      return undefined
    }
    watchBody(res.body, (err) => emit(err === undefined ? 'ok' : 'error', err))
    return res
  }
}

/** Calls `done` once: on the end of the body, its first error, or its close. Adds no 'data' listener. */
function watchBody(body: Readable, done: (err?: Error) => void): void {
  let called = false
  const once = (err?: Error): void => {
    if (called) return
    called = true
    done(err)
  }
  body.once('end', () => once())
  body.once('error', (err) => once(err))
  body.once('close', () => once((body as { errored?: Error | null }).errored ?? undefined))
}
