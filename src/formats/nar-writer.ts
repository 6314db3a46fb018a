/**
 * Writes a listing node as a NAR: the framing bytes, with each regular file's contents left as a
 * reference to where they are in the NAR the listing was read from (the caller copies them).
 */
import type { ListingNode } from './listing.js'

// The grammar is nar-indexer.ts's; Nix writes the same tokens in the same order (archive.cc
// dumpPath): entries in the listing's order, which is the NAR's (byte order), and `executable ""`
// right before `contents`.

/** A run of framing bytes, or a file's contents to copy from the source NAR. */
export type NarPiece =
  | { readonly kind: 'bytes'; readonly bytes: Uint8Array }
  | { readonly kind: 'contents'; readonly narOffset: number; readonly size: number }

/** Framing is handed out in runs of about this size, so a huge directory's entries stream too. */
const FLUSH_BYTES = 64 * 1024

const encoder = new TextEncoder()

/** Collects framing tokens and hands them out as one run. */
class Framing {
  #parts: Uint8Array[] = []
  #bytes = 0

  /** Nix's `str(s)` for each word: a little-endian u64 length, the bytes, zero padding to 8. */
  words(...words: string[]): void {
    for (const word of words) {
      const data = encoder.encode(word)
      this.u64(data.length)
      this.#push(data)
      this.padding(data.length)
    }
  }

  u64(value: number): void {
    const out = new Uint8Array(8)
    new DataView(out.buffer).setBigUint64(0, BigInt(value), true)
    this.#push(out)
  }

  /** The zeros after `length` bytes of a string or of contents. */
  padding(length: number): void {
    const pad = (8 - (length % 8)) % 8
    if (pad > 0) this.#push(new Uint8Array(pad))
  }

  /** The run so far (nothing when empty); `force`: even if it is small. */
  *flush(force: boolean): Generator<NarPiece> {
    if (this.#bytes === 0 || (!force && this.#bytes < FLUSH_BYTES)) return
    const bytes = new Uint8Array(this.#bytes)
    let at = 0
    for (const part of this.#parts) {
      bytes.set(part, at)
      at += part.length
    }
    this.#parts = []
    this.#bytes = 0
    yield { kind: 'bytes', bytes }
  }

  #push(part: Uint8Array): void {
    this.#parts.push(part)
    this.#bytes += part.length
  }
}

/**
 * The NAR of `root` (a whole store path's, or any node's below it) as pieces, in order.
 * Throws when a regular file has no narOffset (a listing from unnar's own indexer always has them).
 * Names are written as UTF-8: a name that was not valid UTF-8 in the source NAR is not reproduced.
 * @example [...narPieces({ type: 'symlink', target: 'x' })] // one 'bytes' piece
 */
export function* narPieces(root: ListingNode): Generator<NarPiece> {
  const framing = new Framing()
  framing.words('nix-archive-1')
  yield* nodePieces(root, framing)
  yield* framing.flush(true)
}

function* nodePieces(node: ListingNode, framing: Framing): Generator<NarPiece> {
  framing.words('(', 'type')
  if (node.type === 'regular') {
    if (node.narOffset === undefined) throw new Error('a regular file without narOffset cannot be written')
    framing.words('regular', ...(node.executable ? ['executable', ''] : []), 'contents')
    framing.u64(node.size)
    if (node.size > 0) {
      yield* framing.flush(true)
      yield { kind: 'contents', narOffset: node.narOffset, size: node.size }
      framing.padding(node.size)
    }
  } else if (node.type === 'symlink') {
    framing.words('symlink', 'target', node.target)
  } else {
    framing.words('directory')
    for (const [name, child] of node.entries) {
      framing.words('entry', '(', 'name', name, 'node')
      yield* nodePieces(child, framing)
      framing.words(')')
      yield* framing.flush(false)
    }
  }
  framing.words(')')
}
