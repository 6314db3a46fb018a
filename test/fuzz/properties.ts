/**
 * The hostile-input properties, shared by test/fuzz/fuzz.test.ts (few cases, in `npm test`) and
 * bench/fuzz.ts (`npm run fuzz`, 100,000+ cases). Every parser must answer any input with a value
 * or its own error class (never a TypeError/RangeError), with work and output bounded by the input,
 * and round-trip where it has a printer.
 */
import assert from 'node:assert/strict'
import fc from 'fast-check'
import { HashError, formatHashNix32, formatHashSri, parseHash, HASH_BYTE_LENGTHS } from '../../src/formats/hash.js'
import {
  ListingError,
  formatListing,
  hasAllOffsets,
  isValidEntryName,
  listingFromEntries,
  locate,
  parseListing,
  type ListingNode,
} from '../../src/formats/listing.js'
import {
  MAX_NAR_DEPTH,
  MAX_NAME_BYTES,
  MAX_TARGET_BYTES,
  NarFormatError,
  NarIndexer,
  type NarEntry,
} from '../../src/formats/nar-indexer.js'
import { NarInfoError, formatNarInfo, parseNarInfo } from '../../src/formats/narinfo.js'
import { Nix32Error, decodeNix32, encodeNix32, isNix32, nix32Length } from '../../src/formats/nixbase32.js'
import { SignatureError, parsePublicKey, verifyNarInfo } from '../../src/formats/signature.js'
import {
  StorePathError,
  formatStorePath,
  isStoreHash,
  isStoreName,
  parseStoreBaseName,
  parseStorePath,
} from '../../src/formats/store-path.js'
import { HttpError } from '../../src/http/errors.js'
import { parseStoreRequest, storeRequestRest, targetPath, type StoreRequest } from '../../src/http/request-path.js'
import { formatDirectoryText } from '../../src/http/listing-formats.js'
import { createRangeStream } from '../../src/store/nar-source.js'
import { probeRangedFile, RangeMismatchError } from '../../src/store/ranged-file.js'
import { Readable } from 'node:stream'
import { MAX_SYMLINK_HOPS, resolveStorePath } from '../../src/http/resolve-path.js'
import { buildNar, type NarTree } from '../formats/nar-builder.js'
import { fixtureFiles, uncompressedNars } from '../formats/fixtures.js'
import {
  cuts,
  entryName,
  hash,
  hashText,
  listingNode,
  listingText,
  messyText,
  narBytes,
  narInfo,
  narInfoText,
  narTree,
  nix32Char,
  splitAt,
  storePathLike,
  storeRequestTarget,
  symlinkTree,
} from './arbitraries.js'

export interface FuzzProperty {
  readonly name: string
  readonly property: fc.IRawProperty<unknown>
}

/** An error message names the problem; it must not carry a hostile input back whole. */
const MAX_MESSAGE_CHARS = 1200

type ErrorClass = abstract new (...args: never[]) => Error

/** Runs `parse`; a thrown error must be one of `allowed` with a bounded message, anything else fails the property. */
function attempt<T>(parse: () => T, ...allowed: ErrorClass[]): T | undefined {
  try {
    return parse()
  } catch (error) {
    if (!allowed.some((kind) => error instanceof kind)) throw error
    assert.ok(
      (error as Error).message.length <= MAX_MESSAGE_CHARS,
      `error message of ${(error as Error).message.length} characters`,
    )
    return undefined
  }
}

const storeDir = '/nix/store'
const narInfoSeeds = fixtureFiles('narinfo').map((f) => f.text)
const listingSeeds = fixtureFiles('ls').map((f) => f.text)
const narSeeds = uncompressedNars()
  .filter(({ nar }) => nar.length < 64 * 1024)
  .map(({ nar }) => new Uint8Array(nar))

const nix32Decode = fc.property(fc.oneof(fc.string({ unit: nix32Char, maxLength: 60 }), messyText), (text) => {
  const bytes = attempt(() => decodeNix32(text), Nix32Error)
  if (bytes === undefined) return
  assert.ok(isNix32(text))
  assert.ok(bytes.length <= text.length)
  assert.equal(encodeNix32(bytes), text, 'one string per byte sequence')
})

