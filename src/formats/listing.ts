/** The `.ls` NAR listing: a JSON tree of a store path's files with their sizes and NAR offsets. */
import { MAX_NAR_DEPTH } from './nar-indexer.js'
import type { NarEntry } from './nar-indexer.js'

// Document: {"version":1,"root":<node>}, where <node> is one of
//   {"type":"regular","size":<u64>,"executable":true,"narOffset":<u64>}
//   {"type":"symlink","target":"<string>"}
//   {"type":"directory","entries":{"<name>":<node>,…}}
//
// Nix ≤ 2.34 writes `executable` only when true (readers default it to false); Nix ≥ 2.12 sorts
// keys ({"root":…,"version":1}); `narOffset` is the offset of the file's first content byte in the
// *uncompressed* NAR, and is missing in listings from harmonia and from the new Hydra uploader
// (since 2026-06 for cache.nixos.org), so a listing may say where files are but not how to read them.

export type ListingNode =
  | { type: 'regular'; size: number; executable: boolean; narOffset?: number }
  | { type: 'symlink'; target: string }
  /** A Map, never a plain object, so names like "__proto__" are safe; insertion order is NAR (byte) order. */
  | { type: 'directory'; entries: Map<string, ListingNode> }

export interface Listing {
  version: 1
  root: ListingNode
}

/** What one parsed node takes in memory besides its name (an object, a Map slot); measured ~140 bytes. */
const NODE_BYTES = 160

/**
 * About what `listing` takes in memory, for caches bounded in bytes: a node's object and Map slot,
 * and its name and symlink target (as two-byte strings, so never less than they take).
 */
export function listingMemoryBytes(listing: Listing): number {
  let bytes = 0
  const pending: ListingNode[] = [listing.root]
  for (let node = pending.pop(); node !== undefined; node = pending.pop()) {
    bytes += NODE_BYTES
    if (node.type === 'symlink') bytes += 2 * node.target.length
    else if (node.type === 'directory')
      for (const [name, child] of node.entries) {
        bytes += 2 * name.length
        pending.push(child)
      }
  }
  return bytes
}

export class ListingError extends Error {
  override readonly name = 'ListingError'
  /** Path of the node at fault ('' is the root), when known. */
  readonly path: string | undefined
  constructor(message: string, path?: string, options?: ErrorOptions) {
    super(
      path === undefined ? `invalid listing: ${message}` : `invalid listing at ${describePath(path)}: ${message}`,
      options,
    )
    this.path = path
  }
}

/**
 * Parses and validates `.ls` JSON in either key order. Entries are put into UTF-8 byte order,
 * whatever order the JSON had, so the Map iterates like the NAR. Throws ListingError.
 */
export function parseListing(text: string): Listing {
  let document: unknown
  try {
    document = JSON.parse(text)
  } catch (error) {
    throw new ListingError(`not JSON (${(error as Error).message})`, undefined, { cause: error })
  }
  if (!isObject(document)) throw new ListingError('expected a JSON object')
  const version = own(document, 'version')
  if (version !== 1) throw new ListingError(`unsupported version ${show(version)} (expected 1)`)
  if (!Object.hasOwn(document, 'root')) throw new ListingError('missing "root"')
  return { version: 1, root: parseNode(own(document, 'root'), '', 0) }
}

/** Compact JSON in Nix 2.8's key order; `executable` only when true, `narOffset` when known. */
export function formatListing(listing: Listing): string {
  return `{"version":1,"root":${formatNode(listing.root)}}`
}

/**
 * The node at `segments` below `root`, or undefined when there is none. Walks directories only:
 * a symlink on the way is not followed (the caller decides how to resolve it), so
 * `locate(root, ['link', 'x'])` is undefined when `link` is a symlink. Never throws.
 * @example locate(listing.root, 'share/doc/README'.split('/'))
 */
export function locate(root: ListingNode, segments: readonly string[]): ListingNode | undefined {
  let node: ListingNode | undefined = root
  for (const segment of segments) {
    if (node.type !== 'directory') return undefined
    node = node.entries.get(segment)
    if (node === undefined) return undefined
  }
  return node
}

