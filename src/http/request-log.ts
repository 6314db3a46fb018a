/**
 * One log line and one metrics observation per request, written when the response has been sent
 * (or the client went away), with a request id, status, bytes, duration, cache hit/miss and upstream.
 */
import { randomBytes } from 'node:crypto'
import type { ServerResponse } from 'node:http'
import type { Context, MiddlewareHandler } from 'hono'
import type { Logger } from '../log.js'
import type { Metrics } from '../metrics.js'

/** What a handler learnt about a request that belongs in its log line. */
export interface RequestNotes {
  /** `hit`: the NAR was cached; `miss`: it was (being) downloaded; `bypass`: streamed without the cache. */
  cache?: 'hit' | 'miss' | 'bypass'
  upstream?: string
}

const NOTES = 'unnarNotes'
const ID = 'unnarRequestId'

export function noteRequest(c: Context, notes: RequestNotes): void {
  const current = c.get(NOTES) as RequestNotes | undefined
  if (current !== undefined) Object.assign(current, notes)
}

/** The request id: the client's `X-Request-Id` when it looks sane, else a new one. */
export function requestId(c: Context): string {
  return (c.get(ID) as string | undefined) ?? ''
}

const SANE_ID = /^[\w.:@-]{1,128}$/

export function requestLog(log: Logger, metrics: Metrics, routeOf: (c: Context) => string): MiddlewareHandler {
  // Ids are this server's random prefix and a counter: unique enough to grep, and far cheaper per
  // request than fresh random bytes (measured on the hot-file path).
  const prefix = randomBytes(4).toString('hex')
  let counter = 0
  return async (c, next) => {
    const started = performance.now()
    const given = c.req.header('x-request-id')
    const id = given !== undefined && SANE_ID.test(given) ? given : `${prefix}-${(++counter).toString(36)}`
    const notes: RequestNotes = {}
    c.set(ID, id)
    c.set(NOTES, notes)
    // Set before the handler, so responses built with c.body() carry it without a second Headers.
    c.header('X-Request-Id', id)
    await next()
    if (!c.res.headers.has('x-request-id')) c.res.headers.set('X-Request-Id', id)
    const route = routeOf(c)
    const outgoing = (c.env as { outgoing?: ServerResponse } | undefined)?.outgoing
    const report = (bytes: number | undefined, aborted: boolean) => {
      const seconds = (performance.now() - started) / 1000
      const status = c.res.status
      metrics.request(route, status, bytes ?? 0, seconds)
      log.info('request', {
        id,
        method: c.req.method,
        path: c.req.path,
        status,
        ...(bytes === undefined ? {} : { bytes }),
        ms: Math.round(seconds * 1000),
        ...notes,
        ...(aborted ? { aborted: true } : {}),
      })
    }
    const socket = outgoing?.socket
    if (outgoing === undefined || socket == null) {
      // Not on a node server (app.request() in tests): the headers are all there is.
      report(Number(c.res.headers.get('content-length') ?? 0), false)
      return
    }
    const before = socket.bytesWritten
    outgoing.once('close', () => report(socket.bytesWritten - before, !outgoing.writableFinished))
  }
}
