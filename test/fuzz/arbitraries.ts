/** fast-check generators of hostile and valid inputs for the format parsers and request paths (used by properties.ts). */
import fc from 'fast-check'
import {
  HASH_BYTE_LENGTHS,
  formatHashHex,
  formatHashNix32,
  formatHashSri,
  type Hash,
  type HashAlgorithm,
} from '../../src/formats/hash.js'
import { isValidEntryName, type ListingNode } from '../../src/formats/listing.js'
import { MAX_NAME_BYTES } from '../../src/formats/nar-indexer.js'
import type { NarInfo } from '../../src/formats/narinfo.js'
import { NIX32_ALPHABET } from '../../src/formats/nixbase32.js'
import { isStoreName } from '../../src/formats/store-path.js'
import { buildNar, directory, regular, symlink, tokens, u64, type NarTree } from '../formats/nar-builder.js'

/** Strings that have broken parsers before: separators, dot segments, escapes, NUL, CR, lone surrogates, prototype keys. */
const NASTY_PIECES = [
  '',
  '.',
  '..',
  '/',
  '\\',
  '\0',
  '\r',
  '\n',
  '\r\n',
  ':',
  ': ',
  ' ',
  '-',
  '%',
  '%2e',
  '%2E',
  '%00',
  '%2f',
  '%5c',
  '%c0%ae',
  '%zz',
  '\ud800',
  '\udc00',
  '😀',
  'é',
  '\u202e',
  '__proto__',
  'constructor',
  'sha256:',
  'sha256-',
  'nix-archive-1',
  '/nix/store/',
  '0',
  '-1',
  '1e3',
  '0x10',
  '9007199254740993',
  '{',
  '}',
  '"',
  '[',
  ']',
]

/** Text that is mostly noise, now and then long enough to show whether an error message echoes it whole. */
export const messyText: fc.Arbitrary<string> = fc.oneof(
  { arbitrary: fc.string({ maxLength: 40 }), weight: 3 },
  { arbitrary: fc.string({ unit: 'binary', maxLength: 40 }), weight: 2 },
  { arbitrary: fc.string({ unit: fc.constantFrom(...NASTY_PIECES), maxLength: 20 }), weight: 3 },
  { arbitrary: fc.string({ unit: 'binary-ascii', minLength: 1000, maxLength: 3000 }), weight: 1 },
)

export const nix32Char = fc.constantFrom(...NIX32_ALPHABET)
export const storeHash = fc.string({ unit: nix32Char, minLength: 32, maxLength: 32 })
const storeNameChar = fc.constantFrom(...'0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+-._?=')
export const storeName = fc.string({ unit: storeNameChar, minLength: 1, maxLength: 30 }).filter(isStoreName)
export const baseName = fc.tuple(storeHash, storeName).map(([hash, name]) => `${hash}-${name}`)

/** Almost-store-paths: right or wrong dir, hash of the right length or not, name valid or not. */
export const storePathLike: fc.Arbitrary<string> = fc
  .tuple(
    fc.constantFrom('/nix/store/', '/nix/store', '/nix//store/', '/other/', '', 'nix/store/'),
    fc.oneof(storeHash, fc.string({ unit: nix32Char, minLength: 30, maxLength: 34 }), messyText),
    fc.constantFrom('-', '', '_', '--'),
    fc.oneof(storeName, messyText, fc.constantFrom('.', '..', '.-x', '..-x', 'x/y', 'x'.repeat(212))),
  )
  .map((parts) => parts.join(''))

const hashAlgorithm = fc.constantFrom(...(Object.keys(HASH_BYTE_LENGTHS) as HashAlgorithm[]))
export const hash: fc.Arbitrary<Hash> = hashAlgorithm.chain((algorithm) =>
  fc
    .uint8Array({ minLength: HASH_BYTE_LENGTHS[algorithm], maxLength: HASH_BYTE_LENGTHS[algorithm] })
    .map((digest) => ({ algorithm, digest })),
)

