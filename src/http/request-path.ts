/** Parses `/nix/store/<hash>[-<name>][/<path>]` request paths into checked, decoded segments. */
import type { Context } from 'hono'
import { isStoreHash } from '../formats/store-path.js'
import { HttpError } from './errors.js'
import { incomingOf } from './node-env.js'

export interface StoreRequest {
  readonly hash: string
  /** The name after `<hash>-`, when the request gave one. */
  readonly name: string | undefined
  /** Decoded path segments inside the store path. */
  readonly segments: readonly string[]
  readonly trailingSlash: boolean
}

/**
 * The URL path exactly as the client sent it: still percent-encoded, dot segments kept. node-server
 * resolves `..`, `%2e%2e` and `\` while it builds the Request URL, so `c.req.url` would turn
 * `/nix/store/<a>/../<b>/f` into a request for store path b.
 */
export function requestPath(c: Context): string {
  const target = incomingOf(c)?.url
  return target === undefined ? new URL(c.req.url).pathname : targetPath(target)
}

/** The path of a request target in origin form (`/p?q`) or absolute form (`http://host/p?q`), undecoded. */
export function targetPath(target: string): string {
  const path = target.startsWith('/') ? target : target.replace(/^[a-zA-Z][a-zA-Z0-9+.-]*:\/\/[^/?#]*/, '')
  return path.split(/[?#]/, 1)[0] ?? ''
}

/**
 * What follows `<storeDir>/` in a path as the client sent it. A path routed to the store that does
 * not start there only got there through dot segments (`/x/../nix/store/…`): 400.
 */
export function storeRequestRest(path: string, storeDir: string): string {
  const prefix = `${storeDir}/`
  if (!path.startsWith(prefix)) throw new HttpError(400, '"." and ".." segments are not allowed in a path')
  return path.slice(prefix.length)
}

/** `rest` is what follows the store dir and its slash, still percent-encoded. Throws HttpError 400. */
export function parseStoreRequest(rest: string): StoreRequest {
  const raw = rest.split('/')
  const trailingSlash = raw.length > 1 && raw[raw.length - 1] === ''
  if (trailingSlash) raw.pop()
  const decoded = raw.map(decodeSegment)
  const [base, ...segments] = decoded as [string, ...string[]]
  const hash = base.slice(0, 32)
  if (!isStoreHash(hash) || (base.length > 32 && base[32] !== '-')) {
    throw new HttpError(400, `not a store path: ${describe(base)} (expected a 32-character nix32 hash)`)
  }
  const name = base.length > 33 ? base.slice(33) : undefined
  return { hash, name, segments, trailingSlash }
}

function decodeSegment(segment: string): string {
  // URL parsers read a bare `\` as `/` (WHATWG, for http URLs); a name with one must encode it as %5C.
  if (segment.includes('\\')) throw new HttpError(400, 'a backslash must be percent-encoded in a path')
  let decoded: string
  try {
    decoded = decodeURIComponent(segment)
  } catch {
    throw new HttpError(400, 'malformed percent-encoding in the path')
  }
  if (decoded === '') throw new HttpError(400, 'empty path segment ("//")')
  if (decoded === '.' || decoded === '..') throw new HttpError(400, `"${decoded}" is not allowed in a path`)
  if (decoded.includes('\0')) throw new HttpError(400, 'NUL is not allowed in a path')
  if (decoded.includes('/')) throw new HttpError(400, 'an encoded "/" is not allowed inside a path segment')
  return decoded
}

// Quoted, and shortened so a 10 KB path does not come back whole in the answer and the log.
function describe(text: string): string {
  return JSON.stringify(text.length > 100 ? `${text.slice(0, 100)}…` : text)
}
