/** Tests for src/formats/listing.ts. */
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { describe, it } from 'node:test'
import {
  listingMemoryBytes,
  ListingError,
  checkListingFits,
  formatListing,
  hasAllOffsets,
  listingFromEntries,
  locate,
  maxListingBytes,
  parseListing,
} from '../../src/formats/listing.js'
import type { ListingNode } from '../../src/formats/listing.js'
import type { NarEntry } from '../../src/formats/nar-indexer.js'
import { fixtureFiles, readManifest, TREE_ENTRIES, TREE_LS, uncompressedNars } from './fixtures.js'

/** Every node below the root as (relative path, node), depth first in Map order. */
function* walk(node: ListingNode, prefix = ''): Generator<[string, ListingNode]> {
  if (node.type !== 'directory') return
  for (const [name, child] of node.entries) {
    const path = prefix === '' ? name : `${prefix}/${name}`
    yield [path, child]
    yield* walk(child, path)
  }
}

/** Re-serialises JSON with keys sorted at every level, as Nix ≥ 2.12 (nlohmann) writes `.ls`. */
function sortKeys(value: unknown): unknown {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return value
  const out: Record<string, unknown> = {}
  for (const key of Object.keys(value).sort())
    Object.defineProperty(out, key, { value: sortKeys((value as Record<string, unknown>)[key]), enumerable: true })
  return out
}

/** Drops every narOffset, as harmonia and the new Hydra uploader do. */
function withoutOffsets(text: string): string {
  return text.replace(/,"narOffset":\d+/g, '')
}

