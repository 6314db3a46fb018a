/** The command line and what the server says about itself: --help, bad values named as typed, the start line, small routes. */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, describe, it } from 'node:test'
import { promisify } from 'node:util'
import { loadConfig } from '../src/config.js'
import { createLogger } from '../src/log.js'
import { startServer } from '../src/server.js'
import { GROUP_TITLES, helpText, SETTINGS, settingsTable } from '../src/settings.js'

const run = promisify(execFile)
const MAIN = path.resolve('src/main.ts')

/** Runs the real command (through tsx); resolves with its exit code and output whatever the code. */
async function unnar(
  args: readonly string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, ['--import', 'tsx', MAIN, ...args], {
      env: { ...process.env, ...env },
    })
    return { code: 0, stdout, stderr }
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string }
    return { code: e.code, stdout: e.stdout, stderr: e.stderr }
  }
}

describe('unnar --help', () => {
  it('lists every setting under its group, with placeholder, variable, default and meaning, in 100 columns', async () => {
    const { code, stdout } = await unnar(['--help'])
    assert.equal(code, 0)
    assert.equal(stdout, helpText('0.1.0'))
    for (const line of stdout.split('\n')) assert.ok(line.length <= 100, `${line.length} columns: ${line}`)
    for (const title of Object.values(GROUP_TITLES)) assert.match(stdout, new RegExp(`^${title}:$`, 'm'))
    for (const s of SETTINGS) {
      const at = stdout.indexOf(`  ${s.flag} ${s.value}  (${s.env}`)
      assert.ok(at >= 0, s.flag)
      assert.ok(stdout.slice(at).split('\n')[0]!.includes(`default ${s.default})`), s.flag)
      assert.equal(stdout.slice(at).split('\n')[1], `        ${s.help}`, s.flag)
    }
  })
})

describe('bad values', () => {
  it('names the flag the user typed, or the variable the user set', async () => {
    const byFlag = await unnar(['--cache-size', 'banana'])
    assert.equal(byFlag.code, 2)
    assert.equal(byFlag.stderr, 'unnar: --cache-size: "banana" is not a size (examples: 10G, 500M, 1048576)\n')
    const inline = await unnar(['--verify=maybe'])
    assert.equal(inline.stderr, 'unnar: --verify: "maybe" is not "strict" or "stream"\n')
    const byEnv = await unnar([], { UNNAR_CACHE_SIZE: 'banana' })
    assert.equal(byEnv.code, 2)
    assert.match(byEnv.stderr, /^unnar: UNNAR_CACHE_SIZE: "banana" is not a size/)
    const upstream = await unnar(['--upstream', 'ftp://x'])
    assert.match(upstream.stderr, /^unnar: --upstream: unsupported scheme "ftp:"/)
  })
})

describe('what the server says about itself', { timeout: 30_000 }, () => {
  const cleanups: Array<() => Promise<void>> = []
  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup()
  })

  async function start(env: Record<string, string>) {
    const cacheDir = await mkdtemp(path.join(os.tmpdir(), 'unnar-cli-'))
    const logs: Array<Record<string, unknown>> = []
    const waiters: Array<{ match: (l: Record<string, unknown>) => boolean; resolve: () => void }> = []
    const sink = (text: string) => {
      const line = JSON.parse(text) as Record<string, unknown>
      logs.push(line)
      for (const waiter of waiters.filter((w) => w.match(line))) waiter.resolve()
    }
    /** Resolves when a line matching `match` has been logged (or already was). */
    const logged = (match: (l: Record<string, unknown>) => boolean) =>
      logs.some(match) ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ match, resolve }))
    const config = loadConfig({ PORT: '0', UNNAR_CACHE_DIR: cacheDir, TRUSTED_PUBLIC_KEYS: '', ...env })
    const server = await startServer(config, createLogger('info', sink))
    cleanups.push(async () => {
      await server.close()
      await rm(cacheDir, { recursive: true, force: true })
    })
    return { server, logs, logged }
  }

  it('logs the address it really listens on, and warns about a file:// upstream that is not there', async () => {
    const missing = path.join(os.tmpdir(), 'unnar-cli-no-such-cache')
    const { server, logs, logged } = await start({ NIX_CACHE_URL: `file://${missing}` })
    const line = logs.find((l) => l.msg === 'unnar listening')!
    const port = new URL(server.url).port
    assert.ok(line.listen === `[::]:${port}` || line.listen === `0.0.0.0:${port}`, String(line.listen))
    assert.equal(line.url, server.url)
    // The node:test timeout reports it if the warning never comes.
    await logged(
      (l) =>
        l.msg === 'a file:// upstream directory cannot be read: nothing will be found there until it can' &&
        l.upstream === `file://${missing}`,
    )
  })

  it('answers /nix/store/ like /nix/store, and /favicon.ico with the icon', async () => {
    const here = path.resolve('test/fixtures/mirror-cache')
    const { server } = await start({ NIX_CACHE_URL: `file://${here}`, HTTP_ADDR: '127.0.0.1' })
    for (const target of ['/nix/store', '/nix/store/']) {
      const res = await fetch(server.url + target)
      assert.equal(res.status, 404, target)
      assert.match(await res.text(), /unnar does not list the whole store; ask for a store path/, target)
    }
    const icon = await fetch(`${server.url}/favicon.ico`)
    assert.equal(icon.status, 200)
    assert.equal(icon.headers.get('content-type'), 'image/svg+xml')
    assert.equal(await icon.text(), await readFile('public/favicon.svg', 'utf8'))
  })
})

describe('docs/configuration.md', () => {
  it('has the table rendered from src/settings.ts (npm run docs:settings writes it) and a section per setting', async () => {
    const doc = await readFile('docs/configuration.md', 'utf8')
    const begin = '<!-- settings table: written by `npm run docs:settings` from src/settings.ts -->\n'
    const start = doc.indexOf(begin)
    assert.ok(start >= 0, 'the table marker')
    const end = doc.indexOf('<!-- end of settings table -->', start)
    assert.equal(
      doc.slice(start + begin.length, end),
      settingsTable(),
      'docs/configuration.md is behind src/settings.ts: run npm run docs:settings',
    )
    for (const s of SETTINGS) assert.match(doc, new RegExp(`^### \`${s.flag}\`$`, 'm'), s.flag)
  })
})
