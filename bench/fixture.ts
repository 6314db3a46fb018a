/**
 * The benchmark fixture: two store paths built from real shared libraries of this machine (so the
 * NARs compress like real packages; never random or repeated bytes), put into xz and zstd binary
 * caches by the real Nix. Built once under bench/.work/fixture-<FIXTURE_VERSION>/ and reused until
 * FIXTURE_VERSION changes (older fixture directories are deleted then).
 *
 *  bench-big  ≈100 MB:  aaa-first.txt (≈4 KB of text, FIRST in NAR order)
 *                       lib/*.so*     (≈100 MB of distinct shared libraries)
 *                       zz/last.bin   (≈256 KiB library, LAST in NAR order: serving it needs the
 *                                      whole NAR decoded, while its own bytes stay small, so 200
 *                                      concurrent copies measure coalescing, not bulk transfer)
 *  bench-64m            big.bin       (64 MiB: the largest libraries concatenated, then cut)
 */
import { execFile } from 'node:child_process'
import { copyFile, mkdir, open, readdir, readFile, realpath, rm, stat, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)

export const FIXTURE_VERSION = 'v3'
const BIG_TARGET_BYTES = 100 * 1000 * 1000
const LAST_TARGET_BYTES = 256 * 1024
const HUGE_BYTES = 64 * 1024 * 1024
const FIRST_MAX_BYTES = 4096
const LIB_DIRS = ['/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib']
export const COMPRESSIONS = ['xz', 'zstd'] as const
export type Compression = (typeof COMPRESSIONS)[number]

export interface CacheInfo {
  /** The binary cache directory (use as file://<dir>). */
  readonly dir: string
  /** The NAR file of each store path in that cache. */
  readonly narFile: Record<'big' | 'huge', string>
  readonly fileSize: Record<'big' | 'huge', number>
}

export interface Fixture {
  readonly key: string
  readonly dir: string
  readonly nixConfig: string
  readonly big: { readonly storePath: string; readonly tree: string; readonly narSize: number }
  readonly huge: { readonly storePath: string; readonly tree: string; readonly narSize: number }
  readonly firstRel: 'aaa-first.txt'
  readonly lastRel: 'zz/last.bin'
  readonly hugeRel: 'big.bin'
  readonly caches: Record<Compression, CacheInfo>
}

export const NIX_CONFIG = 'experimental-features = nix-command\nsandbox = false\nsubstituters =\nrequire-sigs = false'

interface Candidate {
  readonly file: string
  readonly size: number
}

async function findLibraries(): Promise<Candidate[]> {
  const seen = new Set<string>()
  const out: Candidate[] = []
  for (const dir of LIB_DIRS) {
    const names = await readdir(dir).catch(() => [] as string[])
    for (const name of names.sort()) {
      if (!/\.so(\.\d+)*$/.test(name)) continue
      const real = await realpath(path.join(dir, name)).catch(() => undefined)
      if (real === undefined || seen.has(real)) continue
      const info = await stat(real).catch(() => undefined)
      if (info === undefined || !info.isFile() || info.size < 16 * 1024) continue
      seen.add(real)
      out.push({ file: real, size: info.size })
    }
    if (out.length > 50) break
  }
  return out
}

interface Plan {
  readonly lib: Candidate[]
  readonly last: Candidate
  readonly huge: Candidate[]
}

function plan(candidates: Candidate[]): Plan {
  const byName = [...candidates].sort((a, b) => (path.basename(a.file) < path.basename(b.file) ? -1 : 1))
  // The last file: the library closest to 256 KiB.
  const last = [...candidates].sort(
    (a, b) => Math.abs(a.size - LAST_TARGET_BYTES) - Math.abs(b.size - LAST_TARGET_BYTES) || (a.file < b.file ? -1 : 1),
  )[0]
  if (last === undefined) throw new Error('no shared libraries found in ' + LIB_DIRS.join(', '))
  const lib: Candidate[] = []
  let total = last.size
  // Medium-sized libraries (≤12 MB) in name order until ≈100 MB, so the NAR holds many real files.
  for (const c of byName) {
    if (total >= BIG_TARGET_BYTES) break
    if (c === last || c.size > 12 * 1024 * 1024) continue
    lib.push(c)
    total += c.size
  }
  if (total < BIG_TARGET_BYTES * 0.9) {
    for (const c of [...candidates].sort((a, b) => b.size - a.size)) {
      if (total >= BIG_TARGET_BYTES) break
      if (c === last || lib.includes(c)) continue
      lib.push(c)
      total += c.size
    }
  }
  const huge: Candidate[] = []
  let hugeTotal = 0
  for (const c of [...candidates].sort((a, b) => b.size - a.size || (a.file < b.file ? -1 : 1))) {
    if (hugeTotal >= HUGE_BYTES) break
    huge.push(c)
    hugeTotal += c.size
  }
  if (hugeTotal < HUGE_BYTES)
    throw new Error(`only ${hugeTotal} bytes of libraries found; need ${HUGE_BYTES} for big.bin`)
  return { lib, last, huge }
}

function narinfoField(text: string, field: string): string {
  const match = new RegExp(`^${field}: (.*)$`, 'm').exec(text)
  if (match?.[1] === undefined) throw new Error(`narinfo has no ${field}`)
  return match[1]
}

