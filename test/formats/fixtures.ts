/** Test helper: reads the Nix 2.8 fixture caches in test/fixtures/nix-caches (see manifest.json there). */
import { readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const CACHES_DIR = fileURLToPath(new URL('../fixtures/nix-caches/', import.meta.url))

/** Every cache directory (xz, zstd, bzip2, br, none, no-listing, unsigned). */
export const CACHE_NAMES: readonly string[] = readdirSync(CACHES_DIR, { withFileTypes: true })
  .filter((entry) => entry.isDirectory())
  .map((entry) => entry.name)
  .sort()

export interface FixtureFile {
  /** e.g. 'xz/8gxcdyzlr8aa09pp43z8zbxd9zm00qzk.narinfo' */
  readonly name: string
  readonly hashPart: string
  readonly text: string
}

/** All files with the given extension (`narinfo` or `ls`) at the root of every cache. */
export function fixtureFiles(ext: 'narinfo' | 'ls'): FixtureFile[] {
  const files: FixtureFile[] = []
  for (const cache of CACHE_NAMES) {
    for (const file of readdirSync(join(CACHES_DIR, cache)).sort()) {
      if (!file.endsWith(`.${ext}`)) continue
      files.push({ name: `${cache}/${file}`, hashPart: file.slice(0, 32), text: readFileSync(join(CACHES_DIR, cache, file), 'utf8') })
    }
  }
  return files
}

export interface ManifestEntry {
  readonly type: 'regular' | 'symlink' | 'directory'
  readonly size?: number
  readonly executable?: boolean
  readonly sha256?: string
  readonly target?: string
}

/** Store path → (relative path → entry), as recorded when the fixtures were made. The root is not listed. */
export function readManifest(): Map<string, Map<string, ManifestEntry>> {
  const raw = JSON.parse(readFileSync(join(CACHES_DIR, 'manifest.json'), 'utf8')) as Record<string, { entries: Record<string, ManifestEntry> }>
  return new Map(Object.entries(raw).map(([storePath, { entries }]) => [storePath, new Map(Object.entries(entries))]))
}

export interface UncompressedNar {
  readonly storePath: string
  readonly hashPart: string
  readonly file: string
  readonly nar: Buffer
  /** The `.ls` Nix wrote for the same store path. */
  readonly listingText: string
}

/** The uncompressed NARs of the `none` cache, matched to their store path through the narinfo URL. */
export function uncompressedNars(): UncompressedNar[] {
  const dir = join(CACHES_DIR, 'none')
  return readdirSync(dir)
    .filter((file) => file.endsWith('.narinfo'))
    .sort()
    .map((file) => {
      const text = readFileSync(join(dir, file), 'utf8')
      const url = /^URL: (.*)$/m.exec(text)?.[1]
      const storePath = /^StorePath: (.*)$/m.exec(text)?.[1]
      if (url === undefined || storePath === undefined) throw new Error(`fixture ${file} lacks URL or StorePath`)
      const hashPart = file.slice(0, 32)
      return {
        storePath,
        hashPart,
        file: url,
        nar: readFileSync(join(dir, url)),
        listingText: readFileSync(join(dir, `${hashPart}.ls`), 'utf8'),
      }
    })
}
