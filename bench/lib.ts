/** Helpers for bench/run.ts: child processes, timing, an HTTP client, wrk and nginx. */
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import http from 'node:http'
import net from 'node:net'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'

const execFileP = promisify(execFile)

export const ROOT = path.resolve(import.meta.dirname, '..')
export const BENCH = path.join(ROOT, 'bench')
export const WORK = path.join(BENCH, '.work')

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  if (sorted.length === 0) return NaN
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

export function log(line: string): void {
  process.stderr.write(`[bench] ${line}\n`)
}

/** Is `command` on PATH? */
export async function hasTool(command: string): Promise<boolean> {
  return execFileP('sh', ['-c', `command -v ${command}`]).then(
    () => true,
    () => false,
  )
}

/** A child process driven by request/response IPC messages (bench/unnar-child.ts, bench/upstream-child.ts). */
export class IpcChild {
  readonly proc: ChildProcess
  #queue: Array<(message: Record<string, unknown>) => void> = []
  #exited = false

  private constructor(script: string) {
    this.proc = spawn(process.execPath, ['--import', 'tsx', script], {
      cwd: ROOT,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    })
    this.proc.on('message', (message: Record<string, unknown>) => this.#queue.shift()?.(message))
    this.proc.on('exit', () => {
      this.#exited = true
      for (const waiter of this.#queue.splice(0)) waiter({ type: 'error', message: 'child exited' })
    })
  }

  static async spawn(script: string): Promise<IpcChild> {
    const child = new IpcChild(script)
    const ready = await new Promise<Record<string, unknown>>((resolve) => child.#queue.push(resolve))
    if (ready.type !== 'ready') throw new Error(`${script}: ${String(ready.message)}`)
    return child
  }

  async request(message: object): Promise<Record<string, unknown>> {
    if (this.#exited) throw new Error('child exited')
    const answer = new Promise<Record<string, unknown>>((resolve) => this.#queue.push(resolve))
    this.proc.send(message)
    const reply = await answer
    if (reply.type === 'error') throw new Error(String(reply.message))
    return reply
  }

  async kill(): Promise<void> {
    if (this.#exited) return
    const gone = new Promise((resolve) => this.proc.once('exit', resolve))
    this.proc.kill('SIGTERM')
    await gone
  }
}

export interface CommandResult {
  readonly ms: number
  readonly stdoutBytes: number
  readonly stdoutSha256: string | undefined
}

/**
 * Runs a command to completion and times it (spawn to exit). stdout goes to /dev/null, or with
 * `capture` it is counted and hashed (for commands whose output is small enough to check).
 */
export async function timeCommand(
  command: string,
  args: readonly string[],
  options: { env?: NodeJS.ProcessEnv; capture?: boolean } = {},
): Promise<CommandResult> {
  const start = performance.now()
  const proc = spawn(command, args, {
    stdio: ['ignore', options.capture === true ? 'pipe' : 'ignore', 'pipe'],
    env: options.env ?? process.env,
  })
  let stderr = ''
  proc.stderr?.on('data', (d: Buffer) => (stderr += d.toString()))
  let bytes = 0
  const hash = createHash('sha256')
  proc.stdout?.on('data', (d: Buffer) => {
    bytes += d.length
    hash.update(d)
  })
  const code = await new Promise<number | null>((resolve, reject) => {
    proc.on('error', reject)
    proc.on('close', resolve)
  })
  const ms = performance.now() - start
  if (code !== 0) throw new Error(`${command} ${args.join(' ')} exited with ${code}: ${stderr.trim().slice(0, 500)}`)
  return { ms, stdoutBytes: bytes, stdoutSha256: options.capture === true ? hash.digest('hex') : undefined }
}

export interface FetchResult {
  readonly status: number
  readonly bytes: number
  /** Request start → first body byte (headers, for an empty body). */
  readonly ttfbMs: number
  /** Request start → last body byte. */
  readonly totalMs: number
  readonly sha256: string | undefined
}

const freshAgent = () => new http.Agent({ keepAlive: false, maxSockets: Infinity })

/** GET over a new connection, reading the body to the end. */
export function fetchBody(url: string, options: { hash?: boolean; agent?: http.Agent } = {}): Promise<FetchResult> {
  const start = performance.now()
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: options.agent ?? freshAgent() }, (res) => {
      let first: number | undefined
      let bytes = 0
      const hash = options.hash === true ? createHash('sha256') : undefined
      res.on('data', (chunk: Buffer) => {
        first ??= performance.now()
        bytes += chunk.length
        hash?.update(chunk)
      })
      res.on('end', () => {
        const end = performance.now()
        resolve({
          status: res.statusCode ?? 0,
          bytes,
          ttfbMs: (first ?? end) - start,
          totalMs: end - start,
          sha256: hash?.digest('hex'),
        })
      })
      res.on('error', reject)
    })
    req.on('error', reject)
  })
}

export async function sha256File(file: string): Promise<string> {
  return createHash('sha256')
    .update(await readFile(file))
    .digest('hex')
}

/** Waits until unnar has committed a NAR into `cacheDir/nar/` (i.e. the download is verified and synced). */
export async function waitForCommit(cacheDir: string, count = 1, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const names = await readdir(path.join(cacheDir, 'nar')).catch(() => [] as string[])
    if (names.filter((n) => n.endsWith('.nar')).length >= count) return
    if (Date.now() > deadline) throw new Error(`no NAR committed in ${cacheDir} after ${timeoutMs} ms`)
    await sleep(10)
  }
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port
      server.close(() => resolve(port))
    })
  })
}

