/** A streaming push parser for NAR (Nix ARchive) bytes that lists entries and their content offsets, never holding contents. */

// Wire format (Nix archive.cc, doc/manual/.../nix-archive):
//
//   nar        = str("nix-archive-1"), node
//   node       = str("("), str("type"), ( regular | symlink | directory ), str(")")
//   regular    = str("regular"), [ str("executable"), str("") ], str("contents"), str(<contents>)
//   symlink    = str("symlink"), str("target"), str(<target>)
//   directory  = str("directory"), { str("entry"), str("("), str("name"), str(<name>), str("node"), node, str(")") }
//   str(s)     = u64le(len(s)), s, zero padding to a multiple of 8
//
// Validation follows current Nix (not Debian's 2.8, which is laxer): zero padding; strict token
// order; `executable` only right before `contents`, with an empty value; names non-empty, not
// `.`/`..`, without '/' or NUL, at most 255 bytes, and strictly increasing in byte order within a
// directory (which also rules out duplicates; enforced by Nix since 2.25); symlink targets
// non-empty, without NUL, at most 4095 bytes; tags at most 32 bytes; nesting depth below 64.
// Stricter than Nix: sizes above 2^53-1 (JS numbers would lose precision), and any byte after the
// root's ")" ("trailing data"; Nix stops reading there, but for a stored NAR it means the bytes
// on disk are not the NAR whose hash was checked).

export type NarEntry =
  | { type: 'directory'; path: string }
  | { type: 'regular'; path: string; size: number; executable: boolean; narOffset: number }
  | { type: 'symlink'; path: string; target: string }

export class NarFormatError extends Error {
  override readonly name = 'NarFormatError'
  /** Absolute byte offset in the NAR of the token or byte at fault. */
  readonly offset: number
  constructor(message: string, offset: number) {
    super(`invalid NAR: ${message} (at byte offset ${offset})`)
    this.offset = offset
  }
}

/** Nix's `narMaxDepth`: the root is depth 0, and a node at depth 64 is refused. */
export const MAX_NAR_DEPTH = 64
/** Nix's `narMaxName`, the usual Linux NAME_MAX. */
export const MAX_NAME_BYTES = 255
/** Nix's `narMaxTarget`, the usual Linux PATH_MAX minus the NUL. */
export const MAX_TARGET_BYTES = 4095
/**
 * The longest path of an entry below the root (`a/b/c`, in bytes). Nix has no such rule, but it
 * restores a NAR through full paths, which Linux refuses beyond PATH_MAX (in a review's run Nix 2.8
 * failed at 16 levels of 255-byte names). Without it a small NAR of deep, long names and many files
 * gave each entry a path of ~16 KB: in the same review a 9 MB NAR took 800 MB to index.
 */
export const MAX_PATH_BYTES = 4095
/** Nix's `narMaxTag`: keywords are at most 10 bytes; the slack keeps errors readable. */
export const MAX_TAG_BYTES = 32

const MAGIC = 'nix-archive-1'

/** The grammar position: which token comes next. */
type Expect =
  | 'magic'
  | 'open'
  | 'type-key'
  | 'type'
  | 'regular-field'
  | 'executable-value'
  | 'contents-key'
  | 'contents'
  | 'target-key'
  | 'target'
  | 'close'
  | 'dir-next'
  | 'entry-open'
  | 'name-key'
  | 'name'
  | 'node-key'
  | 'entry-close'

/** Where inside a token the next byte goes. */
type Phase = 'length' | 'bytes' | 'padding' | 'contents' | 'done'

interface DirectoryFrame {
  readonly path: string
  /** The path's length in bytes (the raw names', and their slashes). */
  readonly pathBytes: number
  readonly depth: number
  /** Raw bytes of the last entry name, for the byte-order check. */
  prevName: Uint8Array | undefined
}

const utf8 = new TextDecoder('utf-8', { ignoreBOM: true })

/**
 * Takes the uncompressed NAR in chunks of any size (including 1 byte or the whole NAR), never
 * copies or holds file contents (skips them by counting), and returns entries as soon as their
 * header is complete: a regular file's entry (with narOffset = absolute offset of its first
 * content byte in the NAR) is returned by the push() that completes its 8-byte size word, BEFORE
 * its contents arrive. After the first error every call throws the same error.
 *
 * Memory is bounded: one 4 KiB string buffer, and per open directory (at most 64) its path and the
 * previous entry name. Work per chunk is proportional to the number of tokens in it, not its size.
 *
 * Paths: the root is '', its children 'a', then 'a/b'. Names are decoded as UTF-8 (invalid bytes
 * become U+FFFD, so two distinct non-UTF-8 names can map to the same path); the sort check uses the
 * raw bytes.
 *
 * @example
 * const indexer = new NarIndexer()
 * for await (const chunk of narStream) for (const entry of indexer.push(chunk)) record(entry)
 * indexer.end()
 */