const nix32RoundTrip = fc.property(fc.uint8Array({ maxLength: 80 }), (bytes) => {
  const text = encodeNix32(bytes)
  assert.equal(text.length, nix32Length(bytes.length))
  assert.deepEqual(decodeNix32(text), bytes)
})

const storePaths = fc.property(storePathLike, (text) => {
  const path = attempt(() => parseStorePath(text), StorePathError)
  if (path !== undefined) {
    assert.ok(isStoreHash(path.hash) && isStoreName(path.name))
    assert.equal(formatStorePath(path), text)
  }
  const slash = text.lastIndexOf('/')
  const parts = attempt(() => parseStoreBaseName(text.slice(slash + 1)), StorePathError)
  if (parts !== undefined) assert.equal(`${parts.hash}-${parts.name}`, text.slice(slash + 1))
})

const hashes = fc.property(fc.oneof(hashText, hash.map(formatHashNix32)), (text) => {
  const parsed = attempt(() => parseHash(text), HashError)
  if (parsed === undefined) return
  assert.equal(parsed.digest.length, HASH_BYTE_LENGTHS[parsed.algorithm])
  assert.deepEqual(parseHash(formatHashNix32(parsed)), parsed)
  assert.deepEqual(parseHash(formatHashSri(parsed)), parsed)
})

// Printing drops the quirks that only describe how the text was written.
const PRINTED_AWAY = new Set(['compression-default', 'nar-hash-hex', 'no-trailing-newline'])

const narInfoParse = fc.property(narInfoText(narInfoSeeds), (text) => {
  const info = attempt(() => parseNarInfo(text), NarInfoError)
  if (info === undefined) return
  const again = parseNarInfo(formatNarInfo(info))
  assert.deepEqual(again, { ...info, quirks: info.quirks.filter((q) => !PRINTED_AWAY.has(q)) })
})

const narInfoRoundTrip = fc.property(narInfo, (info) => {
  assert.deepEqual(parseNarInfo(formatNarInfo(info)), info)
})

const listingParse = fc.property(
  listingText(listingSeeds),
  fc.array(fc.oneof(entryName, fc.constantFrom('d', '..', '')), { maxLength: 4 }),
  (text, segments) => {
    const listing = attempt(() => parseListing(text), ListingError)
    if (listing === undefined) return
    const printed = formatListing(listing)
    const again = parseListing(printed)
    assert.deepEqual(again, listing)
    assert.equal(formatListing(again), printed, 'entries stay in byte order')
    hasAllOffsets(listing.root)
    locate(listing.root, segments)
  },
)

const listingRoundTrip = fc.property(listingNode, (root) => {
  const listing = parseListing(formatListing({ version: 1, root }))
  assert.deepEqual(listing.root, root)
  assert.ok(inByteOrder(listing.root))
})

const narIndexing = fc.property(narBytes(narSeeds), cuts, (nar, at) => {
  const whole = index([nar])
  const chunked = index(splitAt(nar, at))
  assert.equal(chunked.error, whole.error, 'the verdict does not depend on chunking')
  // A push() that throws returns nothing, so entries completed earlier in that chunk are not seen.
  const [fewer, more] = whole.entries.length <= chunked.entries.length ? [whole, chunked] : [chunked, whole]
  assert.deepEqual(more.entries.slice(0, fewer.entries.length), fewer.entries)
  if (whole.error === undefined) assert.deepEqual(chunked.entries, whole.entries)
  // Output bounded by input: an entry takes at least three 16-byte tokens, paths and targets are capped.
  assert.ok(whole.entries.length * 48 <= nar.length)
  for (const entry of whole.entries) {
    assert.ok(entry.path.length <= MAX_NAR_DEPTH * (MAX_NAME_BYTES + 1))
    if (entry.type === 'symlink') assert.ok(entry.target.length <= MAX_TARGET_BYTES)
    if (entry.type === 'regular') assert.ok(entry.narOffset + entry.size <= nar.length || whole.error !== undefined)
  }
  if (whole.error === undefined) {
    const listing = attempt(() => listingFromEntries(whole.entries), ListingError)
    if (listing !== undefined) assert.deepEqual(parseListing(formatListing(listing)), listing)
  }
})

