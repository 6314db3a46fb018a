/** A real node:http server on 127.0.0.1 serving a binary-cache directory, with request recording and fault injection. */
import { createReadStream } from 'node:fs'
import { readFile, realpath, stat } from 'node:fs/promises'
import { spawn } from 'node:child_process'
import { createServer } from 'node:http'
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http'
import { connect, type AddressInfo, type Socket } from 'node:net'
import path from 'node:path'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import zlib from 'node:zlib'
import { compress as zstdCompress } from '@mongodb-js/zstd'
import { WAIT_MS, within } from './wait.js'

export type Fault =
  | { kind: 'status'; status: number; times?: number }
  | { kind: 'hang' }
  | { kind: 'reset-after'; bytes: number }
  /** Sends the headers and the first `bytes` of the body, then nothing more, keeping the connection open. */
  | { kind: 'stall-after'; bytes: number }
  /** As 'stall-after', then the rest of the body once `until` settles. */
  | { kind: 'pause-after'; bytes: number; until: Promise<unknown> }
  | { kind: 'throttle'; bytesPerSecond: number }
  | { kind: 'replace'; body: Uint8Array }
  /** Answers as usual (including a 404), but only after `ms`. */
  | { kind: 'delay'; ms: number }
  /** Answers as usual once `until` settles: a gate the test opens when it has seen what it waits for. */
  | { kind: 'hold'; until: Promise<unknown> }
  /** Redirects to `location` (absolute, or a path on this server), 302 unless `status` is given. */
  | { kind: 'redirect'; location: string; status?: number }

export interface TestUpstreamOptions {
  root: string
  lsEncoding?: 'identity' | 'br' | 'gzip' | 'zstd'
  /** The exact Authorization header every request must carry; others get 401. */
  auth?: string
}

export interface RecordedRequest {
  method: string
  path: string
  status: number
  /** The request's Authorization header, if it had one. */
  authorization?: string
  /** True once the client closed the connection before the response was complete. */
  aborted?: boolean
  /** Bytes written for this response (headers included), once it is over. */
  bytes?: number
  /** The Range header, if any. */
  range?: string
}

export interface TestUpstream {
  readonly url: string
  readonly requests: RecordedRequest[]
  count(match: string | RegExp, method?: string): number
  setFault(match: string | RegExp, fault: Fault): void
  clearFaults(): void
  /**
   * Resolves once `check` holds, looked at whenever a request arrives, gets its status or is over
   * (no polling); fails naming `what` after `ms`.
   */
  until(check: () => boolean, what: string, ms?: number): Promise<void>
  /** Resolves once `n` (1) requests matching `match` (and `method`, GET) have arrived. */
  arrived(match: string | RegExp, n?: number, method?: string): Promise<void>
  close(): Promise<void>
}

/** A response body: its full size, representation headers, and a way to stream an inclusive byte range. */
interface Body {
  size: number
  headers: OutgoingHttpHeaders
  rangeable: boolean
  open(start: number, end: number): Readable
}

interface Rule {
  match: string | RegExp
  fault: Fault
  remaining: number
}

const brotliCompress = promisify(zlib.brotliCompress)
const gzipCompress = promisify(zlib.gzip)

/**
 * Starts the server. `requests[i].status` is 0 until a status line is chosen (and stays 0 for 'hang').
 * Faults match the raw request path (no query); a `times`-limited rule that is used up is skipped.
 * 'reset-after', 'stall-after' and 'throttle' apply to the response that would normally be sent (206 for a Range request).
 */