export async function waitForPort(port: number, proc: ChildProcess, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`process exited with ${proc.exitCode} before listening on ${port}`)
    const ok = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1')
      socket.once('connect', () => {
        socket.destroy()
        resolve(true)
      })
      socket.once('error', () => resolve(false))
    })
    if (ok) return
    if (Date.now() > deadline) throw new Error(`nothing listening on ${port} after ${timeoutMs} ms`)
    await sleep(25)
  }
}

export async function stopProcess(proc: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return
  const gone = new Promise((resolve) => proc.once('exit', resolve))
  proc.kill(signal)
  const timer = setTimeout(() => proc.kill('SIGKILL'), 5000)
  await gone
  clearTimeout(timer)
}

export interface UnnarProcess {
  readonly proc: ChildProcess
  readonly url: string
  /** Everything the process wrote to stderr (its log), line by line. */
  readonly logLines: string[]
}

/** Compiles src/ to dist/ (`npm run build`), so spawnUnnar runs what the `unnar` command runs. */
export async function buildUnnar(): Promise<void> {
  await execFileP(
    process.execPath,
    [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', path.join(ROOT, 'tsconfig.build.json')],
    { cwd: ROOT },
  )
}

/**
 * unnar as its own process, exactly like the `unnar` command (compiled dist/src/main.js, see
 * buildUnnar; not through tsx, whose loader thread alone holds ~30 MiB), logging at warn.
 */
export async function spawnUnnar(
  upstream: string,
  cacheDir: string,
  options: { cacheSize?: string; args?: readonly string[] } = {},
): Promise<UnnarProcess> {
  const port = await freePort()
  const proc = spawn(
    process.execPath,
    [
      'dist/src/main.js',
      '--listen',
      `127.0.0.1:${port}`,
      '--upstream',
      upstream,
      '--cache-dir',
      cacheDir,
      '--cache-size',
      options.cacheSize ?? '20G',
      '--log-level',
      'warn',
      ...(options.args ?? []),
    ],
    { cwd: ROOT, stdio: ['ignore', 'inherit', 'pipe'] },
  )
  const logLines: string[] = []
  let partial = ''
  proc.stderr?.on('data', (d: Buffer) => {
    const parts = (partial + d.toString()).split('\n')
    partial = parts.pop() ?? ''
    logLines.push(...parts.filter((l) => l.trim() !== ''))
  })
  await waitForPort(port, proc)
  return { proc, url: `http://127.0.0.1:${port}`, logLines }
}

/** "3 × response aborted (TypeError: …)" for the distinct messages of unnar's log lines. */
export function summarizeLog(lines: readonly string[]): string[] {
  const counts = new Map<string, number>()
  for (const line of lines) {
    let key = line.slice(0, 200)
    try {
      const entry = JSON.parse(line) as { level?: string; msg?: string; error?: string }
      key = `${entry.level ?? '?'}: "${entry.msg ?? ''}"${entry.error === undefined ? '' : ` (${String(entry.error).slice(0, 120)})`}`
    } catch {}
    counts.set(key, (counts.get(key) ?? 0) + 1)
  }
  return [...counts].map(([key, n]) => `${n} × ${key}`)
}

/** VmRSS / VmHWM of a process, in bytes. */
export async function memoryOf(pid: number): Promise<{ rss: number; hwm: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const field = (name: string) => {
    const match = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)
    if (match?.[1] === undefined) throw new Error(`/proc/${pid}/status has no ${name}`)
    return Number(match[1]) * 1024
  }
  return { rss: field('VmRSS'), hwm: field('VmHWM') }
}