const narRoundTrip = fc.property(narTree, cuts, (tree, at) => {
  const nar = buildNar(tree)
  const { entries, error } = index(splitAt(nar, at))
  assert.equal(error, undefined)
  const expected = expectedEntries(tree)
  assert.deepEqual(
    entries.map((e) => (e.type === 'regular' ? { ...e, narOffset: 0 } : e)),
    expected.map(({ contents: _, ...e }) => (e.type === 'regular' ? { ...e, narOffset: 0 } : e)),
  )
  entries.forEach((entry, i) => {
    if (entry.type === 'regular')
      assert.deepEqual(nar.subarray(entry.narOffset, entry.narOffset + entry.size), expected[i]!.contents)
  })
  const listing = listingFromEntries(entries)
  assert.equal(formatListing(parseListing(formatListing(listing))), formatListing(listing))
})

const signatures = fc.property(
  fc.oneof(
    messyText,
    fc
      .tuple(fc.string({ maxLength: 8 }), fc.uint8Array({ minLength: 30, maxLength: 34 }))
      .map(([name, key]) => `${name}:${Buffer.from(key).toString('base64')}`),
  ),
  narInfo,
  fc.array(
    fc.oneof(
      messyText,
      fc.uint8Array({ minLength: 64, maxLength: 64 }).map((sig) => `k:${Buffer.from(sig).toString('base64')}`),
    ),
    { maxLength: 3 },
  ),
  (keyText, info, sigs) => {
    const key = attempt(() => parsePublicKey(keyText), SignatureError)
    if (key !== undefined)
      assert.equal(verifyNarInfo({ ...info, sigs }, [key]), undefined, 'a random signature never verifies')
  },
)

const requestPaths = fc.property(storeRequestTarget, (target) => {
  const parse = (path: string): StoreRequest => parseStoreRequest(storeRequestRest(path, storeDir))
  let request: StoreRequest | undefined
  try {
    request = parse(targetPath(target))
  } catch (error) {
    if (!(error instanceof HttpError) || error.status !== 400) throw error
    assert.ok(error.message.length <= MAX_MESSAGE_CHARS)
    return
  }
  assert.ok(isStoreHash(request.hash))
  for (const segment of request.segments) assert.ok(isValidEntryName(segment), JSON.stringify(segment))
  // What a URL parser makes of the same target (node-server routes on that) names the same store
  // path and file: nothing was hidden from the check in a dot segment or a backslash.
  assert.deepEqual(parse(new URL(target, 'http://example.org').pathname), request)
})

const OWN_BASE = '/nix/store/00000000000000000000000000000000-own'
const OTHER_BASE = '/nix/store/11111111111111111111111111111111-other'

const symlinkResolution = fc.asyncProperty(
  symlinkTree(OWN_BASE, OTHER_BASE),
  fc.array(fc.constantFrom('a', 'b', 'c'), { maxLength: 5 }),
  async (root, requested) => {
    let lookups = 0
    const lookup = async (segments: readonly string[]): Promise<ListingNode | undefined> => {
      // Each hop rewrites the path at most once per segment: far more lookups than this is a loop.
      assert.ok(++lookups <= 64 * (MAX_SYMLINK_HOPS + requested.length + 1), 'resolution does not terminate')
      return locate(root, segments)
    }
    const resolution = await resolveStorePath(lookup, OWN_BASE, storeDir, requested)
    // Looking the whole path up first (a complete listing) changes nothing but the number of lookups.
    assert.deepEqual(await resolveStorePath(lookup, OWN_BASE, storeDir, requested, true), resolution)
    if (resolution.kind === 'found') {
      assert.equal(locate(root, resolution.segments), resolution.node)
      assert.notEqual(resolution.node.type, 'symlink')
      for (const segment of resolution.segments) assert.ok(isValidEntryName(segment))
    } else if (resolution.kind === 'redirect') {
      assert.ok(resolution.location.startsWith(`${storeDir}/`), resolution.location)
      assert.equal(
        new URL(resolution.location, 'http://example.org').pathname,
        resolution.location,
        'no dot segments in a redirect',
      )
      const inside = resolution.location
        .slice(storeDir.length + 1)
        .replace(/\/$/, '')
        .split('/')
        .map(decodeURIComponent)
      for (const segment of inside) assert.ok(isValidEntryName(segment), resolution.location)
      // A link that climbs out of its store path to `/nix/store/x` is a 404, never a redirect there.
      assert.doesNotThrow(() => parseStoreBaseName(inside[0]!), resolution.location)
    }
  },
)