/** Hash strings in every encoding Nix reads, some of them slightly broken. */
export const hashText: fc.Arbitrary<string> = fc.oneof(
  fc
    .tuple(
      hash,
      fc.constantFrom('nix32', 'hex', 'sri', 'base64'),
      fc.constantFrom('keep', 'drop-last', 'append', 'upper', 'swap-algorithm'),
    )
    .map(([h, encoding, damage]) => {
      const text =
        encoding === 'nix32'
          ? formatHashNix32(h)
          : encoding === 'hex'
            ? `${h.algorithm}:${formatHashHex(h)}`
            : encoding === 'sri'
              ? formatHashSri(h)
              : `${h.algorithm}:${formatHashSri(h).slice(h.algorithm.length + 1)}`
      switch (damage) {
        case 'keep':
          return text
        case 'drop-last':
          return text.slice(0, -1)
        case 'append':
          return `${text}z`
        case 'upper':
          return text.toUpperCase()
        default:
          return text.replace(h.algorithm, h.algorithm === 'sha256' ? 'sha512' : 'sha256')
      }
    }),
  fc
    .tuple(fc.constantFrom('sha256', 'sha3', '', 'md5'), fc.constantFrom(':', '-', ''), messyText)
    .map((parts) => parts.join('')),
)

/** Any NarInfo formatNarInfo can write: values without line breaks, valid base names, sizes in range. */
export const narInfo: fc.Arbitrary<NarInfo> = fc
  .record(
    {
      storePath: baseName.map((b) => `/nix/store/${b}`),
      url: fc.string({ minLength: 1, maxLength: 40 }).filter((s) => !/[\r\n]/.test(s)),
      compression: fc.oneof(
        fc.constantFrom('xz', 'zstd', 'bzip2', 'none', 'br'),
        fc.string({ minLength: 1, maxLength: 8 }).filter((s) => !/[\r\n]/.test(s)),
      ),
      fileHash: hash.map(formatHashNix32),
      fileSize: fc.maxSafeNat(),
      // Nix (and unnar) refuse a NarHash other than sha256.
      narHash: fc.uint8Array({ minLength: 32, maxLength: 32 }).map((digest): Hash => ({ algorithm: 'sha256', digest })),
      narSize: fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
      references: fc.array(baseName, { maxLength: 4 }),
      deriver: baseName.map((b) => `${b}.drv`),
      system: fc.string({ minLength: 1, maxLength: 12 }).filter((s) => !/[\r\n]/.test(s)),
      sigs: fc.array(
        fc.string({ maxLength: 30 }).filter((s) => !/[\r\n]/.test(s)),
        { maxLength: 3 },
      ),
      ca: fc.string({ minLength: 1, maxLength: 30 }).filter((s) => !/[\r\n]/.test(s)),
      quirks: fc.constant([]),
    },
    { requiredKeys: ['storePath', 'url', 'compression', 'narHash', 'narSize', 'references', 'sigs', 'quirks'] },
  )
  .map((info) => ({ ...info, quirks: isStrictlySorted(info.references) ? [] : ['references-unsorted' as const] }))

const NARINFO_KEYS = [
  'StorePath',
  'URL',
  'Compression',
  'FileHash',
  'FileSize',
  'NarHash',
  'NarSize',
  'References',
  'Deriver',
  'System',
  'Sig',
  'CA',
  'X-Unknown',
  '',
  'storepath',
]

const narInfoValue: fc.Arbitrary<string> = fc.oneof(
  baseName.map((b) => `/nix/store/${b}`),
  baseName,
  fc.array(baseName, { maxLength: 3 }).map((names) => names.join(' ')),
  hashText,
  fc.constantFrom(
    '0',
    '1',
    '-1',
    '0x10',
    '1e3',
    ' 7',
    '9007199254740991',
    '9007199254740992',
    '99999999999999999999',
    'unknown-deriver',
    'xz',
    '',
    'nar/x.nar.xz',
    '../../x',
    'http://169.254.169.254/latest',
  ),
  messyText,
)

const narInfoLine: fc.Arbitrary<string> = fc.oneof(
  {
    arbitrary: fc
      .tuple(fc.constantFrom(...NARINFO_KEYS), fc.constantFrom(': ', ':', ' : ', ':  '), narInfoValue)
      .map((parts) => parts.join('')),
    weight: 4,
  },
  { arbitrary: messyText, weight: 1 },
)

