/**
 * The scale fixtures of issue #7, built once into bench/.work/ like fixture.ts (and rebuilt only
 * when SCALE_FIXTURE_VERSION changes), from real files of this machine (never random or repeated bytes):
 *
 *  gb     one store path of ≈1 GB: `part-NNN.bin` files, each a concatenation of distinct real
 *         files from /usr (libraries, binaries, data), then `zz/last.bin`; zstd-compressed by Nix.
 *  soak   many small store paths, each holding one distinct real text file (`doc.txt`) from
 *         /usr/share/doc; zstd-compressed by Nix, with `.ls` listings.
 */
import { execFile } from 'node:child_process'
import { mkdir, open, readdir, readFile, realpath, rm, stat, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { promisify } from 'node:util'
import { NIX_CONFIG } from './fixture.js'

const run = promisify(execFile)

export const SCALE_FIXTURE_VERSION = 'v1'
const GB_TARGET_BYTES = 1000 * 1000 * 1000
const GB_PART_BYTES = 32 * 1024 * 1024
const GB_SOURCE_DIRS = ['/usr/lib', '/usr/bin', '/usr/share', '/usr/libexec', '/usr/local']
const XZ_BLOCKS_TARGET_BYTES = 220 * 1000 * 1000
/** Whole trees of /usr for the crawl: ≈20,000 files together, in ≈600 MB. */
const CRAWL_SOURCE_DIRS = [
  '/usr/share/doc',
  '/usr/include',
  '/usr/share/locale',
  '/usr/lib/python3.11',
  '/usr/share/perl',
  '/usr/lib/node_modules',
]
const SOAK_PATHS = 1500
const SOAK_SOURCE_DIR = '/usr/share/doc'
const SOAK_MIN_BYTES = 2 * 1024
const SOAK_MAX_BYTES = 16 * 1024

export interface GbFixture {
  /** file:// binary cache directory. */
  readonly cache: string
  readonly storePath: string
  readonly narSize: number
  readonly fileSize: number
  /** The last file in NAR order, and its size. */
  readonly lastRel: string
  readonly lastSize: number
}

/** A NAR of ≥ 200 MB in a cache written with `parallel-compression`: an xz file of many blocks. */
export interface XzBlocksFixture extends GbFixture {
  /** The xz file's blocks (from `xz --list`). */
  readonly blocks: number
}

/** Store paths of many real files each (trees of /usr copied whole), for the crawl. */
export interface CrawlFixture {
  readonly cache: string
  /** Every store path's base name. */
  readonly storePaths: readonly string[]
}

export interface SoakFixture {
  readonly cache: string
  /** Every store path's base name; each holds `doc.txt`. */
  readonly storePaths: readonly string[]
  readonly fileRel: 'doc.txt'
}

/** Distinct regular files (by device and inode) under `dirs`, in a stable order. */
async function realFiles(
  dirs: readonly string[],
  accept: (size: number) => boolean,
): Promise<Array<{ file: string; size: number }>> {
  const seen = new Set<string>()
  const out: Array<{ file: string; size: number }> = []
  const walk = async (dir: string): Promise<void> => {
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => [])
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    for (const entry of entries) {
      const full = path.join(dir, entry.name)
      if (entry.isDirectory()) await walk(full)
      else if (entry.isFile()) {
        const info = await stat(full).catch(() => undefined)
        const id = info === undefined ? '' : `${info.dev}:${info.ino}`
        if (info === undefined || seen.has(id) || !accept(info.size)) continue
        seen.add(id)
        out.push({ file: await realpath(full), size: info.size })
      }
    }
  }
  for (const dir of dirs) await walk(dir)
  return out
}

/** `nix-store --add` of `trees`, then `nix copy` into a file:// cache (zstd unless `params` say otherwise). */
async function nixAddAndCopy(
  trees: readonly string[],
  cache: string,
  say: (line: string) => void,
  params = 'compression=zstd',
): Promise<string[]> {
  const env = { ...process.env, NIX_CONFIG }
  const storePaths = (await run('nix-store', ['--add', ...trees], { env, maxBuffer: 64 * 1024 * 1024 })).stdout
    .trim()
    .split('\n')
  say(`  nix copy → cache with ${params} (${storePaths.length} store paths)`)
  await run('nix', ['copy', '--to', `file://${cache}?write-nar-listing=true&${params}`, ...storePaths], {
    env,
    maxBuffer: 64 * 1024 * 1024,
  })
  return storePaths
}

function narinfoField(text: string, field: string): string {
  const match = new RegExp(`^${field}: (.*)$`, 'm').exec(text)
  if (match?.[1] === undefined) throw new Error(`narinfo has no ${field}`)
  return match[1]
}