export async function startTestUpstream(options: TestUpstreamOptions): Promise<TestUpstream> {
  const root = await realpath(path.resolve(options.root))
  const lsEncoding = options.lsEncoding ?? 'identity'
  const requests: RecordedRequest[] = []
  let rules: Rule[] = []
  const sockets = new Set<Socket>()
  const encodedCache = new Map<string, Promise<Buffer>>()
  const watchers = new Set<() => void>()
  const changed = (): void => {
    for (const watcher of [...watchers]) watcher()
  }

  const server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) {
        res.statusCode = 500
        res.end()
      } else {
        res.destroy()
      }
    })
  })
  server.on('connection', (socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  server.on('clientError', (_err, socket) => socket.destroy())

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET'
    const rawPath = (req.url ?? '/').split('?', 1)[0] ?? '/'
    const record: RecordedRequest = { method, path: rawPath, status: 0 }
    if (req.headers.authorization !== undefined) record.authorization = req.headers.authorization
    if (req.headers.range !== undefined) record.range = req.headers.range
    requests.push(record)
    req.resume()
    const socket = res.socket
    const before = socket?.bytesWritten ?? 0
    res.once('close', () => {
      if (!res.writableFinished) record.aborted = true
      if (socket != null) record.bytes = socket.bytesWritten - before
      changed()
    })
    const head = (status: number, headers: OutgoingHttpHeaders): void => {
      record.status = status
      res.writeHead(status, headers)
      changed()
    }
    changed()

    if (method !== 'GET' && method !== 'HEAD') {
      head(405, { Allow: 'GET, HEAD', 'Content-Type': 'text/plain', 'Content-Length': 0 })
      res.end()
      return
    }
    const isHead = method === 'HEAD'
    if (options.auth !== undefined && req.headers.authorization !== options.auth) {
      const text = Buffer.from('401 authorization required\n')
      head(401, {
        'Content-Type': 'text/plain',
        'WWW-Authenticate': 'Basic realm="test"',
        'Content-Length': text.length,
      })
      res.end(isHead ? undefined : text)
      return
    }
    const taken = takeFault(rawPath)
    if (taken?.kind === 'delay') {
      const gone = new AbortController()
      res.once('close', () => gone.abort())
      try {
        await sleep(taken.ms, undefined, { signal: gone.signal })
      } catch {
        return
      }
    }
    if (taken?.kind === 'hold') {
      const gone = new Promise<'gone'>((resolve) => res.once('close', () => resolve('gone')))
      if (
        (await Promise.race([
          taken.until.then(
            () => 'open',
            () => 'open',
          ),
          gone,
        ])) === 'gone'
      )
        return
    }
    const fault = taken?.kind === 'delay' || taken?.kind === 'hold' ? undefined : taken
    if (fault?.kind === 'redirect') {
      head(fault.status ?? 302, { Location: fault.location, 'Content-Length': 0 })
      res.end()
      return
    }

    if (fault?.kind === 'status') {
      const text = Buffer.from(`${fault.status} injected fault\n`)
      const noBody = isHead || fault.status === 204 || fault.status === 304 || fault.status < 200
      head(fault.status, { 'Content-Type': 'text/plain', ...(noBody ? {} : { 'Content-Length': text.length }) })
      res.end(noBody ? undefined : text)
      return
    }
    if (fault?.kind === 'hang') return

    const body = fault?.kind === 'replace' ? bytesBody(fault.body, contentType(rawPath)) : await fileBody(rawPath)
    if (body === null) {
      const text = Buffer.from('not found\n')
      head(404, { 'Content-Type': 'text/plain', 'Content-Length': text.length })
      res.end(isHead ? undefined : text)
      return
    }

    let status = 200
    let start = 0
    let end = body.size - 1
    const headers: OutgoingHttpHeaders = { ...body.headers }
    if (body.rangeable) {
      headers['Accept-Ranges'] = 'bytes'
      const range = parseRange(req.headers.range, body.size)
      if (range === 'unsatisfiable') {
        head(416, { 'Content-Range': `bytes */${body.size}`, 'Content-Length': 0 })
        res.end()
        return
      }
      if (range !== null) {
        status = 206
        ;({ start, end } = range)
        headers['Content-Range'] = `bytes ${start}-${end}/${body.size}`
      }
    }
    const length = end - start + 1
    headers['Content-Length'] = length

    head(status, headers)
    if (fault?.kind === 'reset-after') {
      const bytes = isHead ? 0 : Math.max(0, Math.floor(fault.bytes))
      await resetAfter(res, body, start, Math.min(end, start + bytes - 1))
      return
    }
    if (fault?.kind === 'stall-after' || fault?.kind === 'pause-after') {
      const bytes = isHead ? 0 : Math.max(0, Math.floor(fault.bytes))
      const last = Math.min(end, start + bytes - 1)
      if (last >= start) await pipeline(body.open(start, last), res, { end: false }).catch(() => res.destroy())
      else res.flushHeaders()
      // 'stall-after' never ends: the connection stays open, silent, until the client or close() ends it.
      if (fault.kind === 'stall-after' || res.destroyed) return
      const gone = new Promise<'gone'>((resolve) => res.once('close', () => resolve('gone')))
      if (
        (await Promise.race([
          fault.until.then(
            () => 'open',
            () => 'open',
          ),
          gone,
        ])) === 'gone'
      )
        return
      if (last >= end) res.end()
      else await pipeline(body.open(last + 1, end), res).catch(() => res.destroy())
      return
    }
    if (isHead || length === 0) {
      res.end()
      return
    }
    if (fault?.kind === 'throttle') {
      await throttle(res, body.open(start, end), fault.bytesPerSecond)
      return
    }
    await pipeline(body.open(start, end), res).catch(() => res.destroy())
  }

  function takeFault(rawPath: string): Fault | undefined {
    for (const rule of rules) {
      if (rule.remaining <= 0 || !matches(rule.match, rawPath)) continue
      rule.remaining -= 1
      return rule.fault
    }
    return undefined
  }

  async function fileBody(rawPath: string): Promise<Body | null> {
    const file = await resolveFile(root, rawPath)
    if (file === null) return null
    const { file: abs, size } = file
    const type = contentType(rawPath)
    if (abs.endsWith('.ls') && lsEncoding !== 'identity') {
      const key = `${abs}\0${lsEncoding}`
      let encoded = encodedCache.get(key)
      if (encoded === undefined) {
        encoded = readFile(abs).then((data) => encode(data, lsEncoding))
        encodedCache.set(key, encoded)
        encoded.catch(() => encodedCache.delete(key))
      }
      const bytes = await encoded
      return {
        ...bytesBody(bytes, type),
        headers: { 'Content-Type': type, 'Content-Encoding': lsEncoding },
        rangeable: false,
      }
    }
    return {
      size,
      headers: { 'Content-Type': type },
      rangeable: true,
      open: (start, end) => createReadStream(abs, { start, end }),
    }
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject)
      resolve()
    })
  })
  const { port } = server.address() as AddressInfo
  const until = (check: () => boolean, what: string, ms = WAIT_MS): Promise<void> => {
    if (check()) return Promise.resolve()
    let watcher = (): void => {}
    const held = new Promise<void>((resolve) => {
      watcher = () => {
        if (check()) resolve()
      }
      watchers.add(watcher)
    })
    const described = () =>
      `${what} (requests so far: ${requests.map((r) => `${r.method} ${r.path} ${r.status}${r.aborted === true ? ' aborted' : ''}`).join(', ') || 'none'})`
    return within(held, described, ms).finally(() => watchers.delete(watcher))
  }
  let closing: Promise<void> | undefined

  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    count(match, method = 'GET') {
      return requests.filter((r) => r.method === method && matches(match, r.path)).length
    },
    setFault(match, fault) {
      const remaining = fault.kind === 'status' && fault.times !== undefined ? fault.times : Infinity
      rules.push({ match, fault, remaining })
    },
    clearFaults() {
      rules = []
    },
    until,
    arrived: (match, n = 1, method = 'GET') =>
      until(
        () => requests.filter((r) => r.method === method && matches(match, r.path)).length >= n,
        `${n} ${method} request(s) for ${String(match)}`,
      ),
    close: () => {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve())
        for (const socket of sockets) socket.destroy()
      })
      return closing
    },
  }
}