/** A narinfo text: valid ones with a few lines changed, or free-form `Key: value` soup. */
export function narInfoText(seeds: readonly string[]): fc.Arbitrary<string> {
  const lineEdit = fc.record({
    at: fc.nat(),
    kind: fc.constantFrom('drop', 'duplicate', 'replace', 'insert', 'crlf'),
    line: narInfoLine,
  })
  return fc.oneof(
    fc
      .tuple(fc.array(narInfoLine, { maxLength: 14 }), fc.boolean())
      .map(([lines, newline]) => lines.join('\n') + (newline ? '\n' : '')),
    fc
      .tuple(
        fc.oneof(narInfo.map(formatNarInfoLoosely), fc.constantFrom(...seeds)),
        fc.array(lineEdit, { maxLength: 3 }),
      )
      .map(([text, edits]) => {
        const lines = text.split('\n')
        for (const { at, kind, line } of edits) {
          const i = at % lines.length
          if (kind === 'drop') lines.splice(i, 1)
          else if (kind === 'duplicate') lines.splice(i, 0, lines[i] ?? '')
          else if (kind === 'replace') lines[i] = line
          else if (kind === 'insert') lines.splice(i, 0, line)
          else lines[i] = `${lines[i] ?? ''}\r`
        }
        return lines.join('\n')
      }),
    fc.tuple(fc.constantFrom(...seeds), textEdits).map(([text, edits]) => applyTextEdits(text, edits)),
  )
}

// Written here rather than with formatNarInfo so that the generator does not depend on the code under test.
function formatNarInfoLoosely(info: NarInfo): string {
  const lines = [
    `StorePath: ${info.storePath}`,
    `URL: ${info.url}`,
    `Compression: ${info.compression}`,
    `NarHash: ${formatHashNix32(info.narHash)}`,
    `NarSize: ${info.narSize}`,
  ]
  lines.push(`References: ${info.references.join(' ')}`)
  if (info.deriver !== undefined) lines.push(`Deriver: ${info.deriver}`)
  for (const sig of info.sigs) lines.push(`Sig: ${sig}`)
  return `${lines.join('\n')}\n`
}

/** Character-level damage: inserts, deletions and replacements at arbitrary positions. */
const textEdits = fc.array(
  fc.record({
    at: fc.nat(),
    remove: fc.nat({ max: 4 }),
    insert: fc.oneof(fc.constantFrom(...NASTY_PIECES), fc.string({ maxLength: 4 })),
  }),
  {
    minLength: 1,
    maxLength: 4,
  },
)

function applyTextEdits(text: string, edits: readonly { at: number; remove: number; insert: string }[]): string {
  let out = text
  for (const { at, remove, insert } of edits) {
    const i = at % (out.length + 1)
    out = out.slice(0, i) + insert + out.slice(i + remove)
  }
  return out
}

/** Entry names as NAR and `.ls` allow them: any Unicode, including `__proto__`, up to 255 UTF-8 bytes. */
export const entryName: fc.Arbitrary<string> = fc
  .oneof(
    fc.string({ unit: 'binary', minLength: 1, maxLength: 6 }),
    fc.constantFrom('a', 'b', 'B', '__proto__', 'constructor', 'é', '😀', '...', '-', 'x'.repeat(MAX_NAME_BYTES)),
  )
  .filter((name) => isValidEntryName(name) && Buffer.byteLength(name) <= MAX_NAME_BYTES)

const symlinkTarget = fc
  .oneof(
    fc.string({ unit: 'binary', minLength: 1, maxLength: 20 }),
    fc.constantFrom('..', '../..', '/etc/passwd', '/nix/store/x', '.'),
  )
  .filter((target) => !target.includes('\0'))

