/** Starts an in-process unnar on a random port with a fresh cache directory, capturing its log lines. */
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { loadConfig } from '../../src/config.js'
import { createLogger } from '../../src/log.js'
import { startServer, type RunningServer } from '../../src/server.js'
import { WAIT_MS, within } from './wait.js'

export interface TestUnnar extends RunningServer {
  readonly cacheDir: string
  /** Every log line, parsed. */
  readonly logs: Array<Record<string, unknown>>
  /** Resolves with the first log line (written before or after the call) matching `match`; fails naming `what` after `ms`. */
  waitForLog(
    match: (line: Record<string, unknown>) => boolean,
    what: string,
    ms?: number,
  ): Promise<Record<string, unknown>>
  /** `${url}/nix/store/` + rest */
  store(rest: string): string
  /** Stops the server and deletes the cache directory unless `keepCache`. */
  stop(options?: { keepCache?: boolean }): Promise<void>
}

export async function startUnnar(upstreams: readonly string[], env: Record<string, string> = {}): Promise<TestUnnar> {
  const cacheDir = env.UNNAR_CACHE_DIR ?? (await mkdtemp(path.join(os.tmpdir(), 'unnar-test-')))
  const config = loadConfig({
    PORT: '0',
    HTTP_ADDR: '127.0.0.1',
    NIX_CACHE_URL: upstreams.join(' '),
    UNNAR_CACHE_DIR: cacheDir,
    ...env,
  })
  const logs: Array<Record<string, unknown>> = []
  const watchers = new Set<(line: Record<string, unknown>) => void>()
  const log = createLogger('debug', (text) => {
    const line = JSON.parse(text) as Record<string, unknown>
    logs.push(line)
    for (const watcher of [...watchers]) watcher(line)
  })
  const waitForLog = (
    match: (line: Record<string, unknown>) => boolean,
    what: string,
    ms = WAIT_MS,
  ): Promise<Record<string, unknown>> => {
    const found = logs.find(match)
    if (found !== undefined) return Promise.resolve(found)
    let watcher = (_line: Record<string, unknown>): void => {}
    const seen = new Promise<Record<string, unknown>>((resolve) => {
      watcher = (line) => {
        if (match(line)) resolve(line)
      }
      watchers.add(watcher)
    })
    const described = () =>
      `log line: ${what}; last lines:\n${logs
        .slice(-8)
        .map((l) => JSON.stringify(l))
        .join('\n')}`
    return within(seen, described, ms).finally(() => watchers.delete(watcher))
  }
  const server = await startServer(config, log)
  return {
    ...server,
    cacheDir,
    logs,
    waitForLog,
    store: (rest) => `${server.url}/nix/store/${rest}`,
    stop: async (options) => {
      await server.close()
      if (options?.keepCache !== true) await rm(cacheDir, { recursive: true, force: true }).catch(() => {})
    },
  }
}

export async function sha256Hex(body: ArrayBuffer | Uint8Array): Promise<string> {
  const { createHash } = await import('node:crypto')
  return createHash('sha256').update(new Uint8Array(body)).digest('hex')
}

/** Percent-encodes each segment of a relative path the way a browser does. */
export function encodeRel(rel: string): string {
  return rel.split('/').map(encodeURIComponent).join('/')
}
