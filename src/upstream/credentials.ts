/**
 * Where an HTTP upstream's Authorization header comes from. Precedence: credentials in the cache URL
 * (Basic), then a bearer token for the host (UNNAR_UPSTREAM_TOKENS), then the netrc entry for the host
 * (Basic). The header is only ever sent to the cache's own origin (see HttpUpstream).
 */
import { readFileSync } from 'node:fs'
import { findNetrcEntry, type NetrcEntry, parseNetrc } from '../formats/netrc.js'

export interface UpstreamCredentials {
  /** Parsed netrc entries (NETRC / --netrc-file). */
  readonly netrc?: readonly NetrcEntry[] | undefined
  /** Bearer tokens by `host` or `host:port` (lower-case). */
  readonly tokens?: ReadonlyMap<string, string> | undefined
}

export type CredentialSource = 'url' | 'token' | 'netrc'

export interface Authorization {
  /** The Authorization header value: a secret. */
  readonly header: string
  /** Where it came from: safe to show. */
  readonly source: CredentialSource
}

/** Reads and parses a netrc file; the error message names the file and the reason, never its content. */
export function readNetrcFile(file: string): NetrcEntry[] {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new Error(`cannot read "${file}": ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  }
  try {
    return parseNetrc(text)
  } catch (err) {
    throw new Error(`"${file}" ${(err as Error).message}`)
  }
}

/**
 * `host=token` entries separated by whitespace (UNNAR_UPSTREAM_TOKENS, or a tokens file). A bad
 * entry is named by its place, never by its text: a token pasted without its host (`c2VjcmV0==`)
 * would otherwise be quoted up to its first `=`.
 */
export function parseTokens(source: string, place: 'entry' | 'line'): Map<string, string> {
  const tokens = new Map<string, string>()
  let index = 0
  for (const [lineIndex, line] of source.split('\n').entries()) {
    for (const entry of line.split(/\s+/).filter((e) => e !== '')) {
      index++
      const eq = entry.indexOf('=')
      const host = entry.slice(0, eq).toLowerCase()
      if (eq <= 0 || eq === entry.length - 1 || !/^[a-z0-9.-]+(:\d+)?$/.test(host)) {
        throw new Error(
          `${place === 'line' ? `line ${lineIndex + 1}` : `entry ${index}`} is not host=token (host: letters, digits, dots and dashes, optionally :port)`,
        )
      }
      tokens.set(host, entry.slice(eq + 1))
    }
  }
  return tokens
}

/** A tokens file's entries: one per line, `#` comments at the start of a line or after a blank. */
export function readTokensFile(file: string): Map<string, string> {
  let content: string
  try {
    content = readFileSync(file, 'utf8')
  } catch (err) {
    throw new Error(`cannot read "${file}": ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  }
  // A comment starts a line or follows a blank; a `#` inside a token is part of it.
  return parseTokens(content.replace(/(^|\s)#.*$/gm, '$1'), 'line')
}

/** The Authorization for requests to `url` (which may still carry `user:pass@`), or undefined. */
export function authorizationFor(url: URL, credentials: UpstreamCredentials = {}): Authorization | undefined {
  if (url.username !== '' || url.password !== '') {
    return { header: basic(decodeURIComponent(url.username), decodeURIComponent(url.password)), source: 'url' }
  }
  const token = tokenFor(url, credentials.tokens)
  if (token !== undefined) return { header: `Bearer ${token}`, source: 'token' }
  const entry = credentials.netrc === undefined ? undefined : findNetrcEntry(credentials.netrc, url.hostname)
  if (entry !== undefined) return { header: basic(entry.login ?? '', entry.password ?? ''), source: 'netrc' }
  return undefined
}

/** `host:port` (with the scheme's default port filled in) first, then the bare host. */
function tokenFor(url: URL, tokens: ReadonlyMap<string, string> | undefined): string | undefined {
  if (tokens === undefined || tokens.size === 0) return undefined
  const host = url.hostname.toLowerCase()
  const port = url.port !== '' ? url.port : url.protocol === 'https:' ? '443' : '80'
  return tokens.get(`${host}:${port}`) ?? tokens.get(host)
}

function basic(user: string, password: string): string {
  return 'Basic ' + Buffer.from(`${user}:${password}`).toString('base64')
}