/** Valid NAR trees (entries sorted, names unique), a few levels deep. */
export const narTree: fc.Arbitrary<NarTree> = fc.letrec<{ node: NarTree }>((tie) => ({
  node: fc.oneof(
    { depthSize: 'small', maxDepth: 5 },
    fc
      .tuple(fc.uint8Array({ maxLength: 40 }), fc.boolean())
      .map(([contents, executable]) => regular(contents, executable)),
    symlinkTarget.map(symlink),
    fc
      .uniqueArray(fc.tuple(entryName, tie('node')), { selector: ([name]) => name, maxLength: 4 })
      .map((pairs) => directory(pairs)),
  ),
})).node

/** Valid `.ls` trees, entries in any order (parseListing sorts them). */
export const listingNode: fc.Arbitrary<ListingNode> = fc.letrec<{ node: ListingNode }>((tie) => ({
  node: fc.oneof(
    { depthSize: 'small', maxDepth: 5 },
    fc
      .record(
        { size: fc.maxSafeNat(), executable: fc.boolean(), narOffset: fc.maxSafeNat() },
        { requiredKeys: ['size', 'executable'] },
      )
      .map((file) => ({ type: 'regular' as const, ...file })),
    symlinkTarget.map((target) => ({ type: 'symlink' as const, target })),
    fc
      .uniqueArray(fc.tuple(entryName, tie('node')), { selector: ([name]) => name, maxLength: 4 })
      .map((pairs) => ({ type: 'directory' as const, entries: new Map(pairs) })),
  ),
})).node

/** Listing-shaped JSON values with wrong types, bad names, huge or fractional numbers. */
const listingishValue: fc.Arbitrary<unknown> = fc.letrec<{ node: unknown }>((tie) => ({
  node: fc.oneof(
    { depthSize: 'small', maxDepth: 4 },
    fc.record(
      {
        type: fc.constantFrom('regular', 'symlink', 'directory', 'weird', 1),
        size: fc.constantFrom(0, 1, -1, 1.5, 2 ** 53, 1e300, '1', null),
        executable: fc.constantFrom(true, false, 'true', 1, null),
        narOffset: fc.constantFrom(0, 96, -8, 2 ** 60, 0.5, '96'),
        target: fc.oneof(fc.constantFrom('', 'a\0b', '../x', 5), fc.string({ maxLength: 6 })),
        entries: fc.oneof(
          fc.dictionary(fc.oneof(entryName, fc.constantFrom(...NASTY_PIECES), messyText), tie('node'), { maxKeys: 3 }),
          fc.constantFrom(null, [], 'x'),
        ),
      },
      { requiredKeys: [] },
    ),
    fc.jsonValue({ maxDepth: 2 }),
  ),
})).node

/** `.ls` texts: Nix's own with damage, structurally wrong documents, random JSON, and nesting past the limit. */
export function listingText(seeds: readonly string[]): fc.Arbitrary<string> {
  return fc.oneof(
    fc.tuple(fc.constantFrom(...seeds), textEdits).map(([text, edits]) => applyTextEdits(text, edits)),
    fc
      .tuple(fc.constantFrom(1, 2, '1', undefined), listingishValue)
      .map(([version, root]) => JSON.stringify({ version, root })),
    fc.json({ maxDepth: 3 }),
    fc
      .integer({ min: 60, max: 70 })
      .map(
        (depth) =>
          `{"version":1,"root":${'{"type":"directory","entries":{"d":'.repeat(depth)}{"type":"regular","size":0}${'}}'.repeat(depth)}}`,
      ),
    fc.string({
      unit: fc.constantFrom('{', '}', '[', ']', '"', ':', ',', '1', 'version', 'root', 'type'),
      maxLength: 60,
    }),
  )
}

/** A byte-level change to a NAR; positions wrap around the input's length. */
type NarMutation =
  | { kind: 'byte'; at: number; value: number }
  | { kind: 'word'; at: number; value: bigint }
  | { kind: 'truncate'; at: number }
  | { kind: 'insert'; at: number; bytes: Uint8Array }
  | { kind: 'repeat'; at: number; length: number }

