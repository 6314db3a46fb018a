/** Typed access to the Nix 2.8 binary-cache fixtures in test/fixtures/nix-caches (paths.txt + manifest.json). */
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

export const FIXTURE_CACHES: string = fileURLToPath(new URL('../fixtures/nix-caches', import.meta.url))

export const COMPRESSIONS = ['xz', 'zstd', 'bzip2', 'br', 'none'] as const

export interface ManifestEntry {
  type: 'regular' | 'directory' | 'symlink'
  size?: number
  executable?: boolean
  sha256?: string
  target?: string
}

export interface FixturePath {
  kind: string
  storePath: string
  hash: string
  name: string
  entries: Record<string, ManifestEntry>
}

let cached: FixturePath[] | undefined

/** Reads paths.txt and manifest.json once and returns every fixture store path, in paths.txt order. */
export function loadFixturePaths(): FixturePath[] {
  if (cached === undefined) cached = readFixturePaths()
  return [...cached]
}

/** The fixture store path of the given kind (e.g. 'basic', 'site', 'tricky', 'app', 'dep'); throws if unknown. */
export function fixturePath(kind: string): FixturePath {
  const all = loadFixturePaths()
  const found = all.find((p) => p.kind === kind)
  if (found === undefined) {
    throw new Error(`unknown fixture kind ${JSON.stringify(kind)} (known: ${all.map((p) => p.kind).join(', ')})`)
  }
  return found
}

/** Absolute path of one fixture cache directory, e.g. cacheDir('xz'). */
export function cacheDir(name: string): string {
  return path.join(FIXTURE_CACHES, name)
}

function readFixturePaths(): FixturePath[] {
  const manifest: unknown = JSON.parse(readFileSync(path.join(FIXTURE_CACHES, 'manifest.json'), 'utf8'))
  if (!isRecord(manifest)) throw new Error('manifest.json: expected an object')
  const lines = readFileSync(path.join(FIXTURE_CACHES, 'paths.txt'), 'utf8').split('\n')
  const result: FixturePath[] = []
  for (const raw of lines) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#')) continue
    const match = /^(\S+)\s+(\/nix\/store\/([0-9a-z]{32})-(\S+))$/.exec(line)
    if (match === null) throw new Error(`paths.txt: malformed line ${JSON.stringify(line)}`)
    const [, kind, storePath, hash, name] = match as unknown as [string, string, string, string, string]
    const info = manifest[storePath]
    if (!isRecord(info) || !isRecord(info['entries'])) {
      throw new Error(`manifest.json: no entries for ${storePath}`)
    }
    const entries: Record<string, ManifestEntry> = {}
    for (const [rel, value] of Object.entries(info['entries'])) {
      entries[rel] = parseEntry(storePath, rel, value)
    }
    result.push({ kind, storePath, hash, name, entries })
  }
  return result
}

function parseEntry(storePath: string, rel: string, value: unknown): ManifestEntry {
  const where = `manifest.json: ${storePath} ${JSON.stringify(rel)}`
  if (!isRecord(value)) throw new Error(`${where}: expected an object`)
  const type = value['type']
  if (type !== 'regular' && type !== 'directory' && type !== 'symlink') {
    throw new Error(`${where}: bad type ${JSON.stringify(type)}`)
  }
  const entry: ManifestEntry = { type }
  const { size, executable, sha256, target } = value
  if (typeof size === 'number') entry.size = size
  if (typeof executable === 'boolean') entry.executable = executable
  if (typeof sha256 === 'string') entry.sha256 = sha256
  if (typeof target === 'string') entry.target = target
  return entry
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}