/** nginx serving `root` on a loopback port, one worker (like one unnar process), no access log. */
export async function startNginx(root: string): Promise<{ proc: ChildProcess; url: string }> {
  const prefix = path.join(WORK, 'nginx')
  await mkdir(path.join(prefix, 'tmp'), { recursive: true })
  const port = await freePort()
  const conf = path.join(prefix, 'nginx.conf')
  await writeFile(
    conf,
    `# written by bench/lib.ts
worker_processes 1;
pid ${prefix}/nginx.pid;
error_log ${prefix}/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  client_body_temp_path ${prefix}/tmp/body;
  proxy_temp_path ${prefix}/tmp/proxy;
  fastcgi_temp_path ${prefix}/tmp/fastcgi;
  uwsgi_temp_path ${prefix}/tmp/uwsgi;
  scgi_temp_path ${prefix}/tmp/scgi;
  types { text/plain txt; application/octet-stream bin; }
  server {
    listen 127.0.0.1:${port};
    root ${root};
    etag on;
  }
}
`,
  )
  const proc = spawn('nginx', ['-p', prefix, '-e', path.join(prefix, 'error.log'), '-c', conf, '-g', 'daemon off;'], {
    stdio: ['ignore', 'inherit', 'inherit'],
  })
  await waitForPort(port, proc)
  return { proc, url: `http://127.0.0.1:${port}` }
}

/** bench/bare-http-server.ts answering every request with `headers` and the bytes of `bodyFile`. */
export async function startBareHttp(
  bodyFile: string,
  headers: readonly string[],
): Promise<{ proc: ChildProcess; url: string }> {
  const port = await freePort()
  const proc = spawn(
    process.execPath,
    ['--import', 'tsx', path.join(BENCH, 'bare-http-server.ts'), String(port), bodyFile, JSON.stringify(headers)],
    { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] },
  )
  await waitForPort(port, proc)
  return { proc, url: `http://127.0.0.1:${port}` }
}

export interface WrkResult {
  readonly requests: number
  readonly bytes: number
  readonly seconds: number
  readonly errors: number
  /** The errors by kind, e.g. `connect 0, read 0, write 0, status 3, timeout 0`. */
  readonly errorDetail: string
  readonly reqPerSec: number
  readonly bytesPerSec: number
  readonly p50Ms: number
  readonly p99Ms: number
}