/** True when every regular file has a narOffset, i.e. the listing alone can locate contents. */
export function hasAllOffsets(root: ListingNode): boolean {
  const pending: ListingNode[] = [root]
  for (let node = pending.pop(); node !== undefined; node = pending.pop()) {
    if (node.type === 'regular' && node.narOffset === undefined) return false
    if (node.type === 'directory') for (const child of node.entries.values()) pending.push(child)
  }
  return true
}

/**
 * The most `.ls` bytes a NAR of `narSize` bytes can honestly have. Each entry costs at least ~150
 * NAR bytes (its tokens) plus its name or target, and at most ~6 JSON bytes per name or target
 * byte (`\u0001`-style escapes) plus ~90, so Nix's compact JSON stays well under 8 × NarSize;
 * the slack covers tiny NARs. A larger listing is bogus, and parsing one costs seconds and
 * hundreds of MB (50 MB of `.ls`: ~4 s of event loop and ~430 MB of heap).
 */
export function maxListingBytes(narSize: number): number {
  return 64 * 1024 + 8 * narSize
}

/**
 * Throws ListingError when a file of the listing cannot be in a NAR of `narSize` bytes (a size or
 * `narOffset + size` past the end): such a listing would answer HEAD and listings with sizes the
 * NAR cannot back.
 */
export function checkListingFits(listing: Listing, narSize: number): void {
  const pending: Array<[string, ListingNode]> = [['', listing.root]]
  for (let item = pending.pop(); item !== undefined; item = pending.pop()) {
    const [path, node] = item
    if (node.type === 'regular' && (node.narOffset ?? 0) + node.size > narSize) {
      throw new ListingError(
        `file of ${node.size} bytes at NAR offset ${node.narOffset ?? 0} does not fit in the NarSize of ${narSize}`,
        path,
      )
    }
    if (node.type === 'directory')
      for (const [name, child] of node.entries) pending.push([path === '' ? name : `${path}/${name}`, child])
  }
}

/**
 * Builds the listing of a NAR from NarIndexer entries (root '' first, then 'a', 'a/b', each after
 * its parent directory). Throws ListingError on entries that do not form a tree, including two
 * names that only became equal through UTF-8 decoding of invalid bytes.
 */
export function listingFromEntries(entries: Iterable<NarEntry>): Listing {
  let root: ListingNode | undefined
  const directories = new Map<string, Map<string, ListingNode>>()
  for (const entry of entries) {
    const node = nodeFromEntry(entry)
    if (entry.path === '') {
      if (root !== undefined) throw new ListingError('second root entry', '')
      root = node
    } else {
      if (root === undefined) throw new ListingError('entry before the root entry', entry.path)
      const slash = entry.path.lastIndexOf('/')
      const name = entry.path.slice(slash + 1)
      const parent = directories.get(slash < 0 ? '' : entry.path.slice(0, slash))
      if (parent === undefined) throw new ListingError('parent is not a directory listed before it', entry.path)
      if (!isValidEntryName(name)) throw new ListingError(`invalid entry name ${quote(name)}`, entry.path)
      if (parent.has(name)) throw new ListingError('duplicate entry', entry.path)
      parent.set(name, node)
    }
    if (node.type === 'directory') directories.set(entry.path, node.entries)
  }
  if (root === undefined) throw new ListingError('no entries')
  return { version: 1, root }
}

/** A name a NAR directory may contain: non-empty, not '.' or '..', no '/' or NUL. */
export function isValidEntryName(name: string): boolean {
  return name !== '' && name !== '.' && name !== '..' && !name.includes('/') && !name.includes('\0')
}

function nodeFromEntry(entry: NarEntry): ListingNode {
  switch (entry.type) {
    case 'regular':
      return { type: 'regular', size: entry.size, executable: entry.executable, narOffset: entry.narOffset }
    case 'symlink':
      return { type: 'symlink', target: entry.target }
    case 'directory':
      return { type: 'directory', entries: new Map() }
  }
}

