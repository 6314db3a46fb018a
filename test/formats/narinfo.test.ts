/** Tests for src/formats/narinfo.ts. */
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { describe, it } from 'node:test'
import { formatHashHex, formatHashNix32, parseHash } from '../../src/formats/hash.js'
import { NarInfoError, formatNarInfo, parseNarInfo } from '../../src/formats/narinfo.js'
import type { NarInfo } from '../../src/formats/narinfo.js'
import { DOC_NARINFO_REFS, fixtureFiles, uncompressedNars } from './fixtures.js'

// Written by Nix 2.8 (nix-formats.md §3.4).
const REFS = DOC_NARINFO_REFS

// The smallest narinfo Nix accepts, used as a base for the malformed cases.
const MINIMAL = `StorePath: /nix/store/925f1jb1ajrypjbyq7rylwryqwizvhp0-hello.txt
URL: nar/0j8j7y47sqsa9skhy7zr2yqxnwk3vf92l0wmn1j3f0gk2ax4vsvg.nar.xz
NarHash: sha256:0h40zg6hakjv951nyhdad7mv9za56m3za5gnpiw5s1hbwcxzdrq3
NarSize: 128
`

const HELLO_HEX = '03e7f63be30b065d78bcf615f5473545fdb4eb69aa416f43495b4e05cdfb8040'

function replaceLine(text: string, key: string, line: string | undefined): string {
  const lines = text.split('\n').filter((l) => !l.startsWith(`${key}:`))
  if (line !== undefined) lines.splice(lines.length - 1, 0, line)
  return lines.join('\n')
}