const narMutation: fc.Arbitrary<NarMutation> = fc.oneof(
  fc.record({ kind: fc.constant('byte' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  // NAR fields are 8-byte aligned, so aligned words mostly hit length fields: the interesting target.
  fc.record({
    kind: fc.constant('word' as const),
    at: fc.nat(),
    value: fc.constantFrom(0n, 1n, 7n, 8n, 255n, 4095n, 4096n, 2n ** 32n, 2n ** 53n, 2n ** 63n, 2n ** 64n - 1n),
  }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({
    kind: fc.constant('insert' as const),
    at: fc.nat(),
    bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }),
  }),
  fc.record({ kind: fc.constant('repeat' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 96 }) }),
)

function mutateNar(nar: Uint8Array, mutations: readonly NarMutation[]): Uint8Array {
  let out = Buffer.from(nar)
  for (const m of mutations) {
    const at = m.at % (out.length + 1)
    if (m.kind === 'byte' && at < out.length) out[at] = m.value
    else if (m.kind === 'word') {
      const aligned = at - (at % 8)
      if (aligned + 8 <= out.length) out.set(u64(m.value), aligned)
    } else if (m.kind === 'truncate') out = out.subarray(0, at)
    else if (m.kind === 'insert') out = Buffer.concat([out.subarray(0, at), m.bytes, out.subarray(at)])
    else if (m.kind === 'repeat')
      out = Buffer.concat([out.subarray(0, at), out.subarray(at, at + m.length), out.subarray(at)])
  }
  return new Uint8Array(out)
}

const NAR_WORDS = [
  'nix-archive-1',
  '(',
  ')',
  'type',
  'regular',
  'symlink',
  'directory',
  'entry',
  'name',
  'node',
  'contents',
  'executable',
  'target',
  '',
  '.',
  '..',
  'a',
  'b',
  'a/b',
]

/** Bytes that are NARs, nearly NARs, token soup behind the magic, or noise. */
export function narBytes(seeds: readonly Uint8Array[]): fc.Arbitrary<Uint8Array> {
  const seed = fc.oneof(narTree.map(buildNar), fc.constantFrom(...seeds))
  return fc.oneof(
    {
      arbitrary: fc
        .tuple(seed, fc.array(narMutation, { minLength: 1, maxLength: 3 }))
        .map(([nar, mutations]) => mutateNar(nar, mutations)),
      weight: 4,
    },
    {
      arbitrary: fc
        .array(fc.oneof(fc.constantFrom(...NAR_WORDS), fc.string({ maxLength: 10 })), { maxLength: 40 })
        .map((words) => tokens('nix-archive-1', ...words)),
      weight: 2,
    },
    { arbitrary: fc.integer({ min: 60, max: 70 }).map((depth) => buildNar(nested(depth))), weight: 1 },
    { arbitrary: fc.uint8Array({ maxLength: 200 }), weight: 1 },
  )
}

function nested(depth: number): NarTree {
  let tree = regular('x')
  for (let i = 0; i < depth; i++) tree = directory({ d: tree })
  return tree
}

/** Where to cut an input into chunks (indexes wrap; empty chunks included). */
export const cuts = fc.array(fc.nat(), { maxLength: 6 })

export function splitAt(data: Uint8Array, at: readonly number[]): Uint8Array[] {
  const points = at.map((p) => p % (data.length + 1)).sort((a, b) => a - b)
  const chunks: Uint8Array[] = []
  let start = 0
  for (const point of points) {
    chunks.push(data.subarray(start, point))
    start = point
  }
  chunks.push(data.subarray(start))
  return chunks
}

/**
 * One request path segment as it can arrive on the wire: printable ASCII and Latin-1 (Node reads
 * request lines as Latin-1), dot segments in every spelling, broken and overlong escapes.
 */
export const wireSegment: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(
    '..',
    '.',
    '',
    '%2e%2e',
    '%2E%2e',
    '.%2e',
    '%2e.',
    '%2e',
    '%00',
    '%2f',
    '%2F',
    '%5c',
    '\\',
    '..\\..',
    '%c0%ae',
    '%c0%af',
    '%e0%80%ae',
    '%',
    '%zz',
    '%e0%a4%a',
    '%ef%bc%8f',
    'bin',
    'hello',
    '%C3%A9',
    'é',
    '?',
    '#',
    ';',
    '%3f',
    '%23',
  ),
  fc.string({ unit: fc.integer({ min: 0x21, max: 0xff }).map((code) => String.fromCharCode(code)), maxLength: 8 }),
  baseName,
  storeHash,
)