/** Whatever the names and targets, the plain-text listing is one line per entry, with nothing a terminal or a line reader would act on. */
const textListing = fc.property(
  fc.uniqueArray(fc.tuple(entryName, fc.string({ unit: 'binary', maxLength: 20 })), {
    selector: ([name]) => name,
    maxLength: 20,
  }),
  (entries) => {
    const directory: Extract<ListingNode, { type: 'directory' }> = {
      type: 'directory',
      entries: new Map(entries.map(([name, target]) => [name, { type: 'symlink', target }])),
    }
    const text = formatDirectoryText(directory)
    assert.equal(text.split('\n').length - 1, entries.length)
    assert.doesNotMatch(text.replaceAll('\n', ''), /[\x00-\x1f\x7f-\x9f\u2028\u2029]/)
  },
)

/**
 * A byte-range probe at a place a `.ls` claims (any offset, name, mode and size, true or not)
 * succeeds only where the NAR really has such a file: a regular entry of that name, mode and size
 * whose contents start there.
 */
const rangedProbe = fc.asyncProperty(
  narTree,
  fc.record({
    entry: fc.nat(),
    name: fc.oneof(fc.constant(undefined), fc.nat(), entryName),
    offset: fc.oneof(fc.nat(), fc.integer({ min: -16, max: 16 })),
    size: fc.oneof(fc.nat(), fc.nat({ max: 64 })),
    executable: fc.boolean(),
  }),
  async (tree, claim) => {
    const nar = Buffer.from(buildNar(tree))
    const files = index([nar]).entries.filter((e): e is Extract<NarEntry, { type: 'regular' }> => e.type === 'regular')
    const base = files.length === 0 ? undefined : files[claim.entry % files.length]!
    const nameOf = (e: NarEntry) => (e.path === '' ? undefined : e.path.split('/').at(-1))
    const name =
      typeof claim.name === 'number'
        ? files.length === 0
          ? undefined
          : nameOf(files[claim.name % files.length]!)
        : claim.name
    const narOffset =
      base === undefined
        ? claim.offset
        : claim.offset <= 16 && claim.offset >= -16
          ? base.narOffset + claim.offset
          : claim.offset % (nar.length + 1)
    const size = claim.size <= 64 && base !== undefined && claim.size % 2 === 0 ? base.size : claim.size
    const node = { type: 'regular' as const, size, executable: claim.executable, narOffset }
    const fetchRange = async (start: number, end: number) => Readable.from([nar.subarray(start, end + 1)])
    let head: Buffer | undefined
    try {
      head = await probeRangedFile(node, name, 16, fetchRange)
    } catch (error) {
      if (!(error instanceof RangeMismatchError)) throw error
      return
    }
    const real = files.find(
      (e) => e.narOffset === narOffset && e.size === size && e.executable === claim.executable && nameOf(e) === name,
    )
    assert.ok(
      real !== undefined,
      `a probe passed for ${JSON.stringify({ name, size, narOffset, executable: claim.executable })}`,
    )
    assert.deepEqual(head, nar.subarray(narOffset, narOffset + Math.min(16, size)))
  },
)

/**
 * Strict verification: whatever the range and however the verification ends, a stream gives all
 * but the last byte, then waits; the last byte comes only once it succeeded, else the stream fails.
 */
const heldLastByte = fc.asyncProperty(
  fc.uint8Array({ minLength: 1, maxLength: 3000 }),
  fc.nat(),
  fc.nat(),
  fc.boolean(),
  async (bytes, a, b, verified) => {
    const start = a % bytes.length
    const end = start + 1 + (b % (bytes.length - start))
    let settle!: (ok: boolean) => void
    let asked!: () => void
    const askedFor = new Promise<void>((resolve) => (asked = resolve))
    const verification = new Promise<void>(
      (resolve, reject) => (settle = (ok) => (ok ? resolve() : reject(new Error('NAR does not match its NarHash')))),
    )
    const stream = createRangeStream(
      {
        readAt: async (buffer, length, position) => {
          buffer.set(bytes.subarray(position, position + length))
          return Math.min(length, bytes.length - position)
        },
        waitFor: async () => bytes.length,
        release: () => {},
        beforeLastByte: () => {
          asked()
          return verification
        },
      },
      start,
      end,
    )
    const received: number[] = []
    let outcome: 'pending' | 'done' | 'failed' = 'pending'
    const reading = (async () => {
      const reader = stream.getReader()
      try {
        for (;;) {
          const { done, value } = await reader.read()
          if (done) break
          received.push(...value)
        }
        outcome = 'done'
      } catch {
        outcome = 'failed'
      }
    })()
    await askedFor
    await new Promise((resolve) => setImmediate(resolve)) // the reader takes what was enqueued before the wait
    assert.equal(outcome, 'pending')
    assert.deepEqual(received, [...bytes.subarray(start, end - 1)])
    settle(verified)
    await reading
    assert.equal(outcome, verified ? 'done' : 'failed')
    assert.deepEqual(received, [...bytes.subarray(start, verified ? end : end - 1)])
  },
)