describe('parseNarInfo', () => {
  it('parses every fixture narinfo and prints it back byte for byte', () => {
    const files = fixtureFiles('narinfo')
    assert.equal(files.length, 35)
    for (const { name, hashPart, text } of files) {
      const info = parseNarInfo(text)
      assert.deepEqual(info.quirks, [], name)
      assert.ok(info.storePath.startsWith(`/nix/store/${hashPart}-fixture-`), name)
      assert.equal(formatNarInfo(info), text, name)
      assert.deepEqual(parseNarInfo(formatNarInfo(info)), info, name)
      // unsigned/ is the only cache without signatures.
      assert.equal(info.sigs.length, name.startsWith('unsigned/') ? 0 : 1, name)
    }
  })

  it('agrees across caches and with the uncompressed NAR bytes', () => {
    const byPath = new Map<string, NarInfo[]>()
    for (const { text } of fixtureFiles('narinfo')) {
      const info = parseNarInfo(text)
      byPath.set(info.storePath, [...(byPath.get(info.storePath) ?? []), info])
    }
    for (const { storePath, nar } of uncompressedNars()) {
      const infos = byPath.get(storePath) ?? []
      assert.equal(infos.length, 7, storePath)
      for (const info of infos) {
        assert.equal(formatHashHex(info.narHash), createHash('sha256').update(nar).digest('hex'), storePath)
        assert.equal(info.narSize, nar.length, storePath)
      }
      const compressions = infos.map((info) => info.compression).sort()
      assert.deepEqual(compressions, ['br', 'bzip2', 'none', 'xz', 'xz', 'xz', 'zstd'])
    }
  })

  it('reads every field of a Nix-written narinfo', () => {
    assert.deepEqual(parseNarInfo(REFS), {
      storePath: '/nix/store/wi32l2ngn8irgnjb81408mpn1n6nncy1-refs',
      url: 'nar/04fm0jkdmn1q8ajhm7vwc5zdhyvmz92s9yq96jnrgd3yzzxfy3k0.nar.xz',
      compression: 'xz',
      fileHash: 'sha256:04fm0jkdmn1q8ajhm7vwc5zdhyvmz92s9yq96jnrgd3yzzxfy3k0',
      fileSize: 176,
      narHash: parseHash('sha256:1plynzzh6y7vnyy398z8b19c8whilf1v42n0v595kl91jbhxsb55'),
      narSize: 168,
      references: ['925f1jb1ajrypjbyq7rylwryqwizvhp0-hello.txt'],
      deriver: 'rlfa6317hin1kav2x1xb6whybwg8677j-refs.drv',
      sigs: ['test-cache-1:QKoLcFUQal6lVkmX3vgs9vNVukbL7ldwByo5neSIkvzY/9I1RtHNBJ0rN6O0kBz3UvmjMg0qPBA3X9F2Dod+BQ=='],
      quirks: [],
    })
  })

  it('reads fixture fields: empty references, deriver, CA', () => {
    const app = fixtureFiles('narinfo').find((f) => f.name === 'none/yvd3rsmr9zhli0qg8ya69z6zhmza1p4a.narinfo')!
    const info = parseNarInfo(app.text)
    assert.deepEqual(info.references, ['1k87k4082pzf85pfmqzjslxn34n5vrjn-fixture-dep-1'])
    assert.equal(info.deriver, 'x3zfg2wjcaywv75nklzq9g1ncwam6jvx-fixture-app-1.drv')
    assert.equal(info.ca, undefined)
    const basic = parseNarInfo(
      fixtureFiles('narinfo').find((f) => f.name === 'xz/8gxcdyzlr8aa09pp43z8zbxd9zm00qzk.narinfo')!.text,
    )
    assert.deepEqual(basic.references, [])
    assert.equal(basic.deriver, undefined)
    assert.equal(basic.ca, 'fixed:r:sha256:0p6paxs2x2w2b24h8qbpjsrc6n80nix304dfgdw21wchh30c3vdr')
    assert.equal(basic.fileSize, 3302528)
    assert.equal(basic.narSize, 3304184)
  })

  it('reads a missing or empty Compression as bzip2 and records the quirk', () => {
    for (const text of [MINIMAL, replaceLine(MINIMAL, 'Compression', 'Compression: ')]) {
      const info = parseNarInfo(text)
      assert.equal(info.compression, 'bzip2')
      assert.deepEqual(info.quirks, ['compression-default'])
    }
    assert.deepEqual(parseNarInfo(replaceLine(MINIMAL, 'Compression', 'Compression: none')).quirks, [])
  })

  it('accepts a hex NarHash as old cache.nixos.org files have, recording the quirk', () => {
    const info = parseNarInfo(replaceLine(MINIMAL, 'NarHash', `NarHash: sha256:${HELLO_HEX}`))
    assert.deepEqual(info.quirks, ['compression-default', 'nar-hash-hex'])
    assert.equal(formatHashNix32(info.narHash), 'sha256:0h40zg6hakjv951nyhdad7mv9za56m3za5gnpiw5s1hbwcxzdrq3')
  })

  it('keeps references in listed order and flags them when unsorted or repeated', () => {
    const unsorted = 'References: zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-b 00000000000000000000000000000000-a'
    const info = parseNarInfo(replaceLine(MINIMAL, 'References', unsorted))
    assert.deepEqual(info.references, ['zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-b', '00000000000000000000000000000000-a'])
    assert.ok(info.quirks.includes('references-unsorted'))
    const repeated = 'References: 00000000000000000000000000000000-a 00000000000000000000000000000000-a'
    assert.ok(parseNarInfo(replaceLine(MINIMAL, 'References', repeated)).quirks.includes('references-unsorted'))
    const sorted = 'References: 00000000000000000000000000000000-a  zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-b'
    const ok = parseNarInfo(replaceLine(MINIMAL, 'References', sorted))
    assert.deepEqual(ok.references, ['00000000000000000000000000000000-a', 'zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-b'])
    assert.ok(!ok.quirks.includes('references-unsorted'))
  })

  it('tolerates a missing final newline, recording the quirk', () => {
    const info = parseNarInfo(REFS.slice(0, -1))
    assert.deepEqual(info.quirks, ['no-trailing-newline'])
    assert.deepEqual({ ...info, quirks: [] }, parseNarInfo(REFS))
  })

  it('ignores unknown keys, accumulates Sig, and lets other repeated keys override', () => {
    const text =
      MINIMAL +
      'Future: whatever: it says\n' +
      'Sig: a:AAAA\n' +
      'URL: nar/second.nar\n' +
      'Sig: b:BBBB\n' +
      'System: x86_64-linux\n' +
      'Deriver: unknown-deriver\n' +
      'References: \n' +
      'References: 00000000000000000000000000000000-a\n' +
      'CA: \n' +
      'CA: fixed:r:sha256:0h40zg6hakjv951nyhdad7mv9za56m3za5gnpiw5s1hbwcxzdrq3\n'
    const info = parseNarInfo(text)
    assert.equal(info.url, 'nar/second.nar')
    assert.deepEqual(info.sigs, ['a:AAAA', 'b:BBBB'])
    assert.equal(info.system, 'x86_64-linux')
    assert.equal(info.deriver, undefined)
    assert.deepEqual(info.references, ['00000000000000000000000000000000-a'])
    assert.equal(info.ca, 'fixed:r:sha256:0h40zg6hakjv951nyhdad7mv9za56m3za5gnpiw5s1hbwcxzdrq3')
  })

  it('keeps values exactly as written after ": ", including colons and spaces', () => {
    const info = parseNarInfo(replaceLine(MINIMAL, 'URL', 'URL: https://mirror.example/nar/x.nar?a=b: c '))
    assert.equal(info.url, 'https://mirror.example/nar/x.nar?a=b: c ')
  })

  it('rejects malformed narinfos, naming the line and field', () => {
    const cases: [text: string, line: number | undefined, field: string | undefined, pattern: RegExp, why: string][] = [
      [
        MINIMAL.replace('NarSize: 128\n', 'NarSize 128\n'),
        4,
        undefined,
        /expected 'Key: value'/,
        'a line without a colon',
      ],
      [MINIMAL + '\n', 5, undefined, /expected 'Key: value'/, 'an empty line'],
      [
        MINIMAL.replace('NarSize: 128', 'NarSize:128'),
        4,
        'NarSize',
        /expected ': '/,
        'no space after the colon: Nix would drop a character',
      ],
      [MINIMAL.replace('NarSize: 128', 'NarSize:'), 4, 'NarSize', /expected ': '/, 'a colon at the end of the line'],
      [MINIMAL.replaceAll('\n', '\r\n'), 1, 'StorePath', /carriage return/, 'CRLF line endings'],
      [replaceLine(MINIMAL, 'StorePath', undefined), undefined, 'StorePath', /missing/, 'StorePath is required'],
      [
        replaceLine(MINIMAL, 'StorePath', 'StorePath: 925f1jb1ajrypjbyq7rylwryqwizvhp0-hello.txt'),
        4,
        'StorePath',
        /absolute/,
        'StorePath must be a full path',
      ],
      [
        replaceLine(MINIMAL, 'StorePath', 'StorePath: /nix/store/925f1jb1ajrypjbyq7rylwryqwizvhp0'),
        4,
        'StorePath',
        /'-'/,
        'StorePath without a name',
      ],
      [
        replaceLine(MINIMAL, 'StorePath', 'StorePath: /nix/store/925f1jb1ajrypjbyq7rylwryqwizvhpe-x'),
        4,
        'StorePath',
        /nix32/,
        'e in the hash part',
      ],
      [replaceLine(MINIMAL, 'URL', undefined), undefined, 'URL', /URL is missing/, 'URL is required'],
      [replaceLine(MINIMAL, 'URL', 'URL: '), undefined, 'URL', /empty/, 'URL must not be empty'],
      [replaceLine(MINIMAL, 'NarHash', undefined), undefined, 'NarHash', /missing/, 'NarHash is required'],
      [
        replaceLine(MINIMAL, 'NarHash', 'NarHash: 0h40zg6hakjv951nyhdad7mv9za56m3za5gnpiw5s1hbwcxzdrq3'),
        4,
        'NarHash',
        /prefix/,
        'NarHash needs an algorithm',
      ],
      [
        replaceLine(MINIMAL, 'NarHash', `NarHash: sha1:${'0'.repeat(40)}`),
        4,
        'NarHash',
        /must be sha256, not sha1/,
        'Nix hashes NARs with sha256 only',
      ],
      [
        replaceLine(MINIMAL, 'NarHash', `NarHash: md5:${'0'.repeat(32)}`),
        4,
        'NarHash',
        /must be sha256, not md5/,
        'a weak NarHash would let a forged NAR pass',
      ],
      [
        replaceLine(MINIMAL, 'NarHash', 'NarHash: sha256:0h40zg6hakjv951nyhdad7mv9za56m3za5gnpiw5s1hbwcxzdrq'),
        4,
        'NarHash',
        /length 51/,
        'NarHash too short',
      ],
      [replaceLine(MINIMAL, 'NarSize', undefined), undefined, 'NarSize', /missing or zero/, 'NarSize is required'],
      [
        replaceLine(MINIMAL, 'NarSize', 'NarSize: 0'),
        undefined,
        'NarSize',
        /missing or zero/,
        'NarSize must be positive',
      ],
      [replaceLine(MINIMAL, 'NarSize', 'NarSize: -1'), 4, 'NarSize', /decimal size/, 'negative size'],
      [replaceLine(MINIMAL, 'NarSize', 'NarSize: 1e3'), 4, 'NarSize', /decimal size/, 'exponent notation'],
      [replaceLine(MINIMAL, 'NarSize', 'NarSize: 0x80'), 4, 'NarSize', /decimal size/, 'hex notation'],
      [replaceLine(MINIMAL, 'NarSize', 'NarSize:  128'), 4, 'NarSize', /decimal size/, 'a second space'],
      [replaceLine(MINIMAL, 'NarSize', 'NarSize: 128 '), 4, 'NarSize', /decimal size/, 'a trailing space'],
      [replaceLine(MINIMAL, 'NarSize', 'NarSize: 9007199254740992'), 4, 'NarSize', /decimal size/, 'beyond 2^53-1'],
      [MINIMAL + 'FileSize: twelve\n', 5, 'FileSize', /decimal size/, 'FileSize must be a number too'],
      [MINIMAL + 'FileHash: sha256:zz\n', 5, 'FileHash', /length 2/, 'FileHash must parse'],
      [
        MINIMAL + 'References: /nix/store/925f1jb1ajrypjbyq7rylwryqwizvhp0-hello.txt\n',
        5,
        'References',
        /nix32/,
        'references are base names',
      ],
      [
        MINIMAL + 'References: 00000000000000000000000000000000-a\nReferences: 00000000000000000000000000000000-b\n',
        6,
        'References',
        /twice/,
        'a second non-empty References',
      ],
      [
        MINIMAL + 'References: 00000000000000000000000000000000-a\nReferences: \n',
        6,
        'References',
        /twice/,
        'References after a non-empty one',
      ],
      [MINIMAL + 'CA: fixed:sha256:x\nCA: fixed:sha256:y\n', 6, 'CA', /twice/, 'a second CA'],
      [MINIMAL + 'Deriver: foo.drv\n', 5, 'Deriver', /nix32/, 'Deriver must be a base name'],
      ['', undefined, 'StorePath', /missing/, 'empty input'],
    ]
    for (const [text, line, field, pattern, why] of cases) {
      assert.throws(
        () => parseNarInfo(text),
        (error: unknown) => {
          assert.ok(error instanceof NarInfoError, `${why}: ${String(error)}`)
          assert.equal(error.line, line, `${why}: line`)
          assert.equal(error.field, field, `${why}: field`)
          assert.match(error.message, pattern, why)
          if (line !== undefined) assert.match(error.message, new RegExp(`line ${line}\\b`), why)
          if (field !== undefined) assert.ok(error.message.includes(field), `${why}: message names the field`)
          return true
        },
        why,
      )
    }
  })
})