/** Request targets for the store route, with the prefixes and suffixes people use to smuggle dot segments. */
export function storeRequestTargets(
  base: fc.Arbitrary<string>,
  segment: fc.Arbitrary<string> = wireSegment,
): fc.Arbitrary<string> {
  return fc
    .tuple(
      fc.constantFrom(
        '/nix/store/',
        '/nix/store/',
        '/nix/./store/',
        '/x/../nix/store/',
        '/nix/store/../store/',
        'http://example.org/nix/store/',
        '/nix/store//',
        '/nix/store/.%2e/store/',
      ),
      base,
      fc.array(segment, { maxLength: 6 }),
      fc.constantFrom('', '/', '?a=../..', '#/../x', '?'),
    )
    .map(([prefix, first, segments, suffix]) => prefix + [first, ...segments].join('/') + suffix)
}

export const storeRequestTarget = storeRequestTargets(fc.oneof(baseName, storeHash, wireSegment))

/** Symlink targets that try to leave the store path, loop, or point at the store dir itself. */
function hostileTarget(base: string, other: string): fc.Arbitrary<string> {
  return fc.oneof(
    fc.constantFrom(
      '..',
      '../..',
      '../../..',
      '.',
      './a',
      'a',
      'b',
      'a/b',
      'b/../..',
      '/',
      '/nix/store',
      '/nix/store/',
      base,
      `${base}/a`,
      `${base}/../x`,
      `${base}/..`,
      `${other}/z`,
      '/nix/store/../etc/passwd',
      '/etc/passwd',
      '//nix/store/x',
      'a/../../..',
      `../${base.slice(11)}/a`,
      'a/./b',
      '/nix/store/x/../..',
    ),
    fc.string({ unit: fc.constantFrom('a', 'b', '.', '/', '..'), minLength: 1, maxLength: 8 }),
  )
}

/** Small trees over names a, b, c whose symlinks point at hostile targets. */
export function symlinkTree(base: string, other: string): fc.Arbitrary<ListingNode> {
  const name = fc.constantFrom('a', 'b', 'c')
  return fc.letrec<{ node: ListingNode }>((tie) => ({
    node: fc.oneof(
      { depthSize: 'small', maxDepth: 4 },
      fc.constant({ type: 'regular' as const, size: 1, executable: false, narOffset: 0 }),
      hostileTarget(base, other).map((target) => ({ type: 'symlink' as const, target })),
      fc
        .uniqueArray(fc.tuple(name, tie('node')), { selector: ([n]) => n, maxLength: 3 })
        .map((pairs) => ({ type: 'directory' as const, entries: new Map(pairs) })),
    ),
  })).node
}

function isStrictlySorted(items: readonly string[]): boolean {
  return items.every((item, i) => i === 0 || (items[i - 1] as string) < item)
}

/**
 * Where a narinfo `URL:` (chosen by whoever controls or intercepts an upstream) could try to send
 * unnar: hosts and keys of the harness that runs it (test/fuzz/confinement.ts).
 */
export interface NarUrlTargets {
  /** `host:port` of listeners that must never be contacted. */
  readonly decoyHosts: readonly string[]
  /** The upstream's own `host:port`, in every spelling that reaches it (`127.0.0.1:p`, `localhost:p`). */
  readonly selfHosts: readonly string[]
  /** Keys that name a real object in the cache (`nar/good.nar`): near-misses are built around them. */
  readonly goodKeys: readonly string[]
  /** More names to mix in (symlinks out of a file:// cache, a sibling directory, the base path). */
  readonly names?: readonly string[]
}

