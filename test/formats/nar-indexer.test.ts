/** Tests for src/formats/nar-indexer.ts, on Nix-made fixture NARs and hand-built hostile ones. */
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { describe, it } from 'node:test'
import { formatListing, listingFromEntries, parseListing, ListingError } from '../../src/formats/listing.js'
import {
  MAX_NAME_BYTES,
  MAX_NAR_DEPTH,
  MAX_PATH_BYTES,
  MAX_TARGET_BYTES,
  NarFormatError,
  NarIndexer,
} from '../../src/formats/nar-indexer.js'
import type { NarEntry } from '../../src/formats/nar-indexer.js'
import { buildNar, bytes, concat, directory, regular, str, symlink, tokens, u64 } from './nar-builder.js'
import type { NarTree } from './nar-builder.js'
import { TREE_ENTRIES, TREE_LS, uncompressedNars } from './fixtures.js'

function* chunked(data: Uint8Array, size: number): Generator<Uint8Array> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size)
}

function indexAll(chunks: Iterable<Uint8Array>): NarEntry[] {
  const indexer = new NarIndexer()
  const entries: NarEntry[] = []
  for (const chunk of chunks) entries.push(...indexer.push(chunk))
  indexer.end()
  assert.equal(indexer.done, true)
  return entries
}

/**
 * Indexes `nar` the way a reader of a file does (nar-file-follower.ts): `readSize` bytes at a time,
 * skipping file contents instead of reading them. Returns the entries and the bytes actually read.
 */
function indexSkipping(nar: Uint8Array, readSize: number): { entries: NarEntry[]; read: number } {
  const indexer = new NarIndexer()
  const entries: NarEntry[] = []
  let read = 0
  while (indexer.position < nar.length) {
    const ahead = indexer.contentsAhead
    if (ahead > 0) {
      indexer.skip(ahead)
      continue
    }
    const chunk = nar.subarray(indexer.position, indexer.position + readSize)
    read += chunk.length
    entries.push(...indexer.push(chunk))
  }
  indexer.end()
  return { entries, read }
}

/** Pushes the chunks, then ends; returns the NarFormatError that must come out. */
function failure(chunks: Iterable<Uint8Array>): NarFormatError {
  const indexer = new NarIndexer()
  try {
    for (const chunk of chunks) indexer.push(chunk)
    indexer.end()
  } catch (error) {
    assert.ok(error instanceof NarFormatError, `expected a NarFormatError, got ${String(error)}`)
    return error
  }
  assert.fail('the archive was accepted')
}

/** Offset of the first occurrence of the concatenated parts. */
function find(haystack: Uint8Array, ...parts: Uint8Array[]): number {
  const at = Buffer.from(haystack).indexOf(Buffer.from(concat(parts)))
  assert.ok(at >= 0, 'marker not found')
  return at
}

/** Offset of the name token of the entry called `name`. */
function nameOffset(nar: Uint8Array, name: string | Uint8Array): number {
  return find(nar, tokens('name'), str(name)) + 16
}

const file = regular('x')

/** 'Hello World!' in a file: the 128-byte NAR of nix-formats.md §1.4. */
const HELLO = buildNar(regular('Hello World!'))

/** The test tree of nix-formats.md §1.4 and §2.2, whose offsets Nix 2.8 reported. */
const TREE = buildNar(
  directory({
    'hello.txt': regular('Hello World!'),
    link: symlink('hello.txt'),
    'run.sh': regular('#!/bin/sh\necho hi\n', true),
    sub: directory({ a: regular('a'), B: regular('B') }),
  }),
)

/** `depth` directories named by 255 `n`s, around `leaf`. */
function longNested(depth: number, leaf: NarTree): NarTree {
  let tree = leaf
  for (let i = 0; i < depth; i++) tree = directory({ ['n'.repeat(MAX_NAME_BYTES)]: tree })
  return tree
}

function nested(depth: number, leaf: NarTree = file): NarTree {
  let tree = leaf
  for (let i = 0; i < depth; i++) tree = directory({ d: tree })
  return tree
}

