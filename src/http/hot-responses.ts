/**
 * Repeat GETs of hot small files, answered in node's request event before hono sees them: the
 * status, headers and bytes the store route gave the same request before, without a Request and
 * Response pair, routing, path resolution or a read. bench/ row 6: hono alone answers at most
 * ~0.45x nginx's rate here, a bare node handler ~0.8x.
 *
 * The same lane holds back identical GETs that arrive while the store route is still working on
 * the first one (a cold NAR): they wait here, and get that answer's bytes when it is a small file,
 * or go to the app once it is anything else. bench/ row 8d: 200 clients of one cold file cost 200
 * passes through hono while the NAR decodes and 200 responses built one by one after it.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Context } from 'hono'
import { LRUCache } from 'lru-cache'
import type { RequestNotes, RequestReporter } from './request-log.js'
import { incomingOf } from './node-env.js'

/** What the store route knows about an answer worth repeating. */
export interface HotAnswer {
  /** The metrics label of the route that gave it. */
  readonly route: string
  readonly notes: RequestNotes
  /**
   * True while the narinfo lookup would still give the same answer (not evicted, not forgotten
   * after a broken NAR): the stored answer is then exactly what the route would give again.
   */
  readonly current: () => boolean
}

interface Entry extends HotAnswer {
  /** As node's writeHead takes them, `[name, value, name, value, …]`, without X-Request-Id. */
  readonly headers: readonly string[]
  readonly body: Buffer
  /**
   * The status line and headers on the wire, less the request id, measured at the first answer:
   * reading socket.bytesWritten copies the socket's write queue, 6% of a hot answer's CPU.
   */
  headBytes: number | undefined
}

/** A request held back until the identical one the app is answering has its answer. */
interface Follower {
  readonly req: IncomingMessage
  readonly res: ServerResponse
  readonly started: number
  /** Hands the request to the app after all. */
  readonly dispatch: Dispatch
}

/** Hands a request the lane held back to the app. */
export type Dispatch = (req: IncomingMessage, res: ServerResponse) => void

/** What the store route hands over for the requests that waited on it (see lead()). */
export interface SharedAnswer extends HotAnswer {
  readonly response: Response
  /** The whole body of `response`, uncompressed. */
  readonly body: Uint8Array
}

/** The first of identical requests, being answered by the app. */
export interface Lead {
  /**
   * The app has its answer: the requests that waited get `shared` when it is one that may be
   * repeated (see remember()), else each goes to the app. Call once the response exists, before
   * its body is sent, so nobody waits for a long transfer; later calls do nothing.
   */
  settle(shared?: SharedAnswer): void
}

export interface HotResponsesOptions {
  readonly reporter: RequestReporter
  /** Upper bound of the bodies, keys and headers held (the bodies are shared with the hot files). */
  readonly maxBytes: number
  /** Longer request targets are left to the app (which answers 414). */
  readonly maxUrlLength: number
  /** Subdomain mode: the Host picks the route, so it is part of the key. */
  readonly keyByHost: boolean
  /** Counts answers given here from remembered responses. */
  readonly onAnswer?: () => void
  /** Counts answers given here to requests that waited for an identical one. */
  readonly onShared?: () => void
}

/**
 * Request headers that change a file response. Accept-Encoding (and Host, in subdomain mode) are
 * part of the key instead: browsers send the same value with every request.
 */
const CONDITIONAL = [
  'range',
  'if-range',
  'if-none-match',
  'if-match',
  'if-modified-since',
  'if-unmodified-since',
] as const

const ENTRY_OVERHEAD_BYTES = 512

export class HotResponses {
  readonly #cache: LRUCache<string, Entry>
  readonly #options: HotResponsesOptions
  /** Keys of the requests the app is answering first, with those waiting for that answer. */
  readonly #leaders = new Map<string, Set<Follower>>()