/** Spellings of 127.0.0.2 the WHATWG host parser also reads as it (decimal, hex, octal, short forms). */
const LOOPBACK2_SPELLINGS = [
  '127.0.0.2',
  '2130706434',
  '0x7f000002',
  '0x7f.0.0.2',
  '0177.0.0.2',
  '127.2',
  '127.0.2',
  '[::ffff:127.0.0.2]',
]
const SCHEMES = [
  'http:',
  'https:',
  'HTTPS:',
  'HtTp:',
  'file:',
  's3:',
  'ftp:',
  'javascript:',
  'data:',
  'ws:',
  'blob:',
  'nar:',
]
const DOT_PIECES = ['.', '..', '...', '%2e', '%2E', '%2e%2e', '.%2e', '%2E.', '%252e', '%c0%ae']
const SEPARATOR_PIECES = ['/', '//', '///', '\\', '\\\\', '/\\', '%2f', '%2F', '%5c', '%5C', '%252f']
const ESCAPE_PIECES = [
  '%',
  '%2',
  '%zz',
  '%00',
  '%0a',
  '%0d',
  '%09',
  '%20',
  '%7f',
  '%80',
  '%ff',
  '%3a',
  '%3f',
  '%23',
  '%40',
]
/** What the WHATWG parser drops anywhere (TAB, LF, CR), strips at the ends (C0 and space), or leaves for a server to trip on. */
const INVISIBLE_PIECES = [
  '\t',
  '\n',
  '\r',
  '\r\n',
  ' ',
  '\0',
  '\x01',
  '\x08',
  '\x0b',
  '\x0c',
  '\x1b',
  '\x1f',
  '\x7f',
  '\u00a0',
  '\u2028',
  '\u2029',
  '\ufeff',
  '\u200b',
  '\u3000',
  '\uff0e',
  '\uff0f',
]
const PUNCTUATION_PIECES = [':', '@', '?', '#', ';', '&', '=', '+', '~', '[', ']']
const ORDINARY_PIECES = ['nar', 'x.nar', 'nar/x.nar.xz', 'nar/', '?hash=abc', 'abc', 'cache', 'x']

/**
 * Hostile narinfo URLs: concatenations of dot segments, separators (and their escapes), the
 * characters URL parsers drop or strip, schemes, userinfo and hosts (the decoys', the upstream's own,
 * other spellings of loopback, the metadata address), with a good share of near-misses (a good key
 * with one or two hostile pieces inserted or swapped in), some plain good keys (accepted: the
 * harness checks that what is accepted is fetched), and now and then arbitrary Unicode.
 */
