/**
 * One log line and one metrics observation per request, written when the response has been sent
 * (or the client went away), with a request id, status, bytes, duration, cache hit/miss and upstream.
 */
import { randomBytes } from 'node:crypto'
import type { ServerResponse } from 'node:http'
import type { Context, MiddlewareHandler } from 'hono'
import type { Logger } from '../log.js'
import type { Metrics } from '../metrics.js'
import { outgoingOf, whenResponseEnds } from './node-env.js'

/** What a handler learnt about a request that belongs in its log line. */
export interface RequestNotes {
  /** `hit`: the NAR was cached; `miss`: it was (being) downloaded; `bypass`: streamed without the cache. */
  cache?: 'hit' | 'miss' | 'bypass'
  upstream?: string
  /**
   * For a file: `verified`, its NAR matched NarHash before the answer began; `held`, the answer's
   * last byte waited for that (strict mode); `unverified`, it may have completed before or without
   * it (stream mode).
   */
  verification?: Verification
}

export type Verification = 'verified' | 'held' | 'unverified'

/** One finished request, as logged and counted. */
export interface RequestRecord {
  readonly id: string
  readonly method: string
  readonly path: string
  /** A metrics label: a handful of fixed values, never the path itself. */
  readonly route: string
  readonly status: number
  /** Bytes on the wire (headers included); undefined when unknown. */
  readonly bytes: number | undefined
  /** performance.now() when the request arrived. */
  readonly started: number
  readonly notes: RequestNotes
  /** The client left before the response was complete. */
  readonly aborted: boolean
}

/** Shared by the hono middleware and the hot-response lane in front of it (hot-responses.ts). */
export interface RequestReporter {
  /** The request id: the client's `X-Request-Id` when it looks sane, else a new one. */
  id(given: string | undefined): string
  /** Reports `record` once `outgoing` is over (see whenResponseEnds), with the bytes written to its socket meanwhile. */
  reportOnClose(outgoing: ServerResponse, record: Omit<RequestRecord, 'bytes' | 'aborted'>): void
  report(record: RequestRecord): void
}

const SANE_ID = /^[\w.:@-]{1,128}$/

export function createRequestReporter(log: Logger, metrics: Metrics): RequestReporter {
  // Ids are this server's random prefix and a counter: unique enough to grep, and far cheaper per
  // request than fresh random bytes (measured on the hot-file path).
  const prefix = randomBytes(4).toString('hex')
  let counter = 0
  // The level is fixed for the life of a logger.
  const logRequests = log.enabled('info')
  const report = (record: RequestRecord) => {
    const seconds = (performance.now() - record.started) / 1000
    metrics.request(record.route, record.status, record.bytes ?? 0, seconds, record.notes.verification)
    if (!logRequests) return
    log.info('request', {
      id: record.id,
      method: record.method,
      path: record.path,
      status: record.status,
      ...(record.bytes === undefined ? {} : { bytes: record.bytes }),
      ms: Math.round(seconds * 1000),
      ...record.notes,
      ...(record.aborted ? { aborted: true } : {}),
    })
  }
  return {
    id: (given) => (given !== undefined && SANE_ID.test(given) ? given : `${prefix}-${(++counter).toString(36)}`),
    reportOnClose(outgoing, record) {
      const socket = outgoing.socket
      const before = socket?.bytesWritten ?? 0
      whenResponseEnds(outgoing, () =>
        report({
          ...record,
          bytes: socket == null ? undefined : socket.bytesWritten - before,
          aborted: !outgoing.writableFinished,
        }),
      )
    },
    report,
  }
}

const NOTES = 'unnarNotes'

export function noteRequest(c: Context, notes: RequestNotes): void {
  const current = c.get(NOTES) as RequestNotes | undefined
  if (current !== undefined) Object.assign(current, notes)
}

/** What was noted about the request in `c` so far (a copy). */
export function requestNotes(c: Context): RequestNotes {
  return { ...(c.get(NOTES) as RequestNotes | undefined) }
}

export function requestLog(reporter: RequestReporter, routeOf: (c: Context) => string): MiddlewareHandler {
  return async (c, next) => {
    const started = performance.now()
    const id = reporter.id(c.req.header('x-request-id'))
    const notes: RequestNotes = {}
    c.set(NOTES, notes)
    // Set before the handler, so responses built with c.body() carry it without a second Headers.
    c.header('X-Request-Id', id)
    await next()
    if (!c.res.headers.has('x-request-id')) c.res.headers.set('X-Request-Id', id)
    const record = {
      id,
      method: c.req.method,
      path: c.req.path,
      route: routeOf(c),
      status: c.res.status,
      started,
      notes,
    }
    const outgoing = outgoingOf(c)
    if (outgoing === undefined) {
      // Not on a node server (app.request() in tests): the headers are all there is.
      reporter.report({ ...record, bytes: Number(c.res.headers.get('content-length') ?? 0), aborted: false })
      return
    }
    reporter.reportOnClose(outgoing, record)
  }
}
