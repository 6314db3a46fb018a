/**
 * Repeat GETs of hot small files, answered in node's request event before hono sees them: the
 * status, headers and bytes the store route gave the same request before, without a Request and
 * Response pair, routing, path resolution or a read. bench/ "hot small file": hono alone answers at most
 * ~0.45x nginx's rate here, a bare node handler ~0.8x.
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

  /** Answers `req` when an answer is kept for it; false leaves the request to the app. */
  serve(req: IncomingMessage, res: ServerResponse): boolean {
    if (this.#cache.size === 0 || !this.#repeatable(req)) return false
    const started = performance.now()
    const key = this.#key(req)
    const entry = this.#cache.get(key)
    if (entry === undefined) return false
    if (!entry.current()) {
      this.#cache.delete(key)
      return false
    }
    this.#answer(entry, req, res, started)
    return true
  }

  #answer(entry: Entry, req: IncomingMessage, res: ServerResponse, started: number): void {
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
    this.#options.onAnswer?.()
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