describe('formatNarInfo', () => {
  it('writes keys in Nix order, with "References: " and its trailing space when empty', () => {
    const info = parseNarInfo(
      replaceLine(MINIMAL, 'Sig', 'Sig: k:SIG') +
        'CA: fixed:r:sha256:0h40zg6hakjv951nyhdad7mv9za56m3za5gnpiw5s1hbwcxzdrq3\nSystem: x86_64-linux\n',
    )
    assert.equal(
      formatNarInfo(info),
      `StorePath: /nix/store/925f1jb1ajrypjbyq7rylwryqwizvhp0-hello.txt
URL: nar/0j8j7y47sqsa9skhy7zr2yqxnwk3vf92l0wmn1j3f0gk2ax4vsvg.nar.xz
Compression: bzip2
NarHash: sha256:0h40zg6hakjv951nyhdad7mv9za56m3za5gnpiw5s1hbwcxzdrq3
NarSize: 128
References: 
System: x86_64-linux
Sig: k:SIG
CA: fixed:r:sha256:0h40zg6hakjv951nyhdad7mv9za56m3za5gnpiw5s1hbwcxzdrq3
`,
    )
  })

  it('round-trips values apart from quirks', () => {
    const base: NarInfo = parseNarInfo(REFS)
    const variants: NarInfo[] = [
      base,
      { ...base, references: [], sigs: [] },
      {
        ...base,
        references: ['zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-b', '00000000000000000000000000000000-a'],
        quirks: ['references-unsorted'],
      },
      {
        ...base,
        compression: 'gzip',
        system: 'aarch64-linux',
        ca: 'text:sha256:0h40zg6hakjv951nyhdad7mv9za56m3za5gnpiw5s1hbwcxzdrq3',
      },
      { ...base, narHash: parseHash(`sha256:${HELLO_HEX}`), narSize: Number.MAX_SAFE_INTEGER, fileSize: 0 },
    ]
    for (const info of variants) {
      const reparsed = parseNarInfo(formatNarInfo(info))
      assert.deepEqual({ ...reparsed, quirks: [] }, { ...info, quirks: [] })
    }
    // Quirks do not survive printing: Nix's form is written.
    const hex = parseNarInfo(replaceLine(MINIMAL, 'NarHash', `NarHash: sha256:${HELLO_HEX}`))
    assert.deepEqual(parseNarInfo(formatNarInfo(hex)).quirks, [])
  })

  it('refuses values that would break the line format', () => {
    const base = parseNarInfo(REFS)
    const cases: [info: NarInfo, field: string][] = [
      [{ ...base, url: 'nar/x\nStorePath: /evil' }, 'URL'],
      [{ ...base, url: '' }, 'URL'],
      [{ ...base, sigs: ['a:b\r'] }, 'Sig'],
      [{ ...base, references: ['a b'] }, 'References'],
      [{ ...base, narSize: 0 }, 'NarSize'],
      [{ ...base, fileSize: 1.5 }, 'FileSize'],
    ]
    for (const [info, field] of cases) {
      assert.throws(
        () => formatNarInfo(info),
        (error: unknown) => error instanceof NarInfoError && error.field === field,
        field,
      )
    }
  })
})
