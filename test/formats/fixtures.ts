/** Test helper: reads the Nix 2.8 fixture caches in test/fixtures/nix-caches (see manifest.json there). */
import { readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { FIXTURE_CACHES } from '../helpers/fixtures.js'
import type { NarEntry } from '../../src/formats/nar-indexer.js'

export const CACHES_DIR = FIXTURE_CACHES

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
      files.push({
        name: `${cache}/${file}`,
        hashPart: file.slice(0, 32),
        text: readFileSync(join(CACHES_DIR, cache, file), 'utf8'),
      })
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
  const raw = JSON.parse(readFileSync(join(CACHES_DIR, 'manifest.json'), 'utf8')) as Record<
    string,
    { entries: Record<string, ManifestEntry> }
  >
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

/** Narinfos written and signed by Nix 2.8 with the key `DOC_KEY` (nix-formats.md §3.4, §4.1). */
export const DOC_NARINFO_REFS = `StorePath: /nix/store/wi32l2ngn8irgnjb81408mpn1n6nncy1-refs
URL: nar/04fm0jkdmn1q8ajhm7vwc5zdhyvmz92s9yq96jnrgd3yzzxfy3k0.nar.xz
Compression: xz
FileHash: sha256:04fm0jkdmn1q8ajhm7vwc5zdhyvmz92s9yq96jnrgd3yzzxfy3k0
FileSize: 176
NarHash: sha256:1plynzzh6y7vnyy398z8b19c8whilf1v42n0v595kl91jbhxsb55
NarSize: 168
References: 925f1jb1ajrypjbyq7rylwryqwizvhp0-hello.txt
Deriver: rlfa6317hin1kav2x1xb6whybwg8677j-refs.drv
Sig: test-cache-1:QKoLcFUQal6lVkmX3vgs9vNVukbL7ldwByo5neSIkvzY/9I1RtHNBJ0rN6O0kBz3UvmjMg0qPBA3X9F2Dod+BQ==
`
export const DOC_NARINFO_HELLO = `StorePath: /nix/store/925f1jb1ajrypjbyq7rylwryqwizvhp0-hello.txt
URL: nar/0j8j7y47sqsa9skhy7zr2yqxnwk3vf92l0wmn1j3f0gk2ax4vsvg.nar.xz
Compression: xz
NarHash: sha256:0h40zg6hakjv951nyhdad7mv9za56m3za5gnpiw5s1hbwcxzdrq3
NarSize: 128
References: 
Sig: test-cache-1:F4ixDq6uUE0YBWLJwkI6W3DbFSfsCKkxR7+8ZMjneisehOyakrsLRqWDLXBb70Tsyr7jGgWLZv8ZodEtjZrMCQ==
CA: fixed:r:sha256:0h40zg6hakjv951nyhdad7mv9za56m3za5gnpiw5s1hbwcxzdrq3
`
export const DOC_KEY = 'test-cache-1:oIrzGFlHoLyk2IdOBAO/WHZfxNuKsFwxOjl+cCKZzJ8='

/** The tree of nix-formats.md §2.2: its `.ls` as Nix 2.8 wrote it, and the entries NarIndexer gives for it. */
export const TREE_LS =
  '{"version":1,"root":{"type":"directory","entries":{"hello.txt":{"type":"regular","size":12,"narOffset":240},"link":{"type":"symlink","target":"hello.txt"},"run.sh":{"type":"regular","size":18,"executable":true,"narOffset":672},"sub":{"type":"directory","entries":{"B":{"type":"regular","size":1,"narOffset":1016},"a":{"type":"regular","size":1,"narOffset":1208}}}}}}'

export const TREE_ENTRIES: readonly NarEntry[] = [
  { type: 'directory', path: '' },
  { type: 'regular', path: 'hello.txt', size: 12, executable: false, narOffset: 240 },
  { type: 'symlink', path: 'link', target: 'hello.txt' },
  { type: 'regular', path: 'run.sh', size: 18, executable: true, narOffset: 672 },
  { type: 'directory', path: 'sub' },
  { type: 'regular', path: 'sub/B', size: 1, executable: false, narOffset: 1016 },
  { type: 'regular', path: 'sub/a', size: 1, executable: false, narOffset: 1208 },
]
