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
