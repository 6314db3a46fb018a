/** Test helper: builds NAR bytes from a tree description, or from raw tokens for malformed archives. */

export type NarTree =
  | { type: 'regular'; contents: string | Uint8Array; executable?: boolean }
  | { type: 'symlink'; target: string | Uint8Array }
  /** Entries are written in the order given (not sorted), so tests can build unsorted directories. */
  | { type: 'directory'; entries: readonly (readonly [name: string | Uint8Array, node: NarTree])[] }

const encoder = new TextEncoder()

export function bytes(value: string | Uint8Array): Uint8Array {
  return typeof value === 'string' ? encoder.encode(value) : value
}

/** An 8-byte little-endian unsigned integer. */
export function u64(value: number | bigint): Uint8Array {
  const out = new Uint8Array(8)
  new DataView(out.buffer).setBigUint64(0, BigInt(value), true)
  return out
}

export function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0))
  let at = 0
  for (const part of parts) {
    out.set(part, at)
    at += part.length
  }
  return out
}

/** Nix's `str(s)`: length word, the bytes, zero padding to a multiple of 8. */
export function str(value: string | Uint8Array): Uint8Array {
  const data = bytes(value)
  return concat([u64(data.length), data, new Uint8Array((8 - (data.length % 8)) % 8)])
}

/** `str()` of each part, concatenated: for hand-written (possibly malformed) token streams. */
export function tokens(...parts: (string | Uint8Array)[]): Uint8Array {
  return concat(parts.map(str))
}

export function regular(contents: string | Uint8Array, executable = false): NarTree {
  return { type: 'regular', contents, executable }
}

export function symlink(target: string): NarTree {
  return { type: 'symlink', target }
}

/** A directory whose entries are sorted in byte order, as Nix writes them. */
export function directory(entries: Record<string, NarTree> | readonly (readonly [string, NarTree])[]): NarTree {
  const pairs = Array.isArray(entries)
    ? [...(entries as readonly (readonly [string, NarTree])[])]
    : Object.entries(entries)
  pairs.sort(([a], [b]) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
  return { type: 'directory', entries: pairs }
}

export function nodeBytes(tree: NarTree): Uint8Array {
  switch (tree.type) {
    case 'regular':
      return concat([
        tokens('(', 'type', 'regular', ...(tree.executable === true ? ['executable', ''] : []), 'contents'),
        str(tree.contents),
        tokens(')'),
      ])
    case 'symlink':
      return concat([tokens('(', 'type', 'symlink', 'target'), str(tree.target), tokens(')')])
    case 'directory':
      return concat([
        tokens('(', 'type', 'directory'),
        ...tree.entries.map(([name, node]) =>
          concat([tokens('entry', '(', 'name', name, 'node'), nodeBytes(node), tokens(')')]),
        ),
        tokens(')'),
      ])
  }
}

/** A whole NAR: the magic, then the root node. */
export function buildNar(tree: NarTree): Uint8Array {
  return concat([str('nix-archive-1'), nodeBytes(tree)])
}