describe('parseListing', () => {
  it('parses every fixture listing and prints it back byte for byte', () => {
    const files = fixtureFiles('ls')
    assert.equal(files.length, 30) // 6 caches × 5 paths; no-listing has none
    for (const { name, text } of files) {
      const listing = parseListing(text)
      assert.equal(listing.version, 1)
      assert.equal(listing.root.type, 'directory', name)
      assert.equal(hasAllOffsets(listing.root), true, name)
      assert.equal(formatListing(listing), text, name)
    }
  })

  it('matches the manifest recorded when the fixtures were made', () => {
    const manifest = readManifest()
    for (const { name, hashPart, text } of fixtureFiles('ls')) {
      const storePath = [...manifest.keys()].find((path) => path.startsWith(`/nix/store/${hashPart}-`))
      assert.ok(storePath !== undefined, name)
      const expected = manifest.get(storePath)!
      const seen = new Set<string>()
      for (const [path, node] of walk(parseListing(text).root)) {
        seen.add(path)
        const entry = expected.get(path)
        assert.ok(entry !== undefined, `${name}: ${path} is not in the manifest`)
        assert.equal(node.type, entry.type, `${name}: ${path}`)
        if (node.type === 'regular') {
          assert.equal(node.size, entry.size, `${name}: ${path}`)
          assert.equal(node.executable, entry.executable, `${name}: ${path}`)
        }
        if (node.type === 'symlink') assert.equal(node.target, entry.target, `${name}: ${path}`)
      }
      assert.deepEqual([...seen].sort(), [...expected.keys()].sort(), name)
    }
  })

  it('gives offsets that point at each file in the uncompressed NAR', () => {
    const manifest = readManifest()
    let files = 0
    for (const { storePath, nar, listingText } of uncompressedNars()) {
      const expected = manifest.get(storePath)!
      for (const [path, node] of walk(parseListing(listingText).root)) {
        if (node.type !== 'regular') continue
        assert.ok(node.narOffset !== undefined)
        const contents = nar.subarray(node.narOffset, node.narOffset + node.size)
        assert.equal(contents.length, node.size, `${storePath}/${path}`)
        assert.equal(
          createHash('sha256').update(contents).digest('hex'),
          expected.get(path)?.sha256,
          `${storePath}/${path}`,
        )
        // The 8 bytes before the contents are its little-endian size word.
        assert.equal(nar.readBigUInt64LE(node.narOffset - 8), BigInt(node.size))
        files++
      }
    }
    assert.ok(files > 1500)
  })

  it('reads the sorted-key style of newer Nix the same way', () => {
    for (const { name, text } of fixtureFiles('ls').filter((f) => f.name.startsWith('none/'))) {
      const sorted = JSON.stringify(sortKeys(JSON.parse(text)))
      assert.ok(sorted.startsWith('{"root":{"entries":'), name)
      assert.ok(sorted.endsWith(',"version":1}'), name)
      const listing = parseListing(sorted)
      assert.deepEqual(listing, parseListing(text), name)
      assert.equal(formatListing(listing), text, name)
    }
  })

  it('puts entries in UTF-8 byte order whatever the JSON order', () => {
    // 'B' (0x42) < 'a' (0x61); U+FF5A (EF BD 9A) < U+1F600 (F0 9F 98 80), though JS sorts the astral one first.
    const text =
      '{"version":1,"root":{"type":"directory","entries":{"😀":{"type":"symlink","target":"x"},"a":{"type":"symlink","target":"x"},"ｚ":{"type":"symlink","target":"x"},"B":{"type":"symlink","target":"x"}}}}'
    const root = parseListing(text).root
    assert.equal(root.type, 'directory')
    assert.deepEqual([...root.entries.keys()], ['B', 'a', 'ｚ', '😀'])
    assert.deepEqual(['ｚ', '😀'].sort(), ['😀', 'ｚ'])
  })

  it('puts names without astral characters in byte order too: integer-like names, which Object.keys puts first, and unsorted JSON', () => {
    const dir = (names: string[]) =>
      `{"version":1,"root":{"type":"directory","entries":{${names.map((n) => `${JSON.stringify(n)}:{"type":"symlink","target":"x"}`).join(',')}}}}`
    const keysOf = (names: string[]) => {
      const root = parseListing(dir(names)).root
      assert.equal(root.type, 'directory')
      return [...root.entries.keys()]
    }
    // Object.keys gives ['2', '10', 'a'] for this; byte order has '10' first ('1' < '2').
    assert.deepEqual(keysOf(['a', '10', '2']), ['10', '2', 'a'])
    // 'é' (C3 A9) and U+4E2D (E4 B8 AD) after 'z'; already sorted JSON is kept as is.
    assert.deepEqual(keysOf(['é', 'z', '中', 'A']), ['A', 'z', 'é', '中'])
    assert.deepEqual(keysOf(['A', 'z', 'é', '中']), ['A', 'z', 'é', '中'])
    // U+FFFD (EF BF BD) after U+E000 (EE 80 80), both above the surrogates in UTF-16 too.
    assert.deepEqual(keysOf(['\uFFFD', '\uE000']), ['\uE000', '\uFFFD'])
  })

  it('accepts a listing without narOffset, which hasAllOffsets reports', () => {
    const listing = parseListing(withoutOffsets(TREE_LS))
    assert.equal(hasAllOffsets(listing.root), false)
    assert.deepEqual(locate(listing.root, ['run.sh']), { type: 'regular', size: 18, executable: true })
    assert.equal(formatListing(listing), withoutOffsets(TREE_LS))
    // One missing offset is enough.
    assert.equal(hasAllOffsets(parseListing(TREE_LS.replace(',"narOffset":1208', '')).root), false)
    assert.equal(hasAllOffsets(parseListing(TREE_LS).root), true)
  })

  it('defaults executable to false and accepts it written as false, as Nix 2.35 does', () => {
    const implicit = parseListing('{"version":1,"root":{"type":"regular","size":12,"narOffset":96}}')
    const explicit = parseListing('{"root":{"executable":false,"narOffset":96,"size":12,"type":"regular"},"version":1}')
    assert.deepEqual(implicit, { version: 1, root: { type: 'regular', size: 12, executable: false, narOffset: 96 } })
    assert.deepEqual(explicit, implicit)
    assert.equal(formatListing(explicit), '{"version":1,"root":{"type":"regular","size":12,"narOffset":96}}')
  })

  it('keeps names like __proto__ and constructor as ordinary entries', () => {
    const text =
      '{"version":1,"root":{"type":"directory","entries":{"__proto__":{"type":"symlink","target":"p"},"constructor":{"type":"regular","size":1},"toString":{"type":"directory","entries":{}}}}}'
    const listing = parseListing(text)
    assert.deepEqual(locate(listing.root, ['__proto__']), { type: 'symlink', target: 'p' })
    assert.deepEqual(locate(listing.root, ['constructor']), { type: 'regular', size: 1, executable: false })
    assert.equal(locate(listing.root, ['hasOwnProperty']), undefined)
    assert.equal(formatListing(listing), text)
    assert.equal(({} as Record<string, unknown>)['type'], undefined, 'Object.prototype was not polluted')
  })

  it('rejects malformed listings', () => {
    const regular = '{"type":"regular","size":1}'
    const inDir = (name: string, node = regular) =>
      `{"version":1,"root":{"type":"directory","entries":{${JSON.stringify(name)}:${node}}}}`
    const asRoot = (node: string) => `{"version":1,"root":${node}}`
    let deep = regular
    for (let i = 0; i < 64; i++) deep = `{"type":"directory","entries":{"d":${deep}}}`
    const cases: [text: string, pattern: RegExp, why: string][] = [
      ['{"version":1,', /not JSON/, 'truncated JSON'],
      ['[1]', /JSON object/, 'an array'],
      ['null', /JSON object/, 'null'],
      [`{"root":${regular}}`, /version/, 'version missing'],
      [`{"version":2,"root":${regular}}`, /version 2/, 'version 2'],
      [`{"version":"1","root":${regular}}`, /version "1"/, 'version as a string'],
      ['{"version":1}', /missing "root"/, 'root missing'],
      [asRoot('[]'), /node object/, 'a node that is an array'],
      [asRoot('{"type":"fifo"}'), /unknown node type "fifo"/, 'unknown node type'],
      [asRoot('{"size":1}'), /unknown node type/, 'no type'],
      [asRoot('{"type":"regular"}'), /"size"/, 'regular without size'],
      [asRoot('{"type":"regular","size":-1}'), /"size"/, 'negative size'],
      [asRoot('{"type":"regular","size":1.5}'), /"size"/, 'fractional size'],
      [asRoot('{"type":"regular","size":"12"}'), /"size"/, 'size as a string'],
      [asRoot('{"type":"regular","size":9007199254740992}'), /"size"/, 'size beyond 2^53-1'],
      [asRoot('{"type":"regular","size":1,"executable":"yes"}'), /"executable"/, 'executable not a boolean'],
      [asRoot('{"type":"regular","size":1,"narOffset":-8}'), /"narOffset"/, 'negative narOffset'],
      [asRoot('{"type":"regular","size":1,"narOffset":null}'), /"narOffset"/, 'null narOffset'],
      [asRoot('{"type":"symlink"}'), /"target"/, 'symlink without target'],
      [asRoot('{"type":"symlink","target":""}'), /"target"/, 'empty symlink target'],
      [asRoot('{"type":"symlink","target":"a\\u0000b"}'), /"target"/, 'NUL in the target'],
      [asRoot('{"type":"directory"}'), /"entries"/, 'directory without entries'],
      [asRoot('{"type":"directory","entries":[]}'), /"entries"/, 'entries as an array'],
      [inDir(''), /invalid entry name ""/, 'empty name'],
      [inDir('.'), /invalid entry name/, "'.'"],
      [inDir('..'), /invalid entry name/, "'..'"],
      [inDir('a/b'), /invalid entry name/, "'/' in a name"],
      [inDir('a\u0000b'), /invalid entry name/, 'NUL in a name'],
      [inDir('\ud800x'), /not valid Unicode/, 'a lone surrogate has no UTF-8 form'],
      [inDir('a', '{"type":"regular","size":-1}'), /at "a": "size"/, 'errors name the path'],
      [asRoot(deep), /maximum depth/, 'nested deeper than a NAR may be'],
    ]
    for (const [text, pattern, why] of cases) {
      assert.throws(
        () => parseListing(text),
        (error: unknown) => error instanceof ListingError && pattern.test(error.message),
        why,
      )
    }
  })
})

