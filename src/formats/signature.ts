/**
 * Narinfo signatures: Nix's fingerprint, `name:base64` ed25519 keys, and the trust rule (one valid
 * signature by a trusted key, or a content address that recomputes to the path).
 *
 * fingerprint = "1;" StorePath ";" "sha256:" nix32(NarHash) ";" NarSize ";" sorted full reference paths joined by ","
 */
import { createHash, createPublicKey, verify, type KeyObject } from 'node:crypto'
import { formatHashHex, formatHashNix32, type Hash, hashEquals, parseHash } from './hash.js'
import type { NarInfo } from './narinfo.js'
import { encodeNix32 } from './nixbase32.js'
import { parseStorePath, type StorePath } from './store-path.js'

export interface PublicKey {
  readonly name: string
  readonly key: KeyObject
  /** As configured, `name:base64`. */
  readonly text: string
}

export class SignatureError extends Error {
  override readonly name = 'SignatureError'
}

export const CACHE_NIXOS_ORG_KEY = 'cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY='

/** `name:base64(32 bytes)`, split at the first colon like Nix's parseColonBase64. */
export function parsePublicKey(text: string): PublicKey {
  const colon = text.indexOf(':')
  const name = text.slice(0, colon)
  const raw = Buffer.from(text.slice(colon + 1), 'base64')
  if (colon <= 0 || raw.length !== 32)
    throw new SignatureError(`not a public key (expected name:base64 of 32 bytes): ${describe(text)}`)
  const key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: raw.toString('base64url') }, format: 'jwk' })
  return { name, key, text }
}

/** Space-separated keys (Nix's `trusted-public-keys`); of two keys with one name the first wins. */
export function parsePublicKeys(text: string): PublicKey[] {
  const keys: PublicKey[] = []
  for (const word of text.split(/\s+/).filter((w) => w !== '')) {
    const key = parsePublicKey(word)
    if (!keys.some((k) => k.name === key.name)) keys.push(key)
  }
  return keys
}

export function fingerprint(info: NarInfo, storeDir = '/nix/store'): string {
  const refs = [...new Set(info.references.map((r) => `${storeDir}/${r}`))].sort(compareUtf8)
  return `1;${info.storePath};${formatHashNix32(info.narHash)};${info.narSize};${refs.join(',')}`
}

/** The name of the first trusted key with a valid signature on `info`, or undefined. */
export function verifyNarInfo(info: NarInfo, keys: readonly PublicKey[], storeDir = '/nix/store'): string | undefined {
  const message = Buffer.from(fingerprint(info, storeDir))
  for (const sig of info.sigs) {
    const colon = sig.indexOf(':')
    const key = keys.find((k) => k.name === sig.slice(0, colon))
    if (colon <= 0 || key === undefined) continue
    const raw = Buffer.from(sig.slice(colon + 1), 'base64')
    if (raw.length !== 64) continue
    if (verify(null, message, key.key, raw)) return key.name
  }
  return undefined
}

/**
 * Nix trusts a content-addressed path without signatures when its `CA` recomputes to the store
 * path and, on import, the content matches the CA hash ("ca hash mismatch" otherwise). unnar checks
 * the NAR only against NarHash, so the only CA it can hold to its content is `fixed:r:sha256:H`
 * with H equal to the NarHash: anything else would let a forged NAR with a matching NarHash pass as
 * trusted. Flat (`fixed:`), `text:` and other algorithms hash the file's contents, not the NAR, and
 * need a signature here.
 */
export function isContentAddressed(info: NarInfo, storeDir = '/nix/store'): boolean {
  if (info.ca === undefined || !info.ca.startsWith('fixed:r:sha256:')) return false
  let hash: Hash
  try {
    hash = parseHash(info.ca.slice('fixed:r:'.length))
  } catch {
    return false
  }
  if (!hashEquals(hash, info.narHash)) return false
  let path: StorePath
  try {
    path = parseStorePath(info.storePath, storeDir)
  } catch {
    return false
  }
  const self = `${path.hash}-${path.name}`
  const others = info.references
    .filter((r) => r !== self)
    .map((r) => `${storeDir}/${r}`)
    .sort(compareUtf8)
  const hasSelf = info.references.includes(self)
  return (
    makeStorePath(['source', ...others, ...(hasSelf ? ['self'] : [])].join(':'), hash, path.name, storeDir) ===
    info.storePath
  )
}

function makeStorePath(
  type: string,
  hash: { algorithm: string; digest: Uint8Array },
  name: string,
  storeDir: string,
): string {
  const fp = `${type}:${hash.algorithm}:${formatHashHex(hash as Parameters<typeof formatHashHex>[0])}:${storeDir}:${name}`
  const full = createHash('sha256').update(fp).digest()
  const folded = new Uint8Array(20)
  for (let i = 0; i < full.length; i++) folded[i % 20]! ^= full[i]!
  return `${storeDir}/${encodeNix32(folded)}-${name}`
}

function compareUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b))
}

// Quoted and shortened: a pasted file must not come back whole in an error.
function describe(text: string): string {
  return JSON.stringify(text.length > 120 ? `${text.slice(0, 120)}…` : text)
}