/** `script` (default: bench/wrk-report.lua) must define the report's done(); `args` go to its init(). */
export async function runWrk(
  url: string,
  threads: number,
  connections: number,
  seconds: number,
  options: { script?: string; args?: readonly string[] } = {},
): Promise<WrkResult> {
  const script = options.script ?? path.join(BENCH, 'wrk-report.lua')
  const { stdout } = await execFileP(
    'wrk',
    [
      `-t${threads}`,
      `-c${connections}`,
      `-d${seconds}s`,
      '--timeout',
      '30s',
      '-s',
      script,
      url,
      ...(options.args === undefined ? [] : ['--', ...options.args]),
    ],
    {
      maxBuffer: 1024 * 1024,
    },
  )
  const line = stdout.split('\n').find((l) => l.startsWith('WRK_JSON '))
  if (line === undefined) throw new Error(`wrk printed no summary:\n${stdout}`)
  const r = JSON.parse(line.slice('WRK_JSON '.length)) as Record<string, number>
  const secs = r.duration_us! / 1e6
  return {
    requests: r.requests!,
    bytes: r.bytes!,
    seconds: secs,
    errors: r.connect! + r.read! + r.write! + r.status! + r.timeout!,
    errorDetail: (['connect', 'read', 'write', 'status', 'timeout'] as const).map((k) => `${k} ${r[k]}`).join(', '),
    reqPerSec: r.requests! / secs,
    bytesPerSec: r.bytes! / secs,
    p50Ms: r.p50_us! / 1000,
    p99Ms: r.p99_us! / 1000,
  }
}

export interface H2loadResult {
  /** From h2load's start to its last response (h2load's own "finished in"; no process start-up). */
  readonly ms: number
  /** Responses with a 2xx status. */
  readonly ok: number
  /** Body bytes received, all responses together. */
  readonly bodyBytes: number
}

/** A stalled response fails the row instead of hanging the bench. */
const H2LOAD_TIMEOUT_MS = 120_000

/**
 * `n` GETs of `url` at once, one per connection, over HTTP/1.1 from h2load's single thread: a C
 * client on epoll, whose own CPU (on the same cores as the server) stays small beside that of the
 * bench's Node client (docs/benchmarks.md, the concurrent-clients benchmark). h2load exits 0 even when requests fail: callers check `ok`
 * and `bodyBytes`.
 */
export async function runH2load(url: string, n: number): Promise<H2loadResult> {
  const { stdout } = await execFileP('h2load', ['--h1', '-t', '1', '-c', String(n), '-n', String(n), url], {
    maxBuffer: 1024 * 1024,
    timeout: H2LOAD_TIMEOUT_MS,
  })
  const finished = /^finished in ([\d.]+)(us|ms|s),/m.exec(stdout)
  const ok = /^status codes: (\d+) 2xx/m.exec(stdout)
  const body = /\((\d+)\) data$/m.exec(stdout)
  if (finished === null || ok === null || body === null) throw new Error(`h2load printed no summary:\n${stdout}`)
  const unit = { us: 0.001, ms: 1, s: 1000 }[finished[2] as 'us' | 'ms' | 's']
  return { ms: Number(finished[1]) * unit, ok: Number(ok[1]), bodyBytes: Number(body[1]) }
}

export async function freshDir(name: string): Promise<string> {
  const dir = path.join(WORK, 'runs', name)
  await rm(dir, { recursive: true, force: true })
  await mkdir(dir, { recursive: true })
  return dir
}

export interface CpuSnapshot {
  /** Busy CPU seconds of the whole machine since boot. */
  readonly machine: number
  /** CPU seconds of this process and of its children that have been waited for. */
  readonly ours: number
}

let clockTicks: number | undefined

/** From /proc: lets the report say how much CPU other processes took during the run (noise). */
export async function cpuSnapshot(): Promise<CpuSnapshot | undefined> {
  try {
    clockTicks ??= Number((await execFileP('getconf', ['CLK_TCK'])).stdout.trim()) || 100
    const stat = (await readFile('/proc/stat', 'utf8')).split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number)
    // user nice system idle iowait irq softirq steal …
    const busy = stat[0]! + stat[1]! + stat[2]! + stat[5]! + stat[6]! + (stat[7] ?? 0)
    const self = (await readFile('/proc/self/stat', 'utf8')).split(') ')[1]!.split(' ').map(Number)
    // after "pid (comm) ": state(0) … utime(11) stime(12) cutime(13) cstime(14)
    const ours = self[11]! + self[12]! + self[13]! + self[14]!
    return { machine: busy / clockTicks, ours: ours / clockTicks }
  } catch {
    return undefined
  }
}
