/** Parser and printer for `.narinfo` files, the `Key: value` metadata Nix publishes for each store path. */
import { HashError, parseHash, parseHashWithEncoding, formatHashNix32 } from './hash.js'
import type { Hash } from './hash.js'
import { StorePathError, parseStoreBaseName } from './store-path.js'

// Format (Nix nar-info.cc, checked against Nix 2.8 output in test/fixtures/nix-caches):
//
//   StorePath: /nix/store/<hash>-<name>     required
//   URL: nar/<filehash>.nar.xz              required, non-empty, relative to the cache root
//   Compression: xz                         missing or empty means bzip2
//   FileHash: sha256:<nix32>                of the file at URL
//   FileSize: <decimal>
//   NarHash: sha256:<nix32>                 required, of the uncompressed NAR
//   NarSize: <decimal>                      required, > 0
//   References: <base name> <base name>     base names, not full paths; may be empty
//   Deriver: <hash>-<name>.drv              `unknown-deriver` means none
//   System: x86_64-linux                    only written by Nix ≤ 2.9
//   Sig: <key name>:<base64>                repeatable
//   CA: fixed:r:sha256:<nix32>              content address
//
// Nix takes the value from two characters after the first ':' without trimming, so the separator
// is exactly ": ". It does not strip '\r'. Unknown keys are ignored; Sig accumulates; a second
// non-empty References or CA is an error; any other repeated key: the last one wins.

/** Deviations from what Nix writes that real caches contain; tolerated and recorded, not fatal. */
export type NarInfoQuirk = 'compression-default' | 'nar-hash-hex' | 'references-unsorted' | 'no-trailing-newline'

export interface NarInfo {
  /** Full store path as written; its store directory is the caller's to check. */
  storePath: string
  url: string
  /** As given, except that a missing or empty value is 'bzip2' (quirk 'compression-default'). */
  compression: string
  /** Raw text, checked to parse as a hash. Nix never verifies it on download. */
  fileHash?: string
  fileSize?: number
  narHash: Hash
  narSize: number
  /** Base names (`<hash>-<name>`) in the order listed. */
  references: string[]
  /** Base name of the .drv; `unknown-deriver` becomes undefined. */
  deriver?: string
  system?: string
  /** Raw `<key name>:<base64>` strings in file order; verifying them is another module's job. */
  sigs: string[]
  ca?: string
  quirks: NarInfoQuirk[]
}

export class NarInfoError extends Error {
  override readonly name = 'NarInfoError'
  /** 1-based line number in the parsed text, when the problem is on one line. */
  readonly line: number | undefined
  /** The narinfo key concerned (`NarSize`, `References`…), when there is one. */
  readonly field: string | undefined
  constructor(message: string, where: { line?: number; field?: string } = {}, options?: ErrorOptions) {
    const at = where.line !== undefined ? `line ${where.line}` : undefined
    const prefix = [at, where.field].filter((part) => part !== undefined).join(', ')
    super(prefix === '' ? `invalid narinfo: ${message}` : `invalid narinfo (${prefix}): ${message}`, options)
    this.line = where.line
    this.field = where.field
  }
}

const QUIRK_ORDER: readonly NarInfoQuirk[] = [
  'compression-default',
  'nar-hash-hex',
  'references-unsorted',
  'no-trailing-newline',
]

/** Where a problem is: the 1-based line, and the key when the line has one. */
type Where = { line: number; field?: string }

/** The fields read so far; which are required is checked once every line is read. */
interface FieldsRead {
  storePath: string | undefined
  url: string | undefined
  compression: string
  fileHash: string | undefined
  fileSize: number | undefined
  narHash: Hash | undefined
  narHashIsHex: boolean
  narSize: number | undefined
  references: string[]
  deriver: string | undefined
  system: string | undefined
  sigs: string[]
  ca: string | undefined
}

/**
 * Parses narinfo text. Throws NarInfoError naming the line and/or field at fault.
 * @example parseNarInfo(await response.text()).narHash
 */
export function parseNarInfo(text: string): NarInfo {
  const quirks = new Set<NarInfoQuirk>()
  const fields: FieldsRead = {
    storePath: undefined,
    url: undefined,
    compression: '',
    fileHash: undefined,
    fileSize: undefined,
    narHash: undefined,
    narHashIsHex: false,
    narSize: undefined,
    references: [],
    deriver: undefined,
    system: undefined,
    sigs: [],
    ca: undefined,
  }
  for (const [index, line] of splitLines(text, quirks).entries()) {
    const { key, value, where } = splitLine(line, index + 1)
    readField(fields, key, value, where)
  }
  return completeNarInfo(fields, quirks)
}