  constructor(options: HotResponsesOptions) {
    this.#options = options
    this.#cache = new LRUCache<string, Entry>({
      maxSize: Math.max(1, options.maxBytes),
      sizeCalculation: entrySize,
    })
  }

  /**
   * Keeps `response` (built with `body`, complete and uncompressed) for requests like the one in
   * `c`. Anything else (HEAD, conditional or ranged requests, other statuses, encodings) is not kept.
   */
  remember(c: Context, response: Response, body: Uint8Array, answer: HotAnswer): void {
    const incoming = incomingOf(c)
    if (incoming === undefined || !this.#repeatable(incoming)) return
    const entry = entryOf(response, body, answer)
    if (entry === undefined) return
    const key = this.#key(incoming)
    // An answer larger than the whole bound is simply not kept (lru-cache would refuse it too).
    if (entrySize(entry, key) <= this.#cache.maxSize) this.#cache.set(key, entry)
  }

  /**
   * Makes the request in `c` (on `route`, for the metrics) the one identical GETs arriving from now
   * on wait for, unless another already is (or it is not a plain GET): then undefined, and the
   * caller answers it as usual.
   */
  lead(c: Context, route: string): Lead | undefined {
    const incoming = incomingOf(c)
    if (incoming === undefined || !this.#repeatable(incoming)) return undefined
    const key = this.#key(incoming)
    if (this.#leaders.has(key)) return undefined
    const followers = new Set<Follower>()
    this.#leaders.set(key, followers)
    let settled = false
    return {
      settle: (shared) => {
        if (settled) return
        settled = true
        this.#leaders.delete(key)
        if (followers.size === 0) return
        const entry = shared === undefined ? undefined : entryOf(shared.response, shared.body, shared)
        for (const follower of followers) {
          if (entry !== undefined)
            this.#answer(entry, follower.req, follower.res, follower.started, this.#options.onShared)
          else if (follower.res.destroyed) this.#reportLeft(follower, route)
          else follower.dispatch(follower.req, follower.res)
        }
      },
    }
  }

  /**
   * Answers `req` when an answer is kept for it, or holds it back while the app answers an
   * identical request (`dispatch` hands it to the app later); false leaves the request to the app.
   */
  serve(req: IncomingMessage, res: ServerResponse, dispatch: Dispatch): boolean {
    if ((this.#cache.size === 0 && this.#leaders.size === 0) || !this.#repeatable(req)) return false
    const started = performance.now()
    const key = this.#key(req)
    const entry = this.#cache.get(key)
    if (entry !== undefined) {
      if (entry.current()) {
        this.#answer(entry, req, res, started, this.#options.onAnswer)
        return true
      }
      this.#cache.delete(key)
    }
    const followers = this.#leaders.get(key)
    if (followers === undefined) return false
    followers.add({ req, res, started, dispatch })
    return true
  }

  #answer(
    entry: Entry,
    req: IncomingMessage,
    res: ServerResponse,
    started: number,
    count: (() => void) | undefined,
  ): void {
    if (res.destroyed) {
      this.#reportLeft({ req, started }, entry.route, entry.notes)
      return
    }
    const reporter = this.#options.reporter
    const id = reporter.id(req.headers['x-request-id'] as string | undefined)
    const socket = res.socket
    const before = entry.headBytes === undefined ? socket?.bytesWritten : undefined
    res.writeHead(200, [...entry.headers, 'x-request-id', id])
    res.end(entry.body)
    if (before !== undefined && socket != null)
      entry.headBytes = socket.bytesWritten - before - entry.body.length - id.length
    const bytes = entry.headBytes === undefined ? undefined : entry.headBytes + id.length + entry.body.length
    reporter.report({
      id,
      method: 'GET',
      path: logPath(req.url!),
      route: entry.route,
      status: 200,
      started,
      notes: entry.notes,
      bytes,
      aborted: false,
    })
    count?.()
  }

  /** A client that left while it waited for an identical request's answer: nothing is sent (499, as nginx logs it). */
  #reportLeft(follower: Pick<Follower, 'req' | 'started'>, route: string, notes: RequestNotes = {}): void {
    const reporter = this.#options.reporter
    const id = reporter.id(follower.req.headers['x-request-id'] as string | undefined)
    reporter.report({
      id,
      method: 'GET',
      path: logPath(follower.req.url!),
      route,
      status: 499,
      started: follower.started,
      notes,
      bytes: 0,
      aborted: true,
    })
  }

  /** Bytes held, as counted against the bound. */
  get size(): number {
    return this.#cache.calculatedSize
  }

  #repeatable(req: IncomingMessage): boolean {
    if (req.method !== 'GET' || req.url === undefined || req.url.length > this.#options.maxUrlLength) return false
    const headers = req.headers
    for (const name of CONDITIONAL) if (headers[name] !== undefined) return false
    return true
  }

  #key(req: IncomingMessage): string {
    const encoding = req.headers['accept-encoding'] ?? ''
    return this.#options.keyByHost ? `${req.headers.host ?? ''}\n${encoding}\n${req.url}` : `${encoding}\n${req.url}`
  }
}

/** An answer that can be repeated as it is: a complete, uncompressed 200 of `body`. */
function entryOf(response: Response, body: Uint8Array, answer: HotAnswer): Entry | undefined {
  if (
    response.status !== 200 ||
    response.headers.has('content-encoding') ||
    response.headers.get('content-length') !== String(body.byteLength)
  )
    return undefined
  const headers: string[] = []
  response.headers.forEach((value, name) => {
    if (name !== 'x-request-id') headers.push(name, value)
  })
  // A Buffer view of the same bytes: node converts any other Uint8Array on every write.
  return {
    route: answer.route,
    notes: answer.notes,
    current: answer.current,
    headers,
    body: Buffer.from(body.buffer, body.byteOffset, body.byteLength),
    headBytes: undefined,
  }
}

function entrySize(entry: Entry, key: string): number {
  return entry.body.byteLength + key.length + entry.headers.reduce((sum, h) => sum + h.length, 0) + ENTRY_OVERHEAD_BYTES
}

/** The path as hono logs it: without the query, percent-decoded where that is valid. */
function logPath(url: string): string {
  const query = url.indexOf('?')
  const path = query < 0 ? url : url.slice(0, query)
  if (!path.includes('%')) return path
  try {
    return decodeURI(path)
  } catch {
    return path
  }
}
