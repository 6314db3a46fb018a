/** Directory listings for machines: `.ls`-style JSON and an `ls -l`-like text, plus format negotiation. */
import type { ListingNode } from '../formats/listing.js'

type DirectoryNode = Extract<ListingNode, { type: 'directory' }>
export type ListingFormat = 'html' | 'json' | 'text'

/** `?json` wins; then whichever of HTML and JSON the Accept header names; curl's `*\/*` gets text. */
export function negotiateListingFormat(accept: string | undefined, jsonQuery: boolean): ListingFormat {
  if (jsonQuery) return 'json'
  if (accept === undefined) return 'text'
  const html = accept.indexOf('text/html')
  const json = accept.indexOf('application/json')
  if (html >= 0 && (json < 0 || html < json)) return 'html'
  if (json >= 0) return 'json'
  return 'text'
}

/**
 * The directory with its entries one level deep, keys in a fixed order (type, size, executable,
 * target, entries): byte-stable whatever the upstream's `.ls` looked like. Offsets are left out
 * because they depend on whether the NAR is cached.
 */
export function formatDirectoryJson(directory: DirectoryNode): string {
  const entries: Record<string, unknown> = {}
  for (const [name, node] of directory.entries) entries[name] = shallow(node)
  return JSON.stringify({ type: 'directory', entries }) + '\n'
}

function shallow(node: ListingNode): Record<string, unknown> {
  switch (node.type) {
    case 'regular':
      return { type: 'regular', size: node.size, executable: node.executable }
    case 'symlink':
      return { type: 'symlink', target: node.target }
    case 'directory':
      return { type: 'directory' }
  }
}

/**
 * One entry per line: mode as Nix shows it, size, name (directories end in `/`), `-> target`.
 * Names and targets are escaped as GNU `ls -b` does in a UTF-8 locale, so a name cannot make a
 * line of its own (a newline in a name is `\n`) or pass for another entry.
 */
export function formatDirectoryText(directory: DirectoryNode): string {
  const lines: string[] = []
  for (const [entry, node] of directory.entries) {
    const name = escapeLikeLs(entry)
    if (node.type === 'regular') lines.push(`${node.executable ? '-r-xr-xr-x' : '-r--r--r--'} ${String(node.size).padStart(12)} ${name}`)
    else if (node.type === 'symlink') lines.push(`lrwxrwxrwx ${'-'.padStart(12)} ${name} -> ${escapeLikeLs(node.target)}`)
    else lines.push(`dr-xr-xr-x ${'-'.padStart(12)} ${name}/`)
  }
  return lines.join('\n') + (lines.length > 0 ? '\n' : '')
}

const C_ESCAPES: Readonly<Record<string, string>> = { '\\': '\\\\', ' ': '\\ ', '\x07': '\\a', '\b': '\\b', '\f': '\\f', '\n': '\\n', '\r': '\\r', '\t': '\\t', '\v': '\\v' }

/**
 * GNU `ls -b`: backslash, space and the C escapes (`\n`, `\t`…) as such; other characters a
 * terminal does not print as themselves (C0 and C1 controls, DEL, U+2028/U+2029) as the octal
 * of their UTF-8 bytes (`\033`, `\302\205`).
 */
export function escapeLikeLs(text: string): string {
  return text.replace(/[\\ \x00-\x1f\x7f-\x9f\u2028\u2029]/g, (char) => C_ESCAPES[char] ?? [...Buffer.from(char, 'utf8')].map((byte) => `\\${byte.toString(8).padStart(3, '0')}`).join(''))
}