describe('locate', () => {
  const root = parseListing(TREE_LS).root

  it('finds nodes by path segments', () => {
    assert.equal(locate(root, []), root)
    assert.deepEqual(locate(root, ['hello.txt']), { type: 'regular', size: 12, executable: false, narOffset: 240 })
    assert.deepEqual(locate(root, ['sub', 'B']), { type: 'regular', size: 1, executable: false, narOffset: 1016 })
    assert.equal(locate(root, ['sub'])?.type, 'directory')
    assert.deepEqual(locate(root, ['link']), { type: 'symlink', target: 'hello.txt' })
  })

  it('returns undefined for missing paths and does not follow symlinks', () => {
    const cases: [segments: string[], why: string][] = [
      [['missing'], 'no such entry'],
      [['sub', 'b'], 'names are case-sensitive'],
      [['hello.txt', 'x'], 'below a regular file'],
      [['link', 'x'], 'below a symlink, which is not followed'],
      [['sub', '..', 'hello.txt'], "'..' is not an entry"],
      [[''], 'an empty segment'],
      [['__proto__'], 'an inherited property name'],
    ]
    for (const [segments, why] of cases) assert.equal(locate(root, segments), undefined, why)
  })
})

describe('formatListing', () => {
  it('writes the Nix 2.8 example byte for byte', () => {
    assert.equal(formatListing(parseListing(TREE_LS)), TREE_LS)
  })

  it('escapes names and targets as JSON', () => {
    const root: ListingNode = {
      type: 'directory',
      entries: new Map<string, ListingNode>([
        ['quote"back\\slash', { type: 'symlink', target: 'line\nbreak' }],
        ['über café.txt', { type: 'regular', size: 0, executable: false }],
      ]),
    }
    const text = formatListing({ version: 1, root })
    assert.deepEqual(parseListing(text), { version: 1, root })
  })
})