function splitLines(text: string, quirks: Set<NarInfoQuirk>): string[] {
  const lines = text.split('\n')
  // Nix calls a file without a final '\n' corrupt, but nothing is ambiguous about it.
  if (lines[lines.length - 1] === '') lines.pop()
  else quirks.add('no-trailing-newline')
  return lines
}

/** Splits one line at its `: ` separator, refusing what Nix would misread. */
function splitLine(line: string, lineNo: number): { key: string; value: string; where: Where } {
  const colon = line.indexOf(':')
  if (colon < 0) throw new NarInfoError(`expected 'Key: value', got ${describe(line)}`, { line: lineNo })
  const key = line.slice(0, colon)
  const field = key === '' ? undefined : key
  const where = field === undefined ? { line: lineNo } : { line: lineNo, field }
  // Nix would take the value from colon+2 anyway and silently lose a character (or the newline).
  if (line[colon + 1] !== ' ') throw new NarInfoError(`expected ': ' after the key, got ${describe(line)}`, where)
  // Nix keeps a '\r' in the value, which breaks every field it could matter for; say so plainly.
  if (line.includes('\r')) throw new NarInfoError('carriage return in line (CRLF line endings are not allowed)', where)
  return { key, value: line.slice(colon + 2), where }
}

/** Checks one `key: value` line and records it in `fields`. */
function readField(fields: FieldsRead, key: string, value: string, where: Where): void {
  switch (key) {
    case 'StorePath':
      checkStorePath(value, where)
      fields.storePath = value
      break
    case 'URL':
      fields.url = value
      break
    case 'Compression':
      fields.compression = value
      break
    case 'FileHash':
      checkFileHash(value, where)
      fields.fileHash = value
      break
    case 'FileSize':
      fields.fileSize = parseSize(value, where)
      break
    case 'NarHash': {
      const { hash, isHex } = parseNarHash(value, where)
      fields.narHash = hash
      fields.narHashIsHex = isHex
      break
    }
    case 'NarSize':
      fields.narSize = parseSize(value, where)
      break
    case 'References':
      if (fields.references.length > 0) throw new NarInfoError('References given twice', where)
      fields.references = parseReferences(value, where)
      break
    case 'Deriver':
      fields.deriver = parseDeriver(value, where)
      break
    case 'System':
      // Nix prints System only when non-empty, so an empty one is the same as none.
      fields.system = value === '' ? undefined : value
      break
    case 'Sig':
      fields.sigs.push(value)
      break
    case 'CA':
      if (fields.ca !== undefined) throw new NarInfoError('CA given twice', where)
      // Nix 2.8 reads an empty CA as "no content address" (parseContentAddressOpt).
      if (value !== '') fields.ca = value
      break
    default:
      // Unknown keys are ignored, as Nix does, so newer fields do not break older readers.
      break
  }
}

function checkFileHash(value: string, where: Where): void {
  try {
    parseHash(value)
  } catch (error) {
    if (error instanceof HashError) throw new NarInfoError(error.message, where, { cause: error })
    throw error
  }
}

function parseNarHash(value: string, where: Where): { hash: Hash; isHex: boolean } {
  try {
    const parsed = parseHashWithEncoding(value)
    // Nix hashes every NAR with sha256 and refuses another NarHash (a weaker one would let a
    // forged NAR through verification).
    if (parsed.hash.algorithm !== 'sha256')
      throw new NarInfoError(`NarHash must be sha256, not ${parsed.hash.algorithm}`, where)
    return { hash: parsed.hash, isHex: parsed.encoding === 'base16' }
  } catch (error) {
    if (error instanceof HashError) throw new NarInfoError(error.message, where, { cause: error })
    throw error
  }
}

function parseReferences(value: string, where: Where): string[] {
  // Nix tokenizes on ' ' and drops empty tokens, so doubled spaces are harmless.
  const listed = value.split(' ').filter((reference) => reference !== '')
  for (const reference of listed) checkBaseName(reference, where)
  return listed
}

function parseDeriver(value: string, where: Where): string | undefined {
  if (value === 'unknown-deriver') return undefined
  checkBaseName(value, where)
  return value
}