/** Every property, in the order they run. */
export const FUZZ_PROPERTIES: readonly FuzzProperty[] = [
  { name: 'nix32 decode of any text', property: nix32Decode },
  { name: 'nix32 encode/decode round trip', property: nix32RoundTrip },
  { name: 'store path parsing', property: storePaths },
  { name: 'hash parsing and printing', property: hashes },
  { name: 'narinfo parse of hostile text, and print/parse of what it accepts', property: narInfoParse },
  { name: 'narinfo format/parse round trip', property: narInfoRoundTrip },
  { name: '.ls parse of hostile text, and print/parse of what it accepts', property: listingParse },
  { name: '.ls format/parse round trip', property: listingRoundTrip },
  { name: 'NAR indexing of hostile bytes, however chunked', property: narIndexing },
  { name: 'NAR built by nar-builder indexes back to its entries', property: narRoundTrip },
  { name: 'public key parsing and signature checks', property: signatures },
  { name: 'request targets never leave the store path they name', property: requestPaths },
  { name: 'symlink resolution stays in the store and terminates', property: symlinkResolution },
  { name: 'plain-text listings keep one line per entry', property: textListing },
  { name: 'a byte-range probe passes only where the NAR has the claimed file', property: rangedProbe },
  { name: 'strict verification holds the last byte of any range until the NAR is verified', property: heldLastByte },
]

interface Indexed {
  readonly entries: NarEntry[]
  readonly error: string | undefined
}

/** Feeds the chunks, then ends; a NarFormatError is the only failure allowed, and it sticks. */
function index(chunks: readonly Uint8Array[]): Indexed {
  const indexer = new NarIndexer()
  const entries: NarEntry[] = []
  try {
    for (const chunk of chunks) entries.push(...indexer.push(chunk))
    indexer.end()
    assert.ok(indexer.done)
    return { entries, error: undefined }
  } catch (error) {
    if (!(error instanceof NarFormatError)) throw error
    assert.ok(error.message.length <= MAX_MESSAGE_CHARS)
    assert.throws(
      () => indexer.push(new Uint8Array(1)),
      (again) => again === error,
      'the first error sticks',
    )
    return { entries, error: error.message }
  }
}

type ExpectedEntry = NarEntry & { readonly contents?: Uint8Array }

function expectedEntries(tree: NarTree, path = ''): ExpectedEntry[] {
  switch (tree.type) {
    case 'regular': {
      const contents = typeof tree.contents === 'string' ? Buffer.from(tree.contents) : tree.contents
      return [
        { type: 'regular', path, size: contents.length, executable: tree.executable === true, narOffset: 0, contents },
      ]
    }
    case 'symlink':
      return [
        {
          type: 'symlink',
          path,
          target: typeof tree.target === 'string' ? tree.target : Buffer.from(tree.target).toString(),
        },
      ]
    case 'directory':
      return [
        { type: 'directory', path },
        ...tree.entries.flatMap(([name, node]) => {
          const text = typeof name === 'string' ? name : Buffer.from(name).toString()
          return expectedEntries(node, path === '' ? text : `${path}/${text}`)
        }),
      ]
  }
}

function inByteOrder(node: ListingNode): boolean {
  if (node.type !== 'directory') return true
  const names = [...node.entries.keys()].map((name) => Buffer.from(name))
  return (
    names.every((name, i) => i === 0 || Buffer.compare(names[i - 1]!, name) < 0) &&
    [...node.entries.values()].every(inByteOrder)
  )
}
