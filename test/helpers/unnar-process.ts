/**
 * unnar as a real child process (`node --import tsx src/main.ts`, exactly the `unnar` command), for
 * tests that kill it, stop it, or measure its memory and file descriptors apart from the test runner.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { readdir, readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))

export interface UnnarProcess {
  readonly proc: ChildProcess
  readonly pid: number
  /** `http://127.0.0.1:<port>` */
  readonly url: string
  readonly cacheDir: string
  /** Every JSON log line so far, parsed (non-JSON stderr lines are kept as `{ msg: <line> }`). */
  readonly logs: Array<Record<string, unknown>>
  /** Resolves with the exit code or signal once the process has exited. */
  readonly exited: Promise<number | string>
  /** `${url}/nix/store/` + rest */
  store(rest: string): string
  /** Sends `signal` (SIGTERM by default) and waits for the exit; a no-op once exited. */
  stop(signal?: NodeJS.Signals): Promise<void>
  /**
   * Resolves once a log line matching `match` has been written: any line from index `from` on (0 by
   * default, so also lines written before the call; pass `logs.length` for new lines only).
   */
  waitForLog(
    match: (line: Record<string, unknown>) => boolean,
    options?: { ms?: number; from?: number },
  ): Promise<Record<string, unknown>>
}

export interface SpawnUnnarOptions {
  readonly upstreams: readonly string[]
  readonly cacheDir: string
  /** Extra environment (e.g. UNNAR_CACHE_SIZE); the child otherwise inherits the test's environment. */
  readonly env?: Record<string, string>
  /** Fixed `127.0.0.1:<port>`; a random free port by default. */
  readonly port?: number
  /** The "unnar listening" line this helper waits for is logged at info. */
  readonly logLevel?: 'info' | 'debug'
}

/** Starts the child and resolves once it logged "unnar listening" (rejects if it exits first or takes over 30 s). */
export async function spawnUnnar(options: SpawnUnnarOptions): Promise<UnnarProcess> {
  const args = [
    '--import',
    'tsx',
    'src/main.ts',
    '--listen',
    `127.0.0.1:${options.port ?? 0}`,
    '--upstream',
    options.upstreams.join(' '),
    '--cache-dir',
    options.cacheDir,
    '--log-level',
    options.logLevel ?? 'info',
  ]
  const proc = spawn(process.execPath, args, {
    cwd: ROOT,
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  const logs: Array<Record<string, unknown>> = []
  const listeners = new Set<() => void>()
  let partial = ''
  proc.stderr!.on('data', (data: Buffer) => {
    const parts = (partial + data.toString()).split('\n')
    partial = parts.pop() ?? ''
    for (const line of parts) {
      if (line.trim() === '') continue
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>)
      } catch {
        logs.push({ msg: line })
      }
    }
    for (const listener of listeners) listener()
  })
  const exited = new Promise<number | string>((resolve) =>
    proc.once('exit', (code, signal) => resolve(signal ?? code ?? -1)),
  )
  let hasExited = false
  void exited.then(() => {
    hasExited = true
    for (const listener of listeners) listener()
  })

  const waitForLog = (
    match: (line: Record<string, unknown>) => boolean,
    { ms = 20_000, from = 0 }: { ms?: number; from?: number } = {},
  ): Promise<Record<string, unknown>> =>
    new Promise((resolve, reject) => {
      const check = (): void => {
        const found = logs.slice(from).find(match)
        if (found !== undefined) return done(() => resolve(found))
        if (hasExited)
          return done(() => reject(new Error(`unnar exited before the expected log line; last lines:\n${tail(logs)}`)))
      }
      const timer = setTimeout(
        () => done(() => reject(new Error(`no expected log line within ${ms} ms; last lines:\n${tail(logs)}`))),
        ms,
      )
      const done = (settle: () => void): void => {
        clearTimeout(timer)
        listeners.delete(check)
        settle()
      }
      listeners.add(check)
      check()
    })

  const listening = await waitForLog((l) => l.msg === 'unnar listening', { ms: 30_000 }).catch(async (err: Error) => {
    proc.kill('SIGKILL')
    throw err
  })
  const url = String(listening.url)
  return {
    proc,
    pid: proc.pid!,
    url,
    cacheDir: options.cacheDir,
    logs,
    exited,
    store: (rest) => `${url}/nix/store/${rest}`,
    stop: async (signal = 'SIGTERM') => {
      if (!hasExited) proc.kill(signal)
      await exited
    },
    waitForLog,
  }
}

function tail(logs: ReadonlyArray<Record<string, unknown>>): string {
  return logs
    .slice(-8)
    .map((l) => JSON.stringify(l))
    .join('\n')
}

/** VmRSS of a live process, in bytes (Linux). */
export async function rssOf(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const match = /^VmRSS:\s+(\d+) kB/m.exec(status)
  if (match?.[1] === undefined) throw new Error(`/proc/${pid}/status has no VmRSS`)
  return Number(match[1]) * 1024
}

/** How many file descriptors a live process holds open (Linux). */
export async function openFdsOf(pid: number): Promise<number> {
  return (await readdir(`/proc/${pid}/fd`)).length
}