/** Checks that the required fields were given, applies Nix's defaults and records the quirks. */
function completeNarInfo(fields: FieldsRead, quirks: Set<NarInfoQuirk>): NarInfo {
  const { storePath, url, narHash, narSize, references } = fields
  if (storePath === undefined) throw new NarInfoError('StorePath is missing', { field: 'StorePath' })
  if (url === undefined || url === '') throw new NarInfoError('URL is missing or empty', { field: 'URL' })
  if (narHash === undefined) throw new NarInfoError('NarHash is missing', { field: 'NarHash' })
  if (narSize === undefined || narSize === 0) throw new NarInfoError('NarSize is missing or zero', { field: 'NarSize' })

  let compression = fields.compression
  // Nix reads a missing Compression as bzip2; so must we, or bzip2 bytes would reach the NAR reader.
  if (compression === '') {
    compression = 'bzip2'
    quirks.add('compression-default')
  }
  if (fields.narHashIsHex) quirks.add('nar-hash-hex')
  if (!isStrictlySorted(references)) quirks.add('references-unsorted')

  const info: NarInfo = {
    storePath,
    url,
    compression,
    narHash,
    narSize,
    references,
    sigs: fields.sigs,
    quirks: QUIRK_ORDER.filter((q) => quirks.has(q)),
  }
  if (fields.fileHash !== undefined) info.fileHash = fields.fileHash
  if (fields.fileSize !== undefined) info.fileSize = fields.fileSize
  if (fields.deriver !== undefined) info.deriver = fields.deriver
  if (fields.system !== undefined) info.system = fields.system
  if (fields.ca !== undefined) info.ca = fields.ca
  return info
}

/**
 * Prints a NarInfo the way Nix does: its key order, `NarHash` as `sha256:<nix32>`, always a
 * `Compression:` line, and `References: ` (with the trailing space) when there are none.
 * References and Sigs keep their order, so parseNarInfo(formatNarInfo(x)) deep-equals x apart
 * from `quirks`. Throws NarInfoError for a value that cannot be written (one containing a newline).
 */
export function formatNarInfo(info: NarInfo): string {
  let out = ''
  const put = (field: string, value: string): void => {
    if (/[\r\n]/.test(value)) throw new NarInfoError(`${field} value contains a line break`, { field })
    out += `${field}: ${value}\n`
  }
  put('StorePath', info.storePath)
  if (info.url === '') throw new NarInfoError('URL is empty', { field: 'URL' })
  put('URL', info.url)
  put('Compression', info.compression === '' ? 'bzip2' : info.compression)
  if (info.fileHash !== undefined) put('FileHash', info.fileHash)
  if (info.fileSize !== undefined) put('FileSize', formatSize(info.fileSize, 'FileSize', 0))
  put('NarHash', formatHashNix32(info.narHash))
  put('NarSize', formatSize(info.narSize, 'NarSize', 1))
  for (const reference of info.references) {
    if (reference === '' || reference.includes(' '))
      throw new NarInfoError(`invalid reference ${describe(reference)}`, { field: 'References' })
  }
  put('References', info.references.join(' '))
  if (info.deriver !== undefined) put('Deriver', info.deriver)
  if (info.system !== undefined && info.system !== '') put('System', info.system)
  for (const sig of info.sigs) put('Sig', sig)
  if (info.ca !== undefined && info.ca !== '') put('CA', info.ca)
  return out
}

function parseSize(value: string, where: Where): number {
  // Digits only: Number() would also take '0x10', '1e3', ' 7' or '' (as 0).
  const size = /^[0-9]+$/.test(value) ? Number(value) : Number.NaN
  if (!Number.isSafeInteger(size)) {
    throw new NarInfoError(
      `expected a decimal size of at most ${Number.MAX_SAFE_INTEGER}, got ${describe(value)}`,
      where,
    )
  }
  return size
}

function formatSize(size: number, field: string, min: number): string {
  if (!Number.isSafeInteger(size) || size < min)
    throw new NarInfoError(`${field} must be an integer ≥ ${min}, got ${size}`, { field })
  return String(size)
}

// StorePath must be `<dir>/<hash>-<name>`. Which dir is right depends on the client, so only the
// shape is checked here; callers compare it with their store dir (parseStorePath).
function checkStorePath(value: string, where: Where): void {
  const slash = value.lastIndexOf('/')
  if (!value.startsWith('/') || slash <= 0)
    throw new NarInfoError(`expected an absolute store path, got ${describe(value)}`, where)
  checkBaseName(value.slice(slash + 1), where)
}

function checkBaseName(value: string, where: Where): void {
  try {
    parseStoreBaseName(value)
  } catch (error) {
    if (error instanceof StorePathError) throw new NarInfoError(error.message, where, { cause: error })
    throw error
  }
}

// Base names are ASCII, so UTF-16 comparison is byte order. Nix prints references from a set
// (sorted, no duplicates); anything else is what the 'references-unsorted' quirk is about.
function isStrictlySorted(items: readonly string[]): boolean {
  for (let i = 1; i < items.length; i++) if ((items[i - 1] as string) >= (items[i] as string)) return false
  return true
}

function describe(text: string): string {
  return JSON.stringify(text.length > 200 ? `${text.slice(0, 200)}…` : text)
}
