/** A plain node:http request that shows the bytes on the wire (fetch would decode and normalise). */
import http from 'node:http'

export interface RawResponse {
  readonly status: number
  readonly headers: http.IncomingHttpHeaders
  readonly body: Buffer
}

/** `sent`: called once the whole request has been handed to the kernel. */
export function rawRequest(
  url: string,
  options: { method?: string; headers?: Record<string, string>; path?: string; sent?: () => void } = {},
): Promise<RawResponse> {
  const target = new URL(url)
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: target.hostname,
        port: target.port,
        path: options.path ?? target.pathname + target.search,
        method: options.method ?? 'GET',
        headers: options.headers ?? {},
      },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (chunk: Buffer) => chunks.push(chunk))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
        res.on('error', reject)
      },
    )
    req.on('error', reject)
    if (options.sent !== undefined) req.once('finish', options.sent)
    req.end()
  })
}

/** A GET whose body is watched while it arrives (a response that holds its last byte back, say). */
export interface ArrivingBody {
  /** Bytes received so far. */
  received(): number
  /** True once the body has ended. */
  ended(): boolean
  /** The bytes received so far, in one buffer. */
  bytes(): Buffer
  /** Resolves when the body ends; rejects when the request or the response fails or is aborted. */
  readonly done: Promise<void>
}

export function getArriving(url: string, options: http.RequestOptions = {}): ArrivingBody {
  const chunks: Buffer[] = []
  let ended = false
  const done = new Promise<void>((resolve, reject) => {
    http
      .get(url, options, (res) => {
        res.on('data', (chunk: Buffer) => chunks.push(chunk))
        res.on('end', () => {
          ended = true
          resolve()
        })
        res.on('error', reject)
        res.on('aborted', () => reject(new Error('aborted')))
      })
      .on('error', reject)
  })
  return {
    received: () => chunks.reduce((n, c) => n + c.length, 0),
    ended: () => ended,
    bytes: () => Buffer.concat(chunks),
    done,
  }
}