function matches(match: string | RegExp, value: string): boolean {
  if (typeof match === 'string') return match === value
  match.lastIndex = 0
  return match.test(value)
}

/** Maps a request path to a regular file strictly inside root, or null (missing, directory, or escaping). */
async function resolveFile(root: string, rawPath: string): Promise<{ file: string; size: number } | null> {
  if (!rawPath.startsWith('/')) return null
  const segments: string[] = []
  for (const raw of rawPath.slice(1).split('/')) {
    let segment: string
    try {
      segment = decodeURIComponent(raw)
    } catch {
      return null
    }
    if (segment === '' || segment === '.' || segment === '..') return null
    if (segment.includes('/') || segment.includes('\\') || segment.includes('\0')) return null
    segments.push(segment)
  }
  if (segments.length === 0) return null
  const candidate = path.join(root, ...segments)
  try {
    const real = await realpath(candidate)
    if (!real.startsWith(root + path.sep)) return null
    const info = await stat(real)
    if (!info.isFile()) return null
    return { file: real, size: info.size }
  } catch {
    return null
  }
}

function contentType(rawPath: string): string {
  if (rawPath.endsWith('.narinfo')) return 'text/x-nix-narinfo'
  if (rawPath.endsWith('.ls')) return 'application/json'
  if (rawPath.endsWith('/nix-cache-info') || rawPath === 'nix-cache-info') return 'text/x-nix-cache-info'
  if (/\.nar(\.[a-z0-9]+)?$/i.test(rawPath)) return 'application/x-nix-nar'
  return 'application/octet-stream'
}

function bytesBody(bytes: Uint8Array, type: string): Body {
  return {
    size: bytes.byteLength,
    headers: { 'Content-Type': type },
    rangeable: true,
    open: (start, end) => Readable.from([Buffer.from(bytes.buffer, bytes.byteOffset + start, end - start + 1)]),
  }
}

async function encode(data: Buffer, encoding: 'br' | 'gzip' | 'zstd'): Promise<Buffer> {
  switch (encoding) {
    case 'br':
      return brotliCompress(data)
    case 'gzip':
      return gzipCompress(data)
    case 'zstd':
      return zstdCompress(data)
  }
}

