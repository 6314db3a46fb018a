/** The one place where errors become HTTP statuses, plain text for curl and HTML for browsers. */
import type { Context } from 'hono'
import { UnsupportedCompressionError } from '../codecs/decompress.js'
import type { Logger } from '../log.js'
import { DiskError, NarAbandonedError, NarVerificationError } from '../store/nar-errors.js'
import { UpstreamsFailedError } from '../upstream/path-info-lookup.js'
import { UpstreamError } from '../upstream/upstream.js'
import { escapeHtml, OWN_PAGES_CSP } from './html.js'

/** A client-facing error with its status; the message is safe to show. */
export class HttpError extends Error {
  override readonly name = 'HttpError'
  readonly status: number
  constructor(status: number, message: string) {
    super(message)
    this.status = status
  }
}

const REASONS: Record<number, string> = {
  400: 'Bad Request',
  404: 'Not Found',
  405: 'Method Not Allowed',
  416: 'Range Not Satisfiable',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
}

/** Status and message for any error; unknown errors are 500 with a message that leaks nothing. */
export function classifyError(err: unknown): { status: number; message: string } {
  if (err instanceof HttpError) return { status: err.status, message: err.message }
  if (err instanceof UpstreamsFailedError) {
    return {
      status: err.timedOut ? 504 : 502,
      message: `every upstream that was asked failed: ${err.failures.map((f) => f.message).join('; ')}`,
    }
  }
  if (err instanceof UpstreamError)
    return { status: err.kind === 'timeout' ? 504 : 502, message: `upstream failed: ${err.message}` }
  if (err instanceof NarVerificationError) return { status: 502, message: `upstream sent a bad NAR: ${err.message}` }
  if (err instanceof UnsupportedCompressionError)
    return { status: 502, message: `the upstream's NAR uses an ${err.message}` }
  if (err instanceof DiskError) return { status: 503, message: 'the NAR cache is unavailable' }
  if (err instanceof NarAbandonedError)
    return { status: 503, message: 'the download of this NAR was dropped: every client had left' }
  return { status: 500, message: 'internal error' }
}

export function errorResponse(c: Context, status: number, message: string): Response {
  const reason = REASONS[status] ?? 'Error'
  c.header('Cache-Control', 'no-store')
  if (wantsHtml(c.req.header('accept'))) {
    c.header('Content-Type', 'text/html; charset=utf-8')
    c.header('Content-Security-Policy', OWN_PAGES_CSP)
    return c.body(
      `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">` +
        `<title>${status} ${reason}</title><link rel="stylesheet" href="/_unnar/unnar.css"></head>` +
        `<body><header class="top"><a class="brand" href="/">unnar</a></header><main class="error"><h1>${status} ${reason}</h1><p>${escapeHtml(message)}</p><p><a href="/">unnar</a></p></main></body></html>\n`,
      status as 400,
    )
  }
  c.header('Content-Type', 'text/plain; charset=utf-8')
  return c.body(`${status} ${reason}: ${message}\n`, status as 400)
}

export function createErrorHandler(log: Logger): (err: Error, c: Context) => Response {
  return (err, c) => {
    const { status, message } = classifyError(err)
    const fields = { method: c.req.method, path: c.req.path, status, error: err }
    // Client mistakes are routine (info); upstream trouble is worth a warning; our own bugs an error.
    // A request still waiting on a NAR its client (and every other) gave up on: routine too.
    if (err instanceof NarAbandonedError) log.info('request failed', fields)
    else if (status >= 500 && status !== 502 && status !== 504)
      log.error('request failed', { ...fields, stack: err.stack })
    else if (status >= 500) log.warn('request failed', fields)
    else log.info('request failed', fields)
    return errorResponse(c, status, message)
  }
}

export function wantsHtml(accept: string | undefined): boolean {
  return accept !== undefined && accept.includes('text/html')
}