async function cached<T>(metaFile: string, check: (fixture: T) => Promise<unknown>): Promise<T | undefined> {
  const text = await readFile(metaFile, 'utf8').catch(() => undefined)
  if (text === undefined) return undefined
  const fixture = JSON.parse(text) as T
  return (await check(fixture).then(
    () => true,
    () => false,
  ))
    ? fixture
    : undefined
}

/** A soak or crawl fixture is usable while its last store path's narinfo is there. */
async function lastNarinfo(f: { cache: string; storePaths: readonly string[] }): Promise<unknown> {
  return stat(path.join(f.cache, `${f.storePaths.at(-1)!.slice(0, 32)}.narinfo`))
}

async function freshFixtureDir(workDir: string, prefix: string): Promise<string> {
  for (const name of await readdir(workDir))
    if (name.startsWith(prefix)) await rm(path.join(workDir, name), { recursive: true, force: true })
  const dir = path.join(workDir, `${prefix}${SCALE_FIXTURE_VERSION}`)
  await mkdir(dir, { recursive: true })
  return dir
}

/**
 * Fills `tree` with `part-NNN.bin` files (distinct real files from /usr concatenated, GB_PART_BYTES
 * each) up to `target` bytes, then `zz/last.bin` (one real file of 256 KiB–1 MiB, last in NAR order);
 * returns that file's size.
 */
async function fillTree(tree: string, target: number): Promise<number> {
  await mkdir(path.join(tree, 'zz'), { recursive: true })
  const files = await realFiles(GB_SOURCE_DIRS, (size) => size >= 64 * 1024)
  const lastCandidate = files.find((f) => f.size >= 256 * 1024 && f.size <= 1024 * 1024)
  if (lastCandidate === undefined) throw new Error('no file of 256 KiB–1 MiB under /usr for zz/last.bin')
  let total = 0
  let part = 0
  let out = await open(path.join(tree, 'part-000.bin'), 'w')
  let partBytes = 0
  for (const f of files) {
    if (total >= target) break
    if (f === lastCandidate) continue
    const data = await readFile(f.file).catch(() => undefined)
    if (data === undefined) continue
    await out.write(data)
    partBytes += data.length
    total += data.length
    if (partBytes >= GB_PART_BYTES) {
      await out.close()
      part++
      partBytes = 0
      out = await open(path.join(tree, `part-${String(part).padStart(3, '0')}.bin`), 'w')
    }
  }
  await out.close()
  if (total < target * 0.9) throw new Error(`only ${total} bytes of files under /usr; need ≈${target}`)
  await writeFile(path.join(tree, 'zz', 'last.bin'), await readFile(lastCandidate.file))
  return lastCandidate.size
}

/**
 * One store path of `target` bytes from /usr (fillTree) in a new cache with `params`, in `dir`; the
 * tree is removed once the store has its own copy.
 */
async function buildBulkFixture(
  dir: string,
  name: string,
  target: number,
  params: string | undefined,
  say: (line: string) => void,
): Promise<{ fixture: GbFixture; narFile: string }> {
  const tree = path.join(dir, 'trees', name)
  const lastSize = await fillTree(tree, target)
  const cache = path.join(dir, 'cache')
  const [storePath] = await nixAddAndCopy([tree], cache, say, params)
  const narinfo = await readFile(path.join(cache, `${path.basename(storePath!).slice(0, 32)}.narinfo`), 'utf8')
  await rm(path.join(dir, 'trees'), { recursive: true, force: true })
  const fixture: GbFixture = {
    cache,
    storePath: storePath!,
    narSize: Number(narinfoField(narinfo, 'NarSize')),
    fileSize: Number(narinfoField(narinfo, 'FileSize')),
    lastRel: 'zz/last.bin',
    lastSize,
  }
  return { fixture, narFile: path.join(cache, narinfoField(narinfo, 'URL')) }
}

/** A fixture built before under `prefix` (when `check` passes), and where to write a new one's description. */
async function reuseFixture<T>(
  workDir: string,
  prefix: string,
  what: string,
  check: (fixture: T) => Promise<unknown>,
  say: (line: string) => void,
): Promise<{ metaFile: string; reused: T | undefined }> {
  const metaFile = path.join(workDir, `${prefix}${SCALE_FIXTURE_VERSION}`, 'fixture.json')
  const reused = await cached<T>(metaFile, check)
  if (reused !== undefined) say(`${what} fixture: reusing ${path.dirname(metaFile)}`)
  return { metaFile, reused }
}

