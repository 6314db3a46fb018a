/** Directory listings for machines: `.ls`-style JSON and an `ls -l`-like text, plus format negotiation. */
import type { ListingNode } from '../formats/listing.js'

type DirectoryNode = Extract<ListingNode, { type: 'directory' }>
export type ListingFormat = 'html' | 'json' | 'text'

/** Clients whose users read listings in a terminal: they get text for `*\/*` (as wttr.in-style services do). */
const TEXT_CLIENTS = /^(curl|HTTPie|xh)\//i

/** Offered formats in the order that wins a tie on quality between wildcard matches. */
const FORMATS: ReadonlyArray<readonly [ListingFormat, string]> = [
  ['html', 'text/html'],
  ['json', 'application/json'],
  ['text', 'text/plain'],
]

/**
 * `?json` wins. Otherwise the Accept header decides, by quality (RFC 9110 12.5.1): a format named
 * outright beats one a wildcard covers at the same quality, and among those named the first listed
 * wins. What only a wildcard (or no Accept at all) allows is HTML, as nginx's and Apache's
 * autoindex send every client, so wget, rclone and lftp can walk the tree; except for curl, HTTPie
 * and xh, whose users read the answer in a terminal: plain text. Nothing acceptable: the same default.
 */
export function negotiateListingFormat(
  accept: string | undefined,
  userAgent: string | undefined,
  jsonQuery: boolean,
): ListingFormat {
  if (jsonQuery) return 'json'
  const ranges = parseAccept(accept ?? '*/*')
  let best: { format: ListingFormat; q: number; named: boolean; at: number } | undefined
  for (const [format, type] of FORMATS) {
    const match = bestRange(ranges, type)
    if (match === undefined || match.q <= 0) continue
    const candidate = { format, q: match.q, named: match.named, at: match.at }
    if (
      best === undefined ||
      candidate.q > best.q ||
      (candidate.q === best.q && candidate.named && (!best.named || candidate.at < best.at))
    )
      best = candidate
  }
  const byClient: ListingFormat = TEXT_CLIENTS.test(userAgent ?? '') ? 'text' : 'html'
  if (best === undefined) return byClient
  if (best.named) return best.format
  // Only wildcards matched: the client's default, if the wildcards allow it as much as the best.
  const fallback = bestRange(ranges, byClient === 'text' ? 'text/plain' : 'text/html')
  return fallback !== undefined && fallback.q >= best.q ? byClient : best.format
}

interface MediaRange {
  readonly type: string
  readonly subtype: string
  readonly q: number
  readonly at: number
}

function parseAccept(header: string): MediaRange[] {
  const ranges: MediaRange[] = []
  for (const [at, part] of header.split(',').entries()) {
    const [range = '', ...params] = part.split(';').map((p) => p.trim())
    const slash = range.indexOf('/')
    if (slash <= 0) continue
    let q = 1
    for (const param of params) {
      const match = /^q\s*=\s*([01](?:\.\d{0,3})?)$/i.exec(param)
      if (match !== null) q = Number(match[1])
    }
    ranges.push({ type: range.slice(0, slash).toLowerCase(), subtype: range.slice(slash + 1).toLowerCase(), q, at })
  }
  return ranges
}

/** The most specific range that covers `mediaType` (its quality decides, RFC 9110 12.5.1). */
function bestRange(
  ranges: readonly MediaRange[],
  mediaType: string,
): { q: number; named: boolean; at: number } | undefined {
  const [type, subtype] = mediaType.split('/') as [string, string]
  let found: { q: number; specificity: number; at: number } | undefined
  for (const range of ranges) {
    const specificity =
      range.type === type && range.subtype === subtype
        ? 2
        : range.type === type && range.subtype === '*'
          ? 1
          : range.type === '*' && range.subtype === '*'
            ? 0
            : -1
    if (specificity < 0 || (found !== undefined && found.specificity >= specificity)) continue
    found = { q: range.q, specificity, at: range.at }
  }
  return found === undefined ? undefined : { q: found.q, named: found.specificity === 2, at: found.at }
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

/** A node without its entries, keys in the order the JSON listing uses. */
export function shallow(node: ListingNode): Record<string, unknown> {
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
    if (node.type === 'regular')
      lines.push(`${node.executable ? '-r-xr-xr-x' : '-r--r--r--'} ${String(node.size).padStart(12)} ${name}`)
    else if (node.type === 'symlink')
      lines.push(`lrwxrwxrwx ${'-'.padStart(12)} ${name} -> ${escapeLikeLs(node.target)}`)
    else lines.push(`dr-xr-xr-x ${'-'.padStart(12)} ${name}/`)
  }
  return lines.join('\n') + (lines.length > 0 ? '\n' : '')
}

const C_ESCAPES: Readonly<Record<string, string>> = {
  '\\': '\\\\',
  ' ': '\\ ',
  '\x07': '\\a',
  '\b': '\\b',
  '\f': '\\f',
  '\n': '\\n',
  '\r': '\\r',
  '\t': '\\t',
  '\v': '\\v',
}

/**
 * GNU `ls -b`: backslash, space and the C escapes (`\n`, `\t`…) as such; other characters a
 * terminal does not print as themselves (C0 and C1 controls, DEL, U+2028/U+2029) as the octal
 * of their UTF-8 bytes (`\033`, `\302\205`).
 */
export function escapeLikeLs(text: string): string {
  return text.replace(
    /[\\ \x00-\x1f\x7f-\x9f\u2028\u2029]/g,
    (char) =>
      C_ESCAPES[char] ??
      [...Buffer.from(char, 'utf8')].map((byte) => `\\${byte.toString(8).padStart(3, '0')}`).join(''),
  )
}