describe('listingFromEntries', () => {
  it('builds the tree the NAR indexer describes', () => {
    const listing = listingFromEntries(TREE_ENTRIES)
    assert.deepEqual(listing, parseListing(TREE_LS))
    assert.equal(formatListing(listing), TREE_LS)
  })

  it('accepts a root that is a file or a symlink', () => {
    assert.deepEqual(listingFromEntries([{ type: 'regular', path: '', size: 12, executable: false, narOffset: 96 }]), {
      version: 1,
      root: { type: 'regular', size: 12, executable: false, narOffset: 96 },
    })
    assert.deepEqual(listingFromEntries([{ type: 'symlink', path: '', target: '/nix/store/foo' }]).root, {
      type: 'symlink',
      target: '/nix/store/foo',
    })
  })

  it('rejects entries that do not form a tree', () => {
    const dir = (path: string): NarEntry => ({ type: 'directory', path })
    const file = (path: string): NarEntry => ({ type: 'regular', path, size: 0, executable: false, narOffset: 96 })
    const cases: [entries: NarEntry[], pattern: RegExp, why: string][] = [
      [[], /no entries/, 'nothing at all'],
      [[file('a')], /before the root/, 'a child before the root'],
      [[dir(''), dir('')], /second root/, 'two roots'],
      [[dir(''), file('a/b')], /parent/, 'a missing parent'],
      [[dir(''), file('a'), file('a/b')], /parent/, 'a file as parent'],
      [[file(''), file('a')], /parent/, 'a child of a file root'],
      [[dir(''), file('a'), file('a')], /duplicate/, 'a duplicate, as two non-UTF-8 names decode to'],
      [[dir(''), file('a//b')], /parent/, 'an empty segment'],
      [[dir(''), file('..')], /invalid entry name/, "'..'"],
    ]
    for (const [entries, pattern, why] of cases) {
      assert.throws(
        () => listingFromEntries(entries),
        (error: unknown) => error instanceof ListingError && pattern.test(error.message),
        why,
      )
    }
  })
})

describe('listings against their NarSize', () => {
  const listing = (file: string) =>
    parseListing(
      `{"version":1,"root":{"type":"directory","entries":{"sub":{"type":"directory","entries":{"f":${file}}}}}}`,
    )

  it('accepts files that fit in the NAR, with or without offsets', () => {
    checkListingFits(listing('{"type":"regular","size":4,"narOffset":96}'), 100)
    checkListingFits(listing('{"type":"regular","size":100}'), 100)
  })

  it('names the file whose offset or size runs past NarSize', () => {
    for (const file of ['{"type":"regular","size":5,"narOffset":96}', '{"type":"regular","size":101}']) {
      assert.throws(
        () => checkListingFits(listing(file), 100),
        (error: unknown) =>
          error instanceof ListingError &&
          error.path === 'sub/f' &&
          /does not fit in the NarSize of 100/.test(error.message),
      )
    }
  })

  it('bounds the listing size by the NAR size, leaving room for any honest listing', () => {
    assert.ok(maxListingBytes(0) >= 64 * 1024)
    assert.ok(maxListingBytes(10 ** 9) >= 8 * 10 ** 9)
  })
})

describe('listingMemoryBytes', () => {
  it('counts every node, name and symlink target, and at least what the parsed listing takes', () => {
    const file = (): ListingNode => ({ type: 'regular', size: 1, executable: false })
    const one = listingMemoryBytes({ version: 1, root: file() })
    const entries = new Map<string, ListingNode>()
    for (let i = 0; i < 1000; i++) entries.set(`file-${i}`, file())
    entries.set('link', { type: 'symlink', target: 'x'.repeat(500) })
    const many = listingMemoryBytes({ version: 1, root: { type: 'directory', entries } })
    assert.ok(one > 0)
    assert.ok(many >= 1002 * one + 2 * 500, `${many}`)
    // ~140 bytes a node in V8 (measured); the estimate must not be below it.
    assert.ok(many >= 1002 * 140, `${many}`)
  })
})