function parseNode(value: unknown, path: string, depth: number): ListingNode {
  // Same bound as the NAR parser: a deeper tree is not a valid NAR, and recursion stays shallow.
  if (depth >= MAX_NAR_DEPTH) throw new ListingError(`nesting exceeds the maximum depth of ${MAX_NAR_DEPTH}`, path)
  if (!isObject(value)) throw new ListingError('expected a node object', path)
  const type = own(value, 'type')
  switch (type) {
    case 'regular': {
      const size = own(value, 'size')
      if (!isSize(size)) throw new ListingError(`"size" must be a non-negative safe integer, got ${show(size)}`, path)
      const executable = own(value, 'executable') ?? false
      if (typeof executable !== 'boolean')
        throw new ListingError(`"executable" must be a boolean, got ${show(executable)}`, path)
      const narOffset = own(value, 'narOffset')
      if (narOffset === undefined) return { type: 'regular', size, executable }
      if (!isSize(narOffset))
        throw new ListingError(`"narOffset" must be a non-negative safe integer, got ${show(narOffset)}`, path)
      return { type: 'regular', size, executable, narOffset }
    }
    case 'symlink': {
      const target = own(value, 'target')
      if (typeof target !== 'string' || target === '' || target.includes('\0')) {
        throw new ListingError(`"target" must be a non-empty string without NUL, got ${show(target)}`, path)
      }
      return { type: 'symlink', target }
    }
    case 'directory': {
      const entries = own(value, 'entries')
      if (!isObject(entries)) throw new ListingError(`"entries" must be an object, got ${show(entries)}`, path)
      const names = Object.keys(entries)
      for (const name of names) {
        const childPath = path === '' ? name : `${path}/${name}`
        if (!isValidEntryName(name)) throw new ListingError(`invalid entry name ${quote(name)}`, childPath)
        // A lone surrogate has no UTF-8 form; it would turn into U+FFFD and could collide with another name.
        if (hasLoneSurrogate(name)) throw new ListingError(`entry name ${quote(name)} is not valid Unicode`, childPath)
      }
      const map = new Map<string, ListingNode>()
      for (const name of byteOrder(names))
        map.set(name, parseNode(entries[name], path === '' ? name : `${path}/${name}`, depth + 1))
      return { type: 'directory', entries: map }
    }
    default:
      throw new ListingError(`unknown node type ${show(type)}`, path)
  }
}

function formatNode(node: ListingNode): string {
  switch (node.type) {
    case 'regular':
      return `{"type":"regular","size":${node.size}${node.executable ? ',"executable":true' : ''}${
        node.narOffset !== undefined ? `,"narOffset":${node.narOffset}` : ''
      }}`
    case 'symlink':
      return `{"type":"symlink","target":${JSON.stringify(node.target)}}`
    case 'directory': {
      const parts: string[] = []
      for (const [name, child] of node.entries) parts.push(`${JSON.stringify(name)}:${formatNode(child)}`)
      return `{"type":"directory","entries":{${parts.join(',')}}}`
    }
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

// Own properties only: `{}`.constructor or .toString must never count as a field.
function own(object: Record<string, unknown>, key: string): unknown {
  return Object.hasOwn(object, key) ? object[key] : undefined
}

function isSize(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0
}

/** Half of an astral character: only these sort differently in UTF-16 than in UTF-8 (before U+E000–U+FFFF). */
const SURROGATE = /[\uD800-\uDFFF]/

/**
 * `names` in UTF-8 byte order, which is NAR order. Without astral characters that is JS string
 * order, so the usual directory (Nix writes names sorted; integer-like keys come first from
 * Object.keys) costs a comparison per name and no UTF-8 copies.
 */
function byteOrder(names: string[]): string[] {
  if (names.some((name) => SURROGATE.test(name))) {
    const named = names.map((name) => ({ name, bytes: Buffer.from(name, 'utf8') }))
    named.sort((a, b) => Buffer.compare(a.bytes, b.bytes))
    return named.map(({ name }) => name)
  }
  for (let i = 1; i < names.length; i++) if (names[i - 1]! >= names[i]!) return names.sort()
  return names
}

function hasLoneSurrogate(text: string): boolean {
  return /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(text)
}

function show(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value)
  return text.length > 80 ? `${text.slice(0, 80)}…` : text
}

function describePath(path: string): string {
  return path === '' ? 'the root' : quote(path)
}

// Quoted and shortened: names and paths come from upstreams and must not fill error messages.
function quote(text: string): string {
  return JSON.stringify(text.length > 100 ? `${text.slice(0, 100)}…` : text)
}
