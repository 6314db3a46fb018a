/** Nix store paths: `<storeDir>/<32-char nix32 hash>-<name>`, and their base names `<hash>-<name>`. */
import { isNix32 } from './nixbase32.js'

// Rules from Nix's path.cc and path-regex.hh. Binary caches are keyed by the hash part alone
// (`<hash>.narinfo`, `<hash>.ls`), so validating it strictly keeps odd keys away from upstreams.

/** Length of the hash part: 20 bytes (160 bits) in nix32. */
export const STORE_HASH_LENGTH = 32
/** Nix's `MaxPathLen` for the name part. */
export const MAX_STORE_NAME_LENGTH = 211
export const DEFAULT_STORE_DIR = '/nix/store'

export interface StorePath {
  readonly storeDir: string
  readonly hash: string
  readonly name: string
}

export class StorePathError extends Error {
  override readonly name = 'StorePathError'
}

/** Exactly 32 characters of the nix32 alphabet. */
export function isStoreHash(text: string): boolean {
  return text.length === STORE_HASH_LENGTH && isNix32(text)
}

/**
 * A valid name part: 1..211 characters of `[0-9a-zA-Z+\-._?=]`, and, as newer Nix requires
 * (path-regex.hh), not `.` or `..` and not starting with `.-` or `..-`. Nix 2.8 did not check the
 * latter; no real store path breaks it, and such a name could be mistaken for a relative path.
 */
export function isStoreName(text: string): boolean {
  return (
    text.length >= 1 &&
    text.length <= MAX_STORE_NAME_LENGTH &&
    /^[0-9a-zA-Z+\-._?=]+$/.test(text) &&
    !/^\.\.?(-|$)/.test(text)
  )
}

/**
 * Splits `<hash>-<name>` and validates both parts. Throws StorePathError naming the bad part.
 * @example parseStoreBaseName('1k87k4082pzf85pfmqzjslxn34n5vrjn-fixture-dep-1') // { hash: '1k87…', name: 'fixture-dep-1' }
 */
export function parseStoreBaseName(baseName: string): { hash: string; name: string } {
  const hash = baseName.slice(0, STORE_HASH_LENGTH)
  if (!isStoreHash(hash)) {
    throw new StorePathError(
      `invalid store path base name ${describe(baseName)}: it must start with ${STORE_HASH_LENGTH} nix32 characters`,
    )
  }
  if (baseName[STORE_HASH_LENGTH] !== '-') {
    throw new StorePathError(`invalid store path base name ${describe(baseName)}: expected '-' after the hash part`)
  }
  const name = baseName.slice(STORE_HASH_LENGTH + 1)
  if (!isStoreName(name)) {
    throw new StorePathError(
      `invalid store path base name ${describe(baseName)}: the name must be 1 to ${MAX_STORE_NAME_LENGTH} characters of [0-9a-zA-Z+-._?=], not '.', '..', '.-…' or '..-…'`,
    )
  }
  return { hash, name }
}

/**
 * Parses a full store path directly inside `storeDir` (compared exactly, as Nix does; no
 * normalisation). A path below a store path (`…-name/bin/x`) is an error, not a store path.
 */
export function parseStorePath(path: string, storeDir: string = DEFAULT_STORE_DIR): StorePath {
  const slash = path.lastIndexOf('/')
  const dir = path.slice(0, Math.max(slash, 0))
  if (slash < 0 || dir !== storeDir) {
    throw new StorePathError(`path ${describe(path)} is not directly in the store directory ${describe(storeDir)}`)
  }
  const { hash, name } = parseStoreBaseName(path.slice(slash + 1))
  return { storeDir, hash, name }
}

export function formatStorePath(p: StorePath): string {
  return `${p.storeDir}/${p.hash}-${p.name}`
}

function describe(text: string): string {
  return JSON.stringify(text.length > 300 ? `${text.slice(0, 300)}…` : text)
}