/** The ≈1 GB NAR (a minute or so the first time: copying, `nix-store --add`, zstd). */
export async function prepareGbFixture(workDir: string, say: (line: string) => void): Promise<GbFixture> {
  const prefix = 'fixture-gb-'
  const { metaFile, reused } = await reuseFixture<GbFixture>(
    workDir,
    prefix,
    'gb',
    async (f) => stat(path.join(f.cache, 'nix-cache-info')),
    say,
  )
  if (reused !== undefined) return reused
  say('gb fixture: building a ≈1 GB store path from files in /usr (first run only)')
  const dir = await freshFixtureDir(workDir, prefix)
  const { fixture } = await buildBulkFixture(dir, 'bench-1g', GB_TARGET_BYTES, undefined, say)
  await writeFile(metaFile, JSON.stringify(fixture, null, 2))
  return fixture
}

/** SOAK_PATHS small store paths (half a minute or so the first time). */
export async function prepareSoakFixture(workDir: string, say: (line: string) => void): Promise<SoakFixture> {
  const prefix = 'fixture-soak-'
  const { metaFile, reused } = await reuseFixture<SoakFixture>(workDir, prefix, 'soak', lastNarinfo, say)
  if (reused !== undefined) return reused
  say(`soak fixture: building ${SOAK_PATHS} small store paths from ${SOAK_SOURCE_DIR} (first run only)`)
  const dir = await freshFixtureDir(workDir, prefix)
  // Distinct contents, so no two store paths share a NAR (unnar keys NARs by NarHash).
  const seen = new Set<string>()
  const trees: string[] = []
  for (const f of await realFiles([SOAK_SOURCE_DIR], (size) => size >= SOAK_MIN_BYTES && size <= SOAK_MAX_BYTES)) {
    if (trees.length >= SOAK_PATHS) break
    const data = await readFile(f.file)
    const key = data.toString('base64')
    if (seen.has(key)) continue
    seen.add(key)
    const tree = path.join(dir, 'trees', `soak-${String(trees.length).padStart(4, '0')}`)
    await mkdir(tree, { recursive: true })
    await writeFile(path.join(tree, 'doc.txt'), data)
    trees.push(tree)
  }
  if (trees.length < 200) throw new Error(`only ${trees.length} distinct small files under ${SOAK_SOURCE_DIR}`)
  const cache = path.join(dir, 'cache')
  const storePaths = await nixAddAndCopy(trees, cache, say)
  const fixture: SoakFixture = { cache, storePaths: storePaths.map((p) => path.basename(p)), fileRel: 'doc.txt' }
  await rm(path.join(dir, 'trees'), { recursive: true, force: true })
  await writeFile(metaFile, JSON.stringify(fixture, null, 2))
  return fixture
}

/**
 * The ≥ 200 MB multi-block xz NAR (a few minutes the first time: Nix compresses with xz on every
 * core, as caches written with `parallel-compression=true` are, in blocks of 3 × the dictionary).
 */
export async function prepareXzBlocksFixture(workDir: string, say: (line: string) => void): Promise<XzBlocksFixture> {
  const prefix = 'fixture-xzmt-'
  const { metaFile, reused } = await reuseFixture<XzBlocksFixture>(
    workDir,
    prefix,
    'multi-block xz',
    async (f) => stat(path.join(f.cache, 'nix-cache-info')),
    say,
  )
  if (reused !== undefined) return reused
  say('multi-block xz fixture: building a ≈220 MB store path from files in /usr (first run only)')
  const dir = await freshFixtureDir(workDir, prefix)
  const params = 'compression=xz&parallel-compression=true'
  const built = await buildBulkFixture(dir, 'bench-xz-blocks', XZ_BLOCKS_TARGET_BYTES, params, say)
  const listed = (await run('xz', ['--robot', '--list', built.narFile])).stdout
  const fixture: XzBlocksFixture = { ...built.fixture, blocks: Number(/^totals\t\d+\t(\d+)/m.exec(listed)?.[1]) }
  await writeFile(metaFile, JSON.stringify(fixture, null, 2))
  return fixture
}

/** The crawl's store paths: the trees of CRAWL_SOURCE_DIRS, each added whole (a minute or so the first time). */
export async function prepareCrawlFixture(workDir: string, say: (line: string) => void): Promise<CrawlFixture> {
  const prefix = 'fixture-crawl-'
  const { metaFile, reused } = await reuseFixture<CrawlFixture>(workDir, prefix, 'crawl', lastNarinfo, say)
  if (reused !== undefined) return reused
  say(`crawl fixture: adding ${CRAWL_SOURCE_DIRS.join(', ')} (first run only)`)
  const dir = await freshFixtureDir(workDir, prefix)
  const trees: string[] = []
  for (const source of CRAWL_SOURCE_DIRS) if (await stat(source).catch(() => undefined)) trees.push(source)
  const cache = path.join(dir, 'cache')
  const storePaths = await nixAddAndCopy(trees, cache, say)
  const fixture: CrawlFixture = { cache, storePaths: storePaths.map((p) => path.basename(p)) }
  await writeFile(metaFile, JSON.stringify(fixture, null, 2))
  return fixture
}
