/** Parses `/nix/store/<hash>[-<name>][/<path>]` request paths into checked, decoded segments. */
import { isStoreHash } from '../formats/store-path.js'
import { HttpError } from './errors.js'

export interface StoreRequest {
  readonly hash: string
  /** The name after `<hash>-`, when the request gave one. */
  readonly name: string | undefined
  /** Decoded path segments inside the store path. */
  readonly segments: readonly string[]
  readonly trailingSlash: boolean
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
    throw new HttpError(400, `not a store path: "${base}" (expected a 32-character nix32 hash)`)
  }
  const name = base.length > 33 ? base.slice(33) : undefined
  return { hash, name, segments, trailingSlash }
}

function decodeSegment(segment: string): string {
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