export class NarIndexer {
  #failed: NarFormatError | undefined
  #ended = false
  #position = 0
  #phase: Phase = 'length'
  #expect: Expect = 'magic'

  // The token being read.
  #tokenStart = 0
  readonly #word = new Uint8Array(8)
  #wordFill = 0
  readonly #string = new Uint8Array(MAX_TARGET_BYTES)
  #stringLength = 0
  #stringFill = 0
  #paddingLeft = 0
  #contentsLeft = 0

  // The node being read, and the directories around it.
  readonly #directories: DirectoryFrame[] = []
  #nodePath = ''
  #nodePathBytes = 0
  #nodeDepth = 0
  #executable = false
  #pendingName = ''
  #pendingNameBytes = 0

  /** Feeds the next bytes; returns the entries whose headers they completed. Throws NarFormatError. */
  push(chunk: Uint8Array): NarEntry[] {
    if (this.#failed !== undefined) throw this.#failed
    if (this.#ended) throw new Error('NarIndexer.push() called after end()')
    const entries: NarEntry[] = []
    try {
      this.#consume(chunk, entries)
    } catch (error) {
      if (error instanceof NarFormatError) this.#failed = error
      throw error
    }
    return entries
  }

  /** Declares the input complete. Throws NarFormatError if the archive is incomplete. */
  end(): void {
    if (this.#failed !== undefined) throw this.#failed
    this.#ended = true
    if (this.#phase !== 'done') {
      this.#failed = new NarFormatError(`archive ends early, ${this.#describeExpected()}`, this.#position)
      throw this.#failed
    }
  }

  /**
   * How many bytes of file contents come next (0 unless inside a regular file's contents). A
   * caller that has the NAR in a file may skip() them instead of reading them: they are only counted.
   */
  get contentsAhead(): number {
    return this.#failed === undefined && this.#phase === 'contents' ? this.#contentsLeft : 0
  }

  /** Consumes `bytes` (at most contentsAhead) of file contents unseen. */
  skip(bytes: number): void {
    if (this.#failed !== undefined) throw this.#failed
    if (!(bytes >= 0 && bytes <= this.contentsAhead))
      throw new RangeError(`cannot skip ${bytes} bytes, only ${this.contentsAhead} bytes of contents are ahead`)
    if (bytes === 0) return
    this.#position += bytes
    this.#takeContents(bytes, [])
  }

  /** Bytes consumed so far. */
  get position(): number {
    return this.#position
  }

  /** True once the root node's closing ")" has been read. */
  get done(): boolean {
    return this.#phase === 'done'
  }

  #consume(chunk: Uint8Array, entries: NarEntry[]): void {
    const base = this.#position
    const length = chunk.length
    let i = 0
    while (i < length) {
      switch (this.#phase) {
        case 'length': {
          // Hot path: most tokens are small, so avoid subarray() here (it allocates a Buffer view).
          if (this.#wordFill === 0 && length - i >= 8) {
            this.#tokenStart = base + i
            const low = (chunk[i]! | (chunk[i + 1]! << 8) | (chunk[i + 2]! << 16) | (chunk[i + 3]! << 24)) >>> 0
            const high = (chunk[i + 4]! | (chunk[i + 5]! << 8) | (chunk[i + 6]! << 16) | (chunk[i + 7]! << 24)) >>> 0
            i += 8
            this.#onLength(low, high, entries)
            break
          }
          if (this.#wordFill === 0) this.#tokenStart = base + i
          const word = this.#word
          while (this.#wordFill < 8 && i < length) word[this.#wordFill++] = chunk[i++]!
          if (this.#wordFill === 8) {
            this.#wordFill = 0
            const low = (word[0]! | (word[1]! << 8) | (word[2]! << 16) | (word[3]! << 24)) >>> 0
            const high = (word[4]! | (word[5]! << 8) | (word[6]! << 16) | (word[7]! << 24)) >>> 0
            this.#onLength(low, high, entries)
          }
          break
        }
        case 'bytes': {
          const take = Math.min(this.#stringLength - this.#stringFill, length - i)
          if (take > 64) {
            this.#string.set(chunk.subarray(i, i + take), this.#stringFill)
          } else {
            const string = this.#string
            for (let k = 0, fill = this.#stringFill; k < take; k++) string[fill + k] = chunk[i + k]!
          }
          this.#stringFill += take
          i += take
          if (this.#stringFill === this.#stringLength) {
            if (this.#paddingLeft > 0) this.#phase = 'padding'
            else this.#onTokenEnd(entries)
          }
          break
        }
        case 'contents': {
          // Skipped by counting: O(1) whatever the chunk size.
          const take = Math.min(this.#contentsLeft, length - i)
          i += take
          this.#takeContents(take, entries)
          break
        }
        case 'padding': {
          while (this.#paddingLeft > 0 && i < length) {
            if (chunk[i] !== 0)
              throw new NarFormatError(
                `non-zero padding byte 0x${(chunk[i] ?? 0).toString(16).padStart(2, '0')}`,
                base + i,
              )
            this.#paddingLeft--
            i++
          }
          if (this.#paddingLeft === 0) this.#onTokenEnd(entries)
          break
        }
        case 'done':
          throw new NarFormatError(`trailing data after the end of the archive`, base + i)
      }
    }
    this.#position = base + length
  }

  /** `bytes` more of the current file's contents went by. */
  #takeContents(bytes: number, entries: NarEntry[]): void {
    this.#contentsLeft -= bytes
    if (this.#contentsLeft === 0) {
      if (this.#paddingLeft > 0) this.#phase = 'padding'
      else this.#onTokenEnd(entries)
    }
  }

  /** The 8-byte length word of a token is complete. */
  #onLength(low: number, high: number, entries: NarEntry[]): void {
    if (this.#expect === 'contents') {
      // 2^53 - 1 is 8 PiB: a bigger size is corruption or an attack, never a real file.
      if (high > 0x1fffff)
        throw new NarFormatError(
          `file size ${formatU64(high, low)} of ${describePath(this.#nodePath)} is too large`,
          this.#tokenStart,
        )
      const size = high * 2 ** 32 + low
      const narOffset = this.#tokenStart + 8
      if (narOffset + size > Number.MAX_SAFE_INTEGER) {
        throw new NarFormatError(`file size ${size} of ${describePath(this.#nodePath)} is too large`, this.#tokenStart)
      }
      entries.push({ type: 'regular', path: this.#nodePath, size, executable: this.#executable, narOffset })
      this.#contentsLeft = size
      this.#paddingLeft = paddingFor(size)
      if (size > 0) this.#phase = 'contents'
      else this.#onTokenEnd(entries)
      return
    }

    const max = this.#maxStringBytes()
    if (this.#expect === 'magic' && (high !== 0 || low !== MAGIC.length)) {
      throw new NarFormatError(
        `input doesn't look like a Nix archive (first length word is ${formatU64(high, low)}, expected ${MAGIC.length})`,
        this.#tokenStart,
      )
    }
    if (high !== 0 || low > max) {
      throw new NarFormatError(
        `${this.#describeExpected()}, got a string of ${formatU64(high, low)} bytes (limit ${max})`,
        this.#tokenStart,
      )
    }
    this.#stringLength = low
    this.#stringFill = 0
    this.#paddingLeft = paddingFor(low)
    if (low > 0) this.#phase = 'bytes'
    else this.#onTokenEnd(entries)
  }

  #maxStringBytes(): number {
    switch (this.#expect) {
      case 'magic':
        return MAGIC.length
      case 'name':
        return MAX_NAME_BYTES
      case 'target':
        return MAX_TARGET_BYTES
      case 'executable-value':
        // Nix reads it with a limit of 0 and reports a non-empty value as an error.
        return 0
      default:
        return MAX_TAG_BYTES
    }
  }

  /**
   * A whole token (with its padding) has been read: advance the grammar. The token is
   * this.#string[0, this.#stringLength); views onto it are only made where needed (subarray allocates).
   */
  #onTokenEnd(entries: NarEntry[]): void {
    this.#phase = 'length'
    switch (this.#expect) {
      case 'contents':
        this.#expect = 'close'
        return
      case 'magic':
        return this.#onMagic()
      case 'open':
        return this.#step('(', 'type-key')
      case 'type-key':
        return this.#step('type', 'type')
      case 'type':
        return this.#onType(entries)
      case 'regular-field':
        return this.#onRegularField()
      case 'executable-value':
        // Only reachable with an empty value: #maxStringBytes() is 0 here.
        this.#executable = true
        this.#expect = 'contents-key'
        return
      case 'contents-key':
        return this.#step('contents', 'contents')
      case 'target-key':
        return this.#step('target', 'target')
      case 'target':
        return this.#onTarget(entries)
      case 'close':
        this.#expectTag(')')
        return this.#onNodeEnd()
      case 'dir-next':
        return this.#onDirectoryNext()
      case 'entry-open':
        return this.#step('(', 'name-key')
      case 'name-key':
        return this.#step('name', 'name')
      case 'name':
        return this.#onEntryName()
      case 'node-key':
        return this.#onEntryNode()
      case 'entry-close':
        return this.#step(')', 'dir-next')
    }
  }

  /** The token must be the keyword `tag`; then `next` comes. */
  #step(tag: string, next: Expect): void {
    this.#expectTag(tag)
    this.#expect = next
  }

  #onMagic(): void {
    const n = this.#stringLength
    if (!isTag(this.#string, n, MAGIC))
      throw new NarFormatError(
        `input doesn't look like a Nix archive (bad magic ${describeBytes(this.#string.subarray(0, n))})`,
        this.#tokenStart,
      )
    this.#nodePath = ''
    this.#nodePathBytes = 0
    this.#nodeDepth = 0
    this.#expect = 'open'
  }

  #onType(entries: NarEntry[]): void {
    const value = this.#string
    const n = this.#stringLength
    if (isTag(value, n, 'regular')) {
      this.#executable = false
      this.#expect = 'regular-field'
    } else if (isTag(value, n, 'symlink')) {
      this.#expect = 'target-key'
    } else if (isTag(value, n, 'directory')) {
      entries.push({ type: 'directory', path: this.#nodePath })
      this.#directories.push({
        path: this.#nodePath,
        pathBytes: this.#nodePathBytes,
        depth: this.#nodeDepth,
        prevName: undefined,
      })
      this.#expect = 'dir-next'
    } else {
      throw new NarFormatError(
        `unknown file type ${describeBytes(value.subarray(0, n))} for ${describePath(this.#nodePath)}`,
        this.#tokenStart,
      )
    }
  }

  #onRegularField(): void {
    const value = this.#string
    const n = this.#stringLength
    if (isTag(value, n, 'executable')) {
      this.#expect = 'executable-value'
    } else if (isTag(value, n, 'contents')) {
      this.#expect = 'contents'
    } else {
      throw new NarFormatError(
        `expected tag 'executable' or 'contents', got ${describeBytes(value.subarray(0, n))}`,
        this.#tokenStart,
      )
    }
  }

  #onTarget(entries: NarEntry[]): void {
    const n = this.#stringLength
    const target = this.#string.subarray(0, n)
    if (n === 0 || target.includes(0)) {
      throw new NarFormatError(
        `invalid symlink target ${describeBytes(target)} for ${describePath(this.#nodePath)} (empty or containing NUL)`,
        this.#tokenStart,
      )
    }
    entries.push({ type: 'symlink', path: this.#nodePath, target: utf8.decode(target) })
    this.#expect = 'close'
  }

  #onDirectoryNext(): void {
    const value = this.#string
    const n = this.#stringLength
    if (isTag(value, n, 'entry')) {
      this.#expect = 'entry-open'
    } else if (isTag(value, n, ')')) {
      this.#directories.pop()
      this.#onNodeEnd()
    } else {
      throw new NarFormatError(
        `expected tag 'entry' or ')', got ${describeBytes(value.subarray(0, n))}`,
        this.#tokenStart,
      )
    }
  }

  /** An entry's name: valid, and after the previous one in byte order. */
  #onEntryName(): void {
    const value = this.#string
    const n = this.#stringLength
    const at = this.#tokenStart
    const directory = this.#directories[this.#directories.length - 1]!
    if (!isValidName(value, n)) {
      throw new NarFormatError(
        `invalid entry name ${describeBytes(value.subarray(0, n))} in ${describePath(directory.path)}`,
        at,
      )
    }
    const name = value.slice(0, n)
    if (directory.prevName !== undefined && compareBytes(name, directory.prevName) <= 0) {
      const problem = compareBytes(name, directory.prevName) === 0 ? 'duplicate' : 'unsorted'
      throw new NarFormatError(
        `${problem} entry name ${describeBytes(name)} after ${describeBytes(directory.prevName)} in ${describePath(directory.path)} (entries must be in strictly increasing byte order)`,
        at,
      )
    }
    directory.prevName = name
    this.#pendingName = decodeName(name)
    this.#pendingNameBytes = n
    this.#expect = 'node-key'
  }

  /** The `node` tag of an entry: its node comes next, within the depth and path length limits. */
  #onEntryNode(): void {
    this.#expectTag('node')
    const at = this.#tokenStart
    const directory = this.#directories[this.#directories.length - 1]!
    const depth = directory.depth + 1
    const path = directory.path === '' ? this.#pendingName : `${directory.path}/${this.#pendingName}`
    const pathBytes = directory.path === '' ? this.#pendingNameBytes : directory.pathBytes + 1 + this.#pendingNameBytes
    if (depth >= MAX_NAR_DEPTH)
      throw new NarFormatError(
        `directory nesting exceeds the maximum depth of ${MAX_NAR_DEPTH} at ${describePath(path)}`,
        at,
      )
    if (pathBytes > MAX_PATH_BYTES)
      throw new NarFormatError(`the path ${describePath(path)} is longer than ${MAX_PATH_BYTES} bytes`, at)
    this.#nodePath = path
    this.#nodePathBytes = pathBytes
    this.#nodeDepth = depth
    this.#expect = 'open'
  }

  /** A node's ")" has been read: back to the enclosing directory entry, or done with the root. */
  #onNodeEnd(): void {
    if (this.#directories.length === 0) {
      this.#phase = 'done'
    } else {
      this.#expect = 'entry-close'
    }
  }

  #expectTag(tag: string): void {
    const n = this.#stringLength
    if (!isTag(this.#string, n, tag))
      throw new NarFormatError(
        `expected tag '${tag}', got ${describeBytes(this.#string.subarray(0, n))}`,
        this.#tokenStart,
      )
  }

  #describeExpected(): string {
    switch (this.#phase) {
      case 'contents':
        return `${this.#contentsLeft} bytes short in the contents of ${describePath(this.#nodePath)}`
      case 'padding':
        return `in padding`
      case 'done':
        return 'after the end of the archive'
      default:
        break
    }
    switch (this.#expect) {
      case 'magic':
        return `expected the magic '${MAGIC}'`
      case 'open':
      case 'entry-open':
        return `expected tag '('`
      case 'close':
      case 'entry-close':
        return `expected tag ')'`
      case 'type-key':
        return `expected tag 'type'`
      case 'type':
        return `expected a file type`
      case 'regular-field':
        return `expected tag 'executable' or 'contents'`
      case 'executable-value':
        return `expected the empty executable marker`
      case 'contents-key':
        return `expected tag 'contents'`
      case 'contents':
        return `expected the contents of ${describePath(this.#nodePath)}`
      case 'target-key':
        return `expected tag 'target'`
      case 'target':
        return `expected a symlink target`
      case 'dir-next':
        return `expected tag 'entry' or ')'`
      case 'name-key':
        return `expected tag 'name'`
      case 'name':
        return `expected an entry name`
      case 'node-key':
        return `expected tag 'node'`
    }
  }
}

function paddingFor(size: number): number {
  return (8 - (size % 8)) % 8
}

/** Whether value[0, n) is the ASCII keyword `tag`. */
function isTag(value: Uint8Array, n: number, tag: string): boolean {
  if (n !== tag.length) return false
  for (let i = 0; i < n; i++) if (value[i] !== tag.charCodeAt(i)) return false
  return true
}

/** Whether name[0, n) may name a directory entry: not empty, '.' or '..', and without '/' or NUL. */
function isValidName(name: Uint8Array, n: number): boolean {
  if (n === 0) return false
  for (let i = 0; i < n; i++) if (name[i] === 0x2f || name[i] === 0) return false
  return !(name[0] === 0x2e && (n === 1 || (n === 2 && name[1] === 0x2e)))
}

/** Byte-wise comparison, as Nix's std::string (unsigned char) order; JS string order differs for astral characters. */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) {
    const d = a[i]! - b[i]!
    if (d !== 0) return d
  }
  return a.length - b.length
}

// Most names are ASCII; building those directly avoids a TextDecoder call per entry.
function decodeName(bytes: Uint8Array): string {
  let ascii = ''
  for (let i = 0; i < bytes.length; i++) {
    const byte = bytes[i]!
    if (byte >= 0x80) return utf8.decode(bytes)
    ascii += String.fromCharCode(byte)
  }
  return ascii
}

function formatU64(high: number, low: number): string {
  return ((BigInt(high) << 32n) | BigInt(low)).toString()
}

// Paths reach 64 × 255 bytes; a message names the start of one, which is enough to find it.
function describePath(path: string): string {
  return path === '' ? 'the root' : JSON.stringify(path.length > 200 ? `${path.slice(0, 200)}…` : path)
}

function describeBytes(bytes: Uint8Array): string {
  const shown = utf8.decode(bytes.subarray(0, 64))
  return JSON.stringify(bytes.length > 64 ? `${shown}…` : shown)
}