describe('NarIndexer', () => {
  it('indexes the hello NAR exactly as Nix 2.8 wrote it', () => {
    assert.equal(HELLO.length, 128)
    assert.equal(
      createHash('sha256').update(HELLO).digest('hex'),
      '03e7f63be30b065d78bcf615f5473545fdb4eb69aa416f43495b4e05cdfb8040',
    )
    assert.deepEqual(indexAll([HELLO]), [{ type: 'regular', path: '', size: 12, executable: false, narOffset: 96 }])
  })

  it('gives the offsets Nix 2.8 listed for the test tree', () => {
    assert.equal(TREE.length, 1296)
    const entries = indexAll([TREE])
    assert.deepEqual(entries, TREE_ENTRIES)
    assert.equal(formatListing(listingFromEntries(entries)), TREE_LS)
  })

  it('indexes every fixture NAR into the listing Nix wrote for it', () => {
    const nars = uncompressedNars()
    assert.equal(nars.length, 5)
    for (const { storePath, nar, listingText } of nars) {
      const indexer = new NarIndexer()
      const entries: NarEntry[] = []
      for (const chunk of chunked(nar, 64 * 1024)) entries.push(...indexer.push(chunk))
      indexer.end()
      assert.equal(indexer.position, nar.length, storePath)
      const listing = listingFromEntries(entries)
      assert.deepEqual(listing, parseListing(listingText), storePath)
      assert.equal(formatListing(listing), listingText, storePath)
    }
  })

  it('yields the same entries however a small NAR is split', () => {
    const small = [
      TREE,
      ...uncompressedNars()
        .filter(({ nar }) => nar.length < 1000)
        .map(({ nar }) => new Uint8Array(nar)),
    ]
    assert.equal(small.length, 3)
    for (const nar of small) {
      const expected = indexAll([nar])
      for (let cut = 0; cut <= nar.length; cut++) {
        assert.deepEqual(indexAll([nar.subarray(0, cut), nar.subarray(cut)]), expected, `cut at ${cut}`)
      }
      assert.deepEqual(indexAll(chunked(nar, 1)), expected, '1-byte chunks')
    }
  })

  it('yields the same entries for fixture NARs pushed byte by byte or in odd sizes', () => {
    for (const { storePath, nar } of uncompressedNars()) {
      const expected = indexAll([nar])
      if (nar.length < 1_000_000) assert.deepEqual(indexAll(chunked(nar, 1)), expected, `${storePath}, 1-byte chunks`)
      for (const size of [7, 4093, 65_536 + 3])
        assert.deepEqual(indexAll(chunked(nar, size)), expected, `${storePath}, ${size}-byte chunks`)
    }
  })

  it('yields the same entries when file contents are skipped instead of pushed', () => {
    for (const { storePath, nar } of uncompressedNars()) {
      const expected = indexAll([nar])
      for (const size of [1, 13, 4096]) {
        const { entries, read } = indexSkipping(nar, size)
        assert.deepEqual(entries, expected, `${storePath}, ${size}-byte reads`)
        const contents = expected.reduce((sum, e) => sum + (e.type === 'regular' ? e.size : 0), 0)
        if (size === 1)
          assert.equal(read, nar.length - contents, `${storePath}: every contents byte skipped, every other byte read`)
      }
    }
  })

  it('tells how much contents is ahead, refuses to skip anything else, and still checks the padding after it', () => {
    const indexer = new NarIndexer()
    assert.equal(indexer.contentsAhead, 0, 'nothing before the header')
    assert.throws(() => indexer.skip(1), RangeError)
    // HELLO: the contents 'Hello World!' (12 bytes) start at 96, then 4 bytes of padding.
    indexer.push(HELLO.subarray(0, 96))
    assert.equal(indexer.contentsAhead, 12)
    assert.throws(() => indexer.skip(13), RangeError, 'past the contents')
    indexer.skip(5)
    assert.equal(indexer.contentsAhead, 7)
    assert.equal(indexer.position, 101)
    indexer.skip(7)
    assert.equal(indexer.contentsAhead, 0, 'padding is read, not skipped')
    const badPadding = HELLO.slice(108, 112)
    badPadding[1] = 7
    assert.throws(
      () => indexer.push(badPadding),
      (error: unknown) =>
        error instanceof NarFormatError && error.offset === 109 && /non-zero padding byte 0x07/.test(error.message),
    )
    assert.equal(indexer.contentsAhead, 0, 'a failed indexer has nothing ahead')
    assert.throws(() => indexer.skip(0), NarFormatError, 'and keeps failing')
  })

  it('returns a regular entry before its contents are pushed', () => {
    const indexer = new NarIndexer()
    const helloOffset = 240
    // Everything up to, not including, the last byte of the size word of hello.txt.
    assert.deepEqual(indexer.push(TREE.subarray(0, helloOffset - 1)), [{ type: 'directory', path: '' }])
    assert.deepEqual(indexer.push(TREE.subarray(helloOffset - 1, helloOffset)), [
      { type: 'regular', path: 'hello.txt', size: 12, executable: false, narOffset: helloOffset },
    ])
    assert.equal(indexer.position, helloOffset)
    assert.deepEqual(indexer.push(TREE.subarray(helloOffset, helloOffset + 12)), [])
    assert.equal(indexAll([TREE]).length, 7)

    // The same for a 3 MB file of a fixture: its entry comes with the first 1232 bytes.
    const basic = uncompressedNars().find(({ storePath }) => storePath.endsWith('-fixture-basic-1'))!
    const entries = new NarIndexer().push(basic.nar.subarray(0, 1232))
    assert.deepEqual(entries.at(-1), {
      type: 'regular',
      path: 'lib/blob.bin',
      size: 3_000_000,
      executable: false,
      narOffset: 1232,
    })
  })

  it('skips contents larger than 4 GiB by counting, without holding them', () => {
    const size = 5 * 2 ** 30
    const indexer = new NarIndexer()
    const header = concat([tokens('nix-archive-1', '(', 'type', 'regular', 'contents'), u64(size)])
    assert.deepEqual(indexer.push(header), [{ type: 'regular', path: '', size, executable: false, narOffset: 96 }])
    // The same 64 MiB of zeros 80 times: the indexer must neither copy nor keep them.
    const zeros = new Uint8Array(64 * 2 ** 20)
    for (let i = 0; i < 80; i++) assert.deepEqual(indexer.push(zeros), [])
    assert.equal(indexer.done, false)
    assert.deepEqual(indexer.push(tokens(')')), [])
    assert.equal(indexer.done, true)
    assert.equal(indexer.position, 96 + size + 16)
    indexer.end()
  })

  it('reports position and done as bytes arrive', () => {
    const indexer = new NarIndexer()
    assert.equal(indexer.position, 0)
    indexer.push(HELLO.subarray(0, 127))
    assert.equal(indexer.position, 127)
    assert.equal(indexer.done, false)
    indexer.push(HELLO.subarray(127))
    assert.equal(indexer.done, true)
    assert.deepEqual(indexer.push(new Uint8Array(0)), [])
    indexer.end()
    indexer.end()
    assert.throws(() => indexer.push(HELLO), /after end/)
  })

  it('accepts unusual but valid archives', () => {
    const astral = '\u{1F600}' // F0 9F 98 80
    const fullwidth = '\uFF5A' // EF BD 9A: first in byte order, second in JS string order
    const cases: [tree: NarTree, expected: NarEntry[], why: string][] = [
      [directory({}), [{ type: 'directory', path: '' }], 'an empty directory as the root'],
      [symlink('/nix/store/foo'), [{ type: 'symlink', path: '', target: '/nix/store/foo' }], 'a symlink as the root'],
      [regular(''), [{ type: 'regular', path: '', size: 0, executable: false, narOffset: 96 }], 'an empty file'],
      [
        regular('abc', true),
        [{ type: 'regular', path: '', size: 3, executable: true, narOffset: 128 }],
        'an executable',
      ],
      [
        {
          type: 'directory',
          entries: [
            [fullwidth, file],
            [astral, file],
          ],
        },
        [
          { type: 'directory', path: '' },
          { type: 'regular', path: fullwidth, size: 1, executable: false, narOffset: 232 },
          { type: 'regular', path: astral, size: 1, executable: false, narOffset: 424 },
        ],
        'byte order, not UTF-16 order',
      ],
      [
        directory({ A: file, a: file }),
        [
          { type: 'directory', path: '' },
          { type: 'regular', path: 'A', size: 1, executable: false, narOffset: 232 },
          { type: 'regular', path: 'a', size: 1, executable: false, narOffset: 424 },
        ],
        'names that differ only in case',
      ],
      [
        directory({ '\uFEFFbom': symlink('\uFEFFt') }),
        [
          { type: 'directory', path: '' },
          { type: 'symlink', path: '\uFEFFbom', target: '\uFEFFt' },
        ],
        'a leading byte order mark is kept',
      ],
    ]
    for (const [tree, expected, why] of cases) assert.deepEqual(indexAll([buildNar(tree)]), expected, why)

    const longName = 'n'.repeat(MAX_NAME_BYTES)
    assert.equal(indexAll([buildNar(directory({ [longName]: file }))])[1]?.path, longName, 'a name of 255 bytes')
    const longTarget = 't'.repeat(MAX_TARGET_BYTES)
    assert.deepEqual(
      indexAll([buildNar(symlink(longTarget))]),
      [{ type: 'symlink', path: '', target: longTarget }],
      'a target of 4095 bytes',
    )
    // 16 names of 255 bytes and their 15 slashes: a path of exactly 4095 bytes.
    const longPath = indexAll([buildNar(longNested(16, file))])
    assert.equal(Buffer.byteLength(longPath.at(-1)!.path), MAX_PATH_BYTES, 'a path of 4095 bytes')
    const deepest = indexAll([buildNar(nested(MAX_NAR_DEPTH - 1))])
    assert.equal(deepest.at(-1)?.path, `${'d/'.repeat(MAX_NAR_DEPTH - 1)}`.slice(0, -1), 'a node at depth 63')
  })

  it('accepts names that are not UTF-8, which the listing then refuses to merge', () => {
    const nar = buildNar({
      type: 'directory',
      entries: [
        [Uint8Array.of(0xfe), file],
        [Uint8Array.of(0xff), file],
      ],
    })
    const entries = indexAll([nar])
    assert.deepEqual(
      entries.map((entry) => entry.path),
      ['', '\uFFFD', '\uFFFD'],
    )
    assert.throws(() => listingFromEntries(entries), ListingError)
  })

  it('rejects every proper prefix of an archive when it ends', () => {
    for (let length = 0; length < TREE.length; length++) {
      const indexer = new NarIndexer()
      indexer.push(TREE.subarray(0, length))
      assert.equal(indexer.done, false)
      assert.throws(
        () => indexer.end(),
        (error: unknown) =>
          error instanceof NarFormatError && /ends early/.test(error.message) && error.offset === length,
        `truncated to ${length} bytes`,
      )
    }
    const inContents = failure([HELLO.subarray(0, 100)])
    assert.match(inContents.message, /8 bytes short in the contents of the root/)
  })

  it('rejects hostile and malformed archives, at the offending offset', () => {
    const withByte = (nar: Uint8Array, at: number, value: number) => {
      const copy = nar.slice()
      copy[at] = value
      return copy
    }
    const helloWithSize = (size: bigint) => concat([HELLO.subarray(0, 88), u64(size), HELLO.subarray(96)])
    const rawRegular = (...fields: (string | Uint8Array)[]) =>
      tokens('nix-archive-1', '(', 'type', 'regular', ...fields, ')')
    const inDirectory = (...entries: [string | Uint8Array, NarTree][]) => buildNar({ type: 'directory', entries })

    const cases: [why: string, nar: Uint8Array, pattern: RegExp, at: number | ((nar: Uint8Array) => number)][] = [
      ['bad magic', buildNar(file).fill(0x32, 20, 21), /doesn't look like a Nix archive/, 0],
      [
        'a magic of the wrong length',
        concat([str('nix-archive-10'), buildNar(file).subarray(24)]),
        /doesn't look like a Nix archive/,
        0,
      ],
      ['not a NAR at all', bytes('{"version":1,"root":{}}'), /doesn't look like a Nix archive/, 0],
      ['non-zero padding after the magic', withByte(HELLO, 23, 1), /non-zero padding byte 0x01/, 23],
      ['non-zero padding after contents', withByte(HELLO, 108, 0x80), /non-zero padding byte 0x80/, 108],
      [
        'unsorted entries',
        inDirectory(['b', file], ['a', file]),
        /unsorted entry name "a" after "b"/,
        (nar) => nameOffset(nar, 'a'),
      ],
      ['uppercase after lowercase', inDirectory(['a', file], ['B', file]), /unsorted/, (nar) => nameOffset(nar, 'B')],
      [
        'astral before BMP: UTF-16 order, not byte order',
        inDirectory(['\u{1F600}', file], ['\uFF5A', file]),
        /unsorted/,
        (nar) => nameOffset(nar, '\uFF5A'),
      ],
      [
        'duplicate entries',
        inDirectory(['a', file], ['a', regular('y')]),
        /duplicate entry name "a"/,
        (nar) => Buffer.from(nar).lastIndexOf(Buffer.from(concat([tokens('name'), str('a')]))) + 16,
      ],
      ["'..' as a name", inDirectory(['..', file]), /invalid entry name "\.\."/, (nar) => nameOffset(nar, '..')],
      ["'.' as a name", inDirectory(['.', file]), /invalid entry name "\."/, (nar) => nameOffset(nar, '.')],
      ["'/' in a name", inDirectory(['a/b', file]), /invalid entry name "a\/b"/, (nar) => nameOffset(nar, 'a/b')],
      [
        'NUL in a name',
        inDirectory(['a\0b', file]),
        /invalid entry name "a\\u0000b"/,
        (nar) => nameOffset(nar, 'a\0b'),
      ],
      ['an empty name', inDirectory(['', file]), /invalid entry name ""/, (nar) => nameOffset(nar, '')],
      [
        'a name of 256 bytes',
        inDirectory(['n'.repeat(256), file]),
        /string of 256 bytes \(limit 255\)/,
        (nar) => nameOffset(nar, 'n'.repeat(256)),
      ],
      [
        'a name length of 2^62',
        concat([tokens('nix-archive-1', '(', 'type', 'directory', 'entry', '(', 'name'), u64(2n ** 62n)]),
        /string of 4611686018427387904 bytes/,
        128,
      ],
      [
        'depth 64',
        buildNar(nested(MAX_NAR_DEPTH)),
        /maximum depth of 64/,
        (nar) => find(nar, tokens('d', 'node', '(', 'type', 'regular')) + 16,
      ],
      [
        'depth 70',
        buildNar(nested(70)),
        /maximum depth of 64 at "d\/d\/d/,
        (nar) => nestedNodeOffset(nar, MAX_NAR_DEPTH),
      ],
      [
        'a path of 4097 bytes',
        buildNar(longNested(16, directory({ x: file }))),
        /path "n{200}…" is longer than 4095 bytes/,
        (nar) => find(nar, tokens('x', 'node')) + 16,
      ],
      ['a size of 2^63', helloWithSize(2n ** 63n), /file size 9223372036854775808 of the root is too large/, 88],
      ['a size of 2^53', helloWithSize(2n ** 53n), /too large/, 88],
      ['a size of 2^64-1', helloWithSize(2n ** 64n - 1n), /18446744073709551615/, 88],
      ['one byte of trailing data', concat([HELLO, Uint8Array.of(0)]), /trailing data/, 128],
      ['a second archive after the first', concat([HELLO, HELLO]), /trailing data/, 128],
      [
        'executable after contents',
        rawRegular('contents', 'x', 'executable', ''),
        /expected tag '\)', got "executable"/,
        104,
      ],
      [
        'executable twice',
        rawRegular('executable', '', 'executable', '', 'contents', 'x'),
        /expected tag 'contents', got "executable"/,
        104,
      ],
      [
        'a non-empty executable marker',
        rawRegular('executable', '1', 'contents', 'x'),
        /executable marker, got a string of 1 bytes/,
        96,
      ],
      ['no contents', rawRegular(), /expected tag 'executable' or 'contents', got "\)"/, 72],
      ['an empty symlink target', buildNar(symlink('')), /invalid symlink target ""/, 88],
      ['NUL in a symlink target', buildNar(symlink('a\0b')), /invalid symlink target/, 88],
      [
        'a symlink target of 4096 bytes',
        buildNar(symlink('t'.repeat(4096))),
        /string of 4096 bytes \(limit 4095\)/,
        88,
      ],
      [
        'a tag of 33 bytes',
        tokens('nix-archive-1', '(', 'type', 'r'.repeat(33)),
        /expected a file type, got a string of 33 bytes \(limit 32\)/,
        56,
      ],
      [
        'a tag length with high bits set',
        concat([tokens('nix-archive-1', '('), u64(2n ** 32n + 4n), bytes('type')]),
        /limit 32/,
        40,
      ],
      [
        'an unknown file type',
        tokens('nix-archive-1', '(', 'type', 'fifo', ')'),
        /unknown file type "fifo" for the root/,
        56,
      ],
      ['no opening parenthesis', tokens('nix-archive-1', 'type', 'regular'), /expected tag '\(', got "type"/, 24],
      ['no type tag', tokens('nix-archive-1', '(', 'regular'), /expected tag 'type', got "regular"/, 40],
      [
        'symlink without target tag',
        tokens('nix-archive-1', '(', 'type', 'symlink', 'x', ')'),
        /expected tag 'target', got "x"/,
        72,
      ],
      [
        'garbage instead of an entry',
        tokens('nix-archive-1', '(', 'type', 'directory', 'entri'),
        /expected tag 'entry' or '\)', got "entri"/,
        80,
      ],
      [
        'an entry without its closing parenthesis',
        concat([
          tokens('nix-archive-1', '(', 'type', 'directory', 'entry', '(', 'name', 'a', 'node'),
          buildNar(file).subarray(24),
          tokens('entry'),
        ]),
        /expected tag '\)', got "entry"/,
        (nar) => nar.length - 16,
      ],
      [
        'a node tag spelled wrong',
        tokens('nix-archive-1', '(', 'type', 'directory', 'entry', '(', 'name', 'a', 'nodes'),
        /expected tag 'node', got "nodes"/,
        144,
      ],
    ]

    for (const [why, nar, pattern, at] of cases) {
      const offset = typeof at === 'number' ? at : at(nar)
      const whole = failure([nar])
      assert.match(whole.message, pattern, why)
      assert.equal(whole.offset, offset, `${why}: offset`)
      assert.ok(whole.message.includes(`at byte offset ${offset}`), `${why}: message names the offset`)
      const byteByByte = failure(chunked(nar, 1))
      assert.equal(byteByByte.message, whole.message, `${why}: 1-byte chunks`)
    }
  })

  it('keeps throwing the first error', () => {
    const indexer = new NarIndexer()
    const bad = concat([HELLO, Uint8Array.of(1)])
    let first: unknown
    try {
      indexer.push(bad)
    } catch (error) {
      first = error
    }
    assert.ok(first instanceof NarFormatError)
    assert.throws(
      () => indexer.push(new Uint8Array(0)),
      (error: unknown) => error === first,
    )
    assert.throws(
      () => indexer.push(HELLO),
      (error: unknown) => error === first,
    )
    assert.throws(
      () => indexer.end(),
      (error: unknown) => error === first,
    )
  })
})

/** Offset of the 'node' tag that opens the node at `depth` in a `nested()` tree. */
function nestedNodeOffset(nar: Uint8Array, depth: number): number {
  const marker = Buffer.from(concat([tokens('entry', '(', 'name', 'd'), str('node')]))
  let at = -1
  for (let i = 0; i < depth; i++) at = Buffer.from(nar).indexOf(marker, at + 1)
  return at + 64
}
