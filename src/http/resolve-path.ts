/** Resolves a path inside a store path, following symlinks like a filesystem would, within limits. */
import path from 'node:path/posix'
import type { ListingNode } from '../formats/listing.js'
import { isStoreHash, isStoreName, STORE_HASH_LENGTH } from '../formats/store-path.js'

/** Linux's MAXSYMLINKS: more hops than this is treated as a loop. */
export const MAX_SYMLINK_HOPS = 40

export type NodeLookup = (segments: readonly string[]) => Promise<ListingNode | undefined>

export type Resolution =
  | { readonly kind: 'found'; readonly segments: readonly string[]; readonly node: ListingNode }
  /** The path leads elsewhere: the client should go to `location` (an absolute URL path). */
  | { readonly kind: 'redirect'; readonly location: string }
  | { readonly kind: 'missing'; readonly reason: string }

/**
 * Symlinks in the middle of the path are followed here, so `/bin/../lib`-style layouts work without
 * a round trip; a symlink as the last component becomes a redirect to where its chain ends, so the
 * browser's URL names the real file and relative links inside it work. `base` is the store path
 * (`/nix/store/<hash>-<name>`), `storeDir` its directory. `immediate`: `lookup` answers at once (a
 * complete listing), so the whole path may be looked up first; on a NAR still downloading, a
 * lookup of a path through a symlink would wait for the whole NAR.
 */
export async function resolveStorePath(
  lookup: NodeLookup,
  base: string,
  storeDir: string,
  requested: readonly string[],
  immediate = false,
): Promise<Resolution> {
  if (immediate) {
    // Most paths cross no symlink: one lookup of the whole path finds what the walk below would,
    // without a lookup per component. A symlink on the way, or nothing there, takes the walk.
    const direct = await lookup(requested)
    if (direct !== undefined && direct.type !== 'symlink') return { kind: 'found', segments: requested, node: direct }
  }
  let current: string[] = []
  let remaining = [...requested]
  let hops = 0
  let lastIsLink = false
  let node: ListingNode | undefined = await lookup([])
  if (node === undefined) return { kind: 'missing', reason: 'the NAR has no root' }
  if (node.type === 'symlink') {
    // The store path itself is a symlink; like any entry of the store dir, it is relative to it.
    const target = linkTarget(storeDir, node.target)
    if (target === base || target.startsWith(base + '/'))
      return { kind: 'missing', reason: `the store path is a symlink into itself (${shorten(node.target)})` }
    if (isInStorePath(storeDir, target))
      return { kind: 'redirect', location: encodeAbsolute([...splitPath(target), ...remaining]) }
    return { kind: 'missing', reason: `the store path is a symlink outside the Nix store (${shorten(node.target)})` }
  }
  while (remaining.length > 0) {
    if (node.type !== 'directory') return { kind: 'missing', reason: `${display(current)} is not a directory` }
    const segment = remaining.shift()!
    const candidate = [...current, segment]
    node = await lookup(candidate)
    if (node === undefined) {
      return {
        kind: 'missing',
        reason:
          hops > 0
            ? `dangling symlink: ${display(candidate)} does not exist`
            : `no such file or directory: ${display(candidate)}`,
      }
    }
    if (node.type !== 'symlink') {
      current = candidate
      continue
    }
    if (++hops > MAX_SYMLINK_HOPS)
      return { kind: 'missing', reason: `too many levels of symbolic links at ${display(candidate)} (a loop?)` }
    if (remaining.length === 0) lastIsLink = true
    const target = linkTarget(path.join(base, ...current), node.target)
    if (target === base || target.startsWith(base + '/')) {
      current = []
      remaining = [...splitPath(target.slice(base.length)), ...remaining]
      node = await lookup([])
      if (node === undefined) return { kind: 'missing', reason: 'the NAR has no root' }
      continue
    }
    if (isInStorePath(storeDir, target)) {
      // Another store path: its narinfo may live elsewhere, so let the client ask for it.
      return { kind: 'redirect', location: encodeAbsolute([...splitPath(target), ...remaining]) }
    }
    return {
      kind: 'missing',
      reason: `symlink ${display(candidate)} points outside the Nix store (${shorten(node.target)})`,
    }
  }
  if (lastIsLink) {
    const suffix = node.type === 'directory' ? '/' : ''
    return { kind: 'redirect', location: encodeAbsolute([...splitPath(base), ...current]) + suffix }
  }
  return { kind: 'found', segments: current, node }
}

/**
 * Whether `target` (normalized) is a store path or a path inside one: a link that climbs out of
 * its store path to `/nix/store/build-essential/list` leaves the store as surely as `/etc/passwd`.
 */
function isInStorePath(storeDir: string, target: string): boolean {
  if (!target.startsWith(storeDir + '/')) return false
  const base = target.slice(storeDir.length + 1).split('/', 1)[0]!
  return (
    isStoreHash(base.slice(0, STORE_HASH_LENGTH)) &&
    base[STORE_HASH_LENGTH] === '-' &&
    isStoreName(base.slice(STORE_HASH_LENGTH + 1))
  )
}

/** Where a symlink in `dir` points: normalized and without a trailing slash, so `/nix/store/` is the store dir, not a path in it. */
function linkTarget(dir: string, target: string): string {
  const resolved = path.normalize(target.startsWith('/') ? target : path.join(dir, target))
  return resolved.length > 1 ? resolved.replace(/\/+$/, '') : resolved
}

function splitPath(p: string): string[] {
  return p.split('/').filter((s) => s !== '')
}

function encodeAbsolute(segments: readonly string[]): string {
  return '/' + segments.map(encodeURIComponent).join('/')
}

function display(segments: readonly string[]): string {
  return segments.length === 0 ? '/' : shorten(segments.join('/'))
}

// Targets come from upstream listings and paths from clients: keep a hostile one from filling the answer and the log.
function shorten(text: string): string {
  return text.length > 200 ? `${text.slice(0, 200)}…` : text
}