/** Parses a single `bytes=a-b`, `bytes=a-` or `bytes=-n` range; null means "ignore the header". */
function parseRange(header: string | undefined, size: number): { start: number; end: number } | 'unsatisfiable' | null {
  if (header === undefined) return null
  const match = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header)
  if (match === null) return null
  const [, first = '', last = ''] = match
  if (first === '' && last === '') return null
  if (first === '') {
    const suffix = Number(last)
    if (suffix === 0 || size === 0) return 'unsatisfiable'
    return { start: Math.max(0, size - suffix), end: size - 1 }
  }
  const start = Number(first)
  if (last !== '' && Number(last) < start) return null
  if (start >= size) return 'unsatisfiable'
  return { start, end: last === '' ? size - 1 : Math.min(Number(last), size - 1) }
}

/** Sends body bytes [start, last] (none if last < start) after the already-written headers, then destroys the socket. */
async function resetAfter(res: ServerResponse, body: Body, start: number, last: number): Promise<void> {
  const socket = res.socket
  if (last >= start) {
    try {
      for await (const chunk of body.open(start, last)) {
        if (res.destroyed) return
        await new Promise<void>((resolve, reject) => {
          res.write(chunk as Buffer, (err) => (err ? reject(err) : resolve()))
        })
      }
    } catch {
      // the client went away; fall through to destroy
    }
  } else {
    res.flushHeaders()
  }
  // Wait until everything queued on the socket has reached the kernel, then tear the connection down.
  if (socket !== null && !socket.destroyed) {
    await new Promise<void>((resolve) => socket.write(Buffer.alloc(0), () => resolve()))
  }
  socket?.destroy()
  res.destroy()
}

/** Streams `source` to `res` at about `bytesPerSecond`, honouring backpressure and stopping if the client leaves. */
async function throttle(res: ServerResponse, source: Readable, bytesPerSecond: number): Promise<void> {
  const rate = Math.max(1, bytesPerSecond)
  const chunkSize = Math.max(1, Math.min(16 * 1024, Math.floor(rate / 20)))
  const gone = new AbortController()
  const onClose = (): void => gone.abort()
  res.once('close', onClose)
  const startedAt = Date.now()
  let sent = 0
  try {
    for await (const data of source) {
      const buffer = data as Buffer
      for (let offset = 0; offset < buffer.length; offset += chunkSize) {
        if (gone.signal.aborted) return
        const piece = buffer.subarray(offset, offset + chunkSize)
        const wait = startedAt + (sent / rate) * 1000 - Date.now()
        if (wait > 0) await sleep(wait, undefined, { signal: gone.signal })
        if (!res.write(piece)) {
          await new Promise<void>((resolve) => {
            const done = (): void => {
              res.off('drain', done)
              gone.signal.removeEventListener('abort', done)
              resolve()
            }
            res.on('drain', done)
            gone.signal.addEventListener('abort', done)
          })
        }
        sent += piece.length
      }
    }
    if (!gone.signal.aborted) res.end()
  } catch {
    res.destroy()
  } finally {
    source.destroy()
    res.off('close', onClose)
  }
}

export interface Blackhole {
  /** `http://127.0.0.1:<port>`: connections to it are never established. */
  readonly url: string
  close(): Promise<void>
}

/**
 * A TCP port whose connections never complete: a child process listens with a backlog of 1 and never
 * accepts, and the accept queue is filled, so the kernel drops further SYNs (a connect timeout, not a
 * refusal). Linux behaviour; throws if the port does not behave so.
 */
export async function startBlackhole(): Promise<Blackhole> {
  const child = spawn(
    process.execPath,
    [
      '-e',
      "const s=require('net').createServer();s.listen({port:0,host:'127.0.0.1',backlog:1},()=>{process.stdout.write(s.address().port+'\\n');Atomics.wait(new Int32Array(new SharedArrayBuffer(4)),0,0,120000)})",
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  )
  const port = await new Promise<number>((resolve, reject) => {
    child.once('error', reject)
    child.stdout.once('data', (data: Buffer) => resolve(Number(data.toString().trim())))
  })
  const fillers: Socket[] = []
  const close = async () => {
    for (const s of fillers) s.destroy()
    if (child.exitCode === null && child.pid !== undefined) {
      const exited = new Promise((resolve) => child.once('exit', resolve))
      child.kill('SIGKILL')
      await exited
    }
  }
  // Fill the accept queue until a connection attempt stays pending.
  for (let i = 0; i < 16; i++) {
    const socket = connect(port, '127.0.0.1')
    socket.on('error', () => {})
    fillers.push(socket)
    const connected = await new Promise<boolean>((resolve) => {
      socket.once('connect', () => resolve(true))
      // A connect the kernel completed is reported in the poll phase after this timer: looked at
      // again after it (setImmediate), however late a loaded machine runs the timer.
      setTimeout(() => setImmediate(() => resolve(!socket.connecting)), 300)
    })
    if (!connected) return { url: `http://127.0.0.1:${port}`, close }
  }
  await close()
  throw new Error('could not make a blackhole port: every connection was accepted')
}
