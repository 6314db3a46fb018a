/**
 * The one shape of key unnar asks an upstream for: a relative path below the cache root
 * (`<hash>.narinfo`, `nar/<hash>.nar.xz`), optionally with a query (harmonia writes
 * `nar/<narhash>.nar?hash=<hash>`). A narinfo's `URL` is not covered by its signature, so whoever
 * controls or intercepts an upstream chooses it: anything a URL parser, a path resolver or an S3
 * client could read in more than one way is refused here, and each upstream then resolves the key
 * with the parser that makes its request and checks where the result points (see `locate` in each).
 */

/** Longer keys are refused (Nix writes 60-odd characters; harmonia about 100). */
export const MAX_KEY_LENGTH = 1024

/**
 * Why `key` is refused, or undefined when it is a plain relative path. Refused: control
 * characters, whitespace and non-ASCII (the WHATWG parser drops TAB/LF/CR anywhere and strips
 * leading controls and spaces); `\` (read as `/` by URL parsers of http(s)); `#`; a leading `/`; a
 * scheme (`https:host:port/x` is absolute without `//`); empty, `.` and `..` segments, also
 * percent-encoded; encoded `/`, `\`, NUL, controls and bytes above 0x7f (servers that decode them
 * before resolving dot segments, or overlong UTF-8 dots).
 */
export function keyProblem(key: string): string | undefined {
  if (key === '') return 'it is empty'
  if (key.length > MAX_KEY_LENGTH) return `it is longer than ${MAX_KEY_LENGTH} characters`
  const odd = /[^\x21-\x7e]/.exec(key)
  if (odd !== null) return `it contains ${describeChar(odd[0])}`
  if (key.includes('\\')) return 'it contains a backslash'
  if (key.includes('#')) return 'it contains a fragment (#)'
  const query = key.indexOf('?')
  const path = query < 0 ? key : key.slice(0, query)
  if (path.startsWith('/')) return 'it is an absolute path'
  const segments = path.split('/')
  // RFC 3986 4.2: a colon in the first segment makes it a scheme.
  if (segments[0]!.includes(':')) return 'it has a scheme'
  for (const segment of segments) {
    if (segment === '') return 'it has an empty path segment'
    const problem = segmentProblem(segment)
    if (problem !== undefined) return problem
  }
  return query < 0 ? undefined : escapesProblem(key.slice(query + 1))
}

function segmentProblem(segment: string): string | undefined {
  const escapes = escapesProblem(segment)
  if (escapes !== undefined) return escapes
  const plain = segment.replace(/%2e/gi, '.')
  return plain === '.' || plain === '..' ? 'it has a dot segment' : undefined
}

/** Percent-escapes must be complete and encode a printable ASCII byte other than `.`-as-a-segment's, `/` and `\`. */
function escapesProblem(text: string): string | undefined {
  for (const match of text.matchAll(/%(.{0,2})/gs)) {
    const hex = match[1]!
    if (!/^[0-9a-f]{2}$/i.test(hex)) return 'it has a broken percent-escape'
    const byte = Number.parseInt(hex, 16)
    if (byte < 0x20 || byte >= 0x7f) return `it has an encoded control or non-ASCII byte (%${hex})`
    if (byte === 0x2f || byte === 0x5c) return `it has an encoded ${byte === 0x2f ? 'slash' : 'backslash'} (%${hex})`
  }
  return undefined
}

function describeChar(char: string): string {
  const code = char.codePointAt(0)!
  if (code === 0x20) return 'a space'
  return code < 0x20 || code === 0x7f
    ? `a control character (U+${code.toString(16).padStart(4, '0').toUpperCase()})`
    : `a non-ASCII character (U+${code.toString(16).toUpperCase()})`
}
