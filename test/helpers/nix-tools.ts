/**
 * The programs e2e tests compare unnar with (Nix, tar, wget…): which are missing, Nix's own restore
 * of a fixture, and comparing what they made.
 */
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { startTestUpstream, type TestUpstream } from './test-upstream.js'
import { startUnnar, type TestUnnar } from './unnar.js'

/** The commands of `commands` that are not on PATH: a suite needing them is skipped, naming them. */
export function missingCommands(commands: readonly string[]): string[] {
  return commands.filter((command) => {
    try {
      execFileSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' })
      return false
    } catch {
      return true
    }
  })
}

/**
 * Restores the store path `base` (`<hash>-<name>`) of the xz-compressed fixture cache `cache` into
 * `out` with `nix-store --restore`, and returns its uncompressed NAR.
 */
export async function restoreWithNix(cache: string, base: string, out: string): Promise<Buffer> {
  const narInfo = await readFile(path.join(cache, `${base.slice(0, 32)}.narinfo`), 'utf8')
  const url = /^URL: (.*)$/m.exec(narInfo)![1]!
  const nar = execFileSync('xz', ['-dc', path.join(cache, url)], { maxBuffer: 64 << 20 })
  execFileSync('nix-store', ['--restore', out], { input: nar })
  return nar
}

/** The same entries (path → description), whatever their order. */
export function assertSameEntries(got: Map<string, string>, want: Map<string, string>, what: string): void {
  const sorted = (m: Map<string, string>) => [...m].sort(([a], [b]) => (a < b ? -1 : 1))
  assert.deepEqual(sorted(got), sorted(want), what)
}

/** An unnar in front of fixture caches, with each store path as Nix itself restores it. */
export interface FixtureServer {
  /** A scratch directory, deleted by stop(). */
  readonly work: string
  readonly unnar: TestUnnar
  /** `<hash>-<name>` → where Nix restored it, and its NAR. */
  readonly restored: ReadonlyMap<string, { readonly dir: string; readonly nar: Buffer }>
  stop(): Promise<void>
}

/** Serves the xz-compressed `caches` (highest priority first) and restores each of `paths` ([`<hash>-<name>`, its cache]). */
export async function serveFixtures(
  caches: readonly string[],
  paths: ReadonlyArray<readonly [base: string, cache: string]>,
): Promise<FixtureServer> {
  const work = await mkdtemp(path.join(os.tmpdir(), 'unnar-fixtures-'))
  const upstreams: TestUpstream[] = []
  for (const root of caches) upstreams.push(await startTestUpstream({ root }))
  const unnar = await startUnnar(
    upstreams.map((u) => u.url),
    { TRUSTED_PUBLIC_KEYS: '' },
  )
  const restored = new Map<string, { dir: string; nar: Buffer }>()
  for (const [base, cache] of paths) {
    const dir = path.join(work, `restored-${base}`)
    restored.set(base, { dir, nar: await restoreWithNix(cache, base, dir) })
  }
  const stop = async () => {
    await unnar.stop()
    for (const upstream of upstreams) await upstream.close()
    await rm(work, { recursive: true, force: true })
  }
  return { work, unnar, restored, stop }
}