/** Returns the cached fixture, building it first if needed. `say` gets progress lines. */
export async function prepareFixture(workDir: string, say: (line: string) => void): Promise<Fixture> {
  // Keyed by the version only: once built, the fixture is a self-contained copy, so later package
  // installs on this machine do not force a rebuild. Bump FIXTURE_VERSION to rebuild.
  const key = FIXTURE_VERSION
  const dir = path.join(workDir, `fixture-${key}`)
  const metaFile = path.join(dir, 'fixture.json')
  const cached = await readFile(metaFile, 'utf8').catch(() => undefined)
  if (cached !== undefined) {
    const fixture = JSON.parse(cached) as Fixture
    const ok = await Promise.all([
      ...COMPRESSIONS.flatMap((c) => [stat(fixture.caches[c].narFile.big), stat(fixture.caches[c].narFile.huge)]),
      stat(path.join(fixture.big.tree, fixture.lastRel)),
      stat(path.join(fixture.huge.tree, fixture.hugeRel)),
    ]).then(
      () => true,
      () => false,
    )
    if (ok) {
      say(`fixture ${key}: reusing ${dir}`)
      return fixture
    }
  }

  const p = plan(await findLibraries())
  say(`fixture ${key}: building in ${dir} (first run only; xz-compressing ≈170 MB takes a minute or two)`)
  for (const name of await readdir(workDir))
    if (name.startsWith('fixture-')) await rm(path.join(workDir, name), { recursive: true, force: true })
  const bigTree = path.join(dir, 'trees', 'bench-big')
  const hugeTree = path.join(dir, 'trees', 'bench-64m')
  await mkdir(path.join(bigTree, 'lib'), { recursive: true })
  await mkdir(path.join(bigTree, 'zz'), { recursive: true })
  await mkdir(hugeTree, { recursive: true })
  const manifest: string[] = [`unnar benchmark fixture ${key}: real shared libraries copied from this machine`, '']
  const usedNames = new Set<string>()
  for (const c of p.lib) {
    let name = path.basename(c.file)
    while (usedNames.has(name)) name = `_${name}`
    usedNames.add(name)
    await copyFile(c.file, path.join(bigTree, 'lib', name))
    manifest.push(`lib/${name}\t${c.size}\t${c.file}`)
  }
  await copyFile(p.last.file, path.join(bigTree, 'zz', 'last.bin'))
  manifest.push(`zz/last.bin\t${p.last.size}\t${p.last.file}`)
  // A few KB of real text: the start of the manifest, cut at a line boundary.
  let first = ''
  for (const line of manifest) {
    if (first.length + line.length + 1 > FIRST_MAX_BYTES) break
    first += line + '\n'
  }
  await writeFile(path.join(bigTree, 'aaa-first.txt'), first)

  // big.bin: the largest libraries back to back, cut at exactly 64 MiB.
  const out = await open(path.join(hugeTree, 'big.bin'), 'w')
  let written = 0
  for (const c of p.huge) {
    const data = await readFile(c.file)
    const take = data.subarray(0, Math.min(data.length, HUGE_BYTES - written))
    await out.write(take)
    written += take.length
    if (written >= HUGE_BYTES) break
  }
  await out.close()

  const env = { ...process.env, NIX_CONFIG }
  const bigPath = (await run('nix-store', ['--add', bigTree], { env })).stdout.trim()
  const hugePath = (await run('nix-store', ['--add', hugeTree], { env })).stdout.trim()
  const caches = {} as Record<Compression, CacheInfo>
  for (const compression of COMPRESSIONS) {
    const cacheDir = path.join(dir, 'caches', compression)
    say(`  nix copy → ${compression} cache`)
    await run(
      'nix',
      ['copy', '--to', `file://${cacheDir}?write-nar-listing=true&compression=${compression}`, bigPath, hugePath],
      {
        env,
        maxBuffer: 64 * 1024 * 1024,
      },
    )
    const narFile = {} as Record<'big' | 'huge', string>
    const fileSize = {} as Record<'big' | 'huge', number>
    for (const [which, storePath] of [
      ['big', bigPath],
      ['huge', hugePath],
    ] as const) {
      const hash = path.basename(storePath).slice(0, 32)
      const narinfo = await readFile(path.join(cacheDir, `${hash}.narinfo`), 'utf8')
      narFile[which] = path.join(cacheDir, narinfoField(narinfo, 'URL'))
      fileSize[which] = Number(narinfoField(narinfo, 'FileSize'))
    }
    caches[compression] = { dir: cacheDir, narFile, fileSize }
  }
  const narSizeOf = async (storePath: string) => {
    const hash = path.basename(storePath).slice(0, 32)
    return Number(narinfoField(await readFile(path.join(dir, 'caches', 'xz', `${hash}.narinfo`), 'utf8'), 'NarSize'))
  }
  const fixture: Fixture = {
    key,
    dir,
    nixConfig: NIX_CONFIG,
    big: { storePath: bigPath, tree: bigTree, narSize: await narSizeOf(bigPath) },
    huge: { storePath: hugePath, tree: hugeTree, narSize: await narSizeOf(hugePath) },
    firstRel: 'aaa-first.txt',
    lastRel: 'zz/last.bin',
    hugeRel: 'big.bin',
    caches,
  }
  await writeFile(metaFile, JSON.stringify(fixture, null, 2))
  return fixture
}