export function hostileNarUrl(targets: NarUrlTargets): fc.Arbitrary<string> {
  const names = targets.names ?? []
  const goodKey = fc.constantFrom(...targets.goodKeys)
  const hostname = fc.oneof(
    { arbitrary: fc.constantFrom(...targets.decoyHosts), weight: 4 },
    { arbitrary: fc.constantFrom(...targets.selfHosts), weight: 3 },
    {
      arbitrary: fc
        .tuple(
          fc.constantFrom(...LOOPBACK2_SPELLINGS),
          fc.constantFrom(...targets.decoyHosts.map((h) => h.slice(h.lastIndexOf(':'))), ''),
        )
        .map(([h, port]) => h + port),
      weight: 2,
    },
    {
      arbitrary: fc.constantFrom(
        '169.254.169.254',
        '169.254.169.254:80',
        '[::1]',
        'localhost',
        '127.0.0.1',
        '0',
        '0.0.0.0',
      ),
      weight: 1,
    },
  )
  const userinfo = fc.constantFrom('', '', '', 'user:pass@', 'user@', ':@', '@', 'a%40b:c@', `${targets.selfHosts[0]}@`)
  const host = fc.tuple(userinfo, hostname).map(([u, h]) => u + h)
  const scheme = fc.constantFrom(...SCHEMES)
  const invisible = fc.constantFrom(...INVISIBLE_PIECES)
  const hostileFragment: fc.Arbitrary<string> = fc.oneof(
    { arbitrary: fc.constantFrom(...DOT_PIECES), weight: 3 },
    { arbitrary: fc.constantFrom(...SEPARATOR_PIECES), weight: 3 },
    { arbitrary: fc.constantFrom(...ESCAPE_PIECES), weight: 2 },
    { arbitrary: invisible, weight: 3 },
    { arbitrary: fc.constantFrom(...PUNCTUATION_PIECES), weight: 2 },
    { arbitrary: scheme, weight: 2 },
    { arbitrary: host, weight: 2 },
    {
      arbitrary: fc.constantFrom(
        '../',
        '..\\',
        '%2e%2e/',
        '..%2f',
        '.%2e/',
        '/..',
        '//',
        `//${targets.decoyHosts[0]}/`,
      ),
      weight: 2,
    },
  )
  const ordinary = fc.oneof(
    fc.constantFrom(...ORDINARY_PIECES),
    goodKey,
    ...(names.length > 0 ? [fc.constantFrom(...names)] : []),
  )
  const fragment = fc.oneof({ arbitrary: hostileFragment, weight: 3 }, { arbitrary: ordinary, weight: 2 })

  // A good key, at most slightly changed: pieces inserted at, or swapped in for, characters anywhere.
  const edit = fc.record({ at: fc.nat(), remove: fc.nat({ max: 2 }), insert: hostileFragment })
  const nearMiss = fc
    .tuple(goodKey, fc.array(edit, { minLength: 1, maxLength: 2 }))
    .map(([key, edits]) => applyTextEdits(key, edits))
  // Scheme, slashes, userinfo, host, path: absolute URLs as lenient parsers read them, with junk before.
  const absolute = fc
    .tuple(
      fc.array(invisible, { maxLength: 2 }),
      fc.oneof(scheme, fc.constant('')),
      fc.constantFrom('//', '', '/', '///', '\\\\', '/\\', '\\/', '\t//', '/\n/'),
      host,
      fc.oneof(
        goodKey.map((k) => `/${k}`),
        fc.constantFrom('', '/', '/cache/nar/good.nar', '/latest/meta-data/', '/..', '\\nar\\x.nar', '?x', '#x'),
      ),
    )
    .map(([junk, s, slashes, h, rest]) => junk.join('') + s + slashes + h + rest)
  // Dot segments in every spelling, then somewhere to land.
  const traversal = fc
    .tuple(
      fc.constantFrom('', 'nar/', './', 'nar/x/'),
      fc.array(
        fc.tuple(
          fc.constantFrom('..', '%2e%2e', '.%2e', '%2E.', '.', '%2e', '...'),
          fc.constantFrom('/', '\\', '%2f', '%5c', '//'),
        ),
        { minLength: 1, maxLength: 4 },
      ),
      fc.oneof(goodKey, ordinary, fc.constantFrom('etc/passwd', 'cache/nar/good.nar', 'decoy.nar', '')),
    )
    .map(([start, steps, end]) => start + steps.map(([d, s]) => d + s).join('') + end)
  const soup = fc.array(fragment, { minLength: 1, maxLength: 8 }).map((parts) => parts.join(''))
  // A query is allowed (harmonia's `?hash=`): what follows `?` is a query to http(s) only.
  const query = fc.oneof(
    fc.constantFrom(
      '?hash=abc',
      '?hash=x&y=z',
      '?',
      '??',
      '?a/../b',
      '?/../../..',
      '?%2e%2e',
      '?x=/..',
      '?:@/',
      '?%3f',
    ),
    fc
      .array(fc.constantFrom('/', '..', '.', 'x', '=', '&', ':', '@', '?', 'cache', 'other'), {
        minLength: 1,
        maxLength: 8,
      })
      .map((parts) => `?${parts.join('')}`),
  )
  const accepted = fc.oneof(
    goodKey,
    fc.tuple(goodKey, query).map(([k, q]) => k + q),
  )
  const unicode = fc.oneof(
    fc.string({ unit: 'grapheme', maxLength: 12 }),
    fc.string({ unit: 'binary', maxLength: 12 }),
    fc.tuple(goodKey, fc.string({ unit: 'binary', maxLength: 3 })).map(([k, s]) => k + s),
  )
  return fc.oneof(
    { arbitrary: nearMiss, weight: 6 },
    { arbitrary: soup, weight: 5 },
    { arbitrary: absolute, weight: 4 },
    { arbitrary: traversal, weight: 3 },
    { arbitrary: accepted, weight: 2 },
    { arbitrary: unicode, weight: 1 },
  )
}
