/** Nix hash strings (`sha256:<base16|nix32|base64>` and SRI `sha256-<base64>`) parsed into algorithm + digest. */
import { Nix32Error, decodeNix32, encodeNix32, nix32Length } from './nixbase32.js'

export type HashAlgorithm = 'md5' | 'sha1' | 'sha256' | 'sha512'

/** A digest is always a plain Uint8Array (never a Buffer), so deep-equality of parsed values is predictable. */
export interface Hash {
  readonly algorithm: HashAlgorithm
  readonly digest: Uint8Array
}

/** How the digest was written: Nix picks the decoder from the string length alone. */
export type HashEncoding = 'base16' | 'nix32' | 'base64' | 'sri'

export class HashError extends Error {
  override readonly name = 'HashError'
}

/** Digest size in bytes of each algorithm Nix knows. */
export const HASH_BYTE_LENGTHS: Readonly<Record<HashAlgorithm, number>> = { md5: 16, sha1: 20, sha256: 32, sha512: 64 }

/**
 * Parses `<algo>:<digest>` (digest in base16, nix32 or base64, told apart by length as Nix's
 * `Hash::parseAnyPrefixed` does) or SRI `<algo>-<base64>`. Throws HashError naming the problem.
 * @example parseHash('sha256:0h40zg6hakjv951nyhdad7mv9za56m3za5gnpiw5s1hbwcxzdrq3')
 */
export function parseHash(text: string): Hash {
  return parseHashWithEncoding(text).hash
}

/** Like parseHash, but also says which encoding the digest used (narinfo records hex NarHash as a quirk). */
export function parseHashWithEncoding(text: string): { hash: Hash; encoding: HashEncoding } {
  // Nix splits at the first ':' and only falls back to SRI's '-' when there is none.
  const colon = text.indexOf(':')
  const sri = colon < 0
  const separator = sri ? text.indexOf('-') : colon
  if (separator < 0) throw new HashError(`hash ${describe(text)} has no '<algorithm>:' or SRI '<algorithm>-' prefix`)
  const algorithm = text.slice(0, separator)
  if (!isHashAlgorithm(algorithm))
    throw new HashError(`unknown hash algorithm ${describe(algorithm)} in ${describe(text)}`)
  const size = HASH_BYTE_LENGTHS[algorithm]
  const rest = text.slice(separator + 1)

  if (sri) {
    const digest = decodeBase64(rest, size)
    if (digest === undefined)
      throw new HashError(`invalid SRI hash ${describe(text)}: expected ${base64Length(size)} base64 characters`)
    return { hash: { algorithm, digest }, encoding: 'sri' }
  }
  if (rest.length === size * 2) {
    if (!/^[0-9a-fA-F]*$/.test(rest)) throw new HashError(`invalid base16 digest in ${describe(text)}`)
    return { hash: { algorithm, digest: new Uint8Array(Buffer.from(rest, 'hex')) }, encoding: 'base16' }
  }
  if (rest.length === nix32Length(size)) {
    try {
      return { hash: { algorithm, digest: decodeNix32(rest) }, encoding: 'nix32' }
    } catch (error) {
      if (error instanceof Nix32Error)
        throw new HashError(`invalid nix32 digest in ${describe(text)}: ${error.message}`, { cause: error })
      throw error
    }
  }
  if (rest.length === base64Length(size)) {
    const digest = decodeBase64(rest, size)
    if (digest === undefined) throw new HashError(`invalid base64 digest in ${describe(text)}`)
    return { hash: { algorithm, digest }, encoding: 'base64' }
  }
  throw new HashError(
    `${algorithm} digest in ${describe(text)} has length ${rest.length}; expected ${size * 2} (base16), ` +
      `${nix32Length(size)} (nix32) or ${base64Length(size)} (base64)`,
  )
}

/** `<algo>:<nix32>`, the form Nix writes in narinfo files and signs in fingerprints. */
export function formatHashNix32(hash: Hash): string {
  return `${hash.algorithm}:${encodeNix32(hash.digest)}`
}

/** The digest alone, in lowercase hex (no algorithm prefix). */
export function formatHashHex(hash: Hash): string {
  return Buffer.from(hash.digest.buffer, hash.digest.byteOffset, hash.digest.byteLength).toString('hex')
}

/** SRI form `<algo>-<base64>`. */
export function formatHashSri(hash: Hash): string {
  return `${hash.algorithm}-${Buffer.from(hash.digest.buffer, hash.digest.byteOffset, hash.digest.byteLength).toString('base64')}`
}

export function hashEquals(a: Hash, b: Hash): boolean {
  if (a.algorithm !== b.algorithm || a.digest.length !== b.digest.length) return false
  for (let i = 0; i < a.digest.length; i++) if (a.digest[i] !== b.digest[i]) return false
  return true
}

export function isHashAlgorithm(text: string): text is HashAlgorithm {
  return Object.hasOwn(HASH_BYTE_LENGTHS, text)
}

function base64Length(size: number): number {
  return Math.ceil(size / 3) * 4
}

// Buffer.from(…, 'base64') silently skips characters it does not know, so check the shape first.
function decodeBase64(text: string, size: number): Uint8Array | undefined {
  if (text.length !== base64Length(size) || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) return undefined
  const bytes = Buffer.from(text, 'base64')
  if (bytes.length !== size) return undefined
  return new Uint8Array(bytes)
}

function describe(text: string): string {
  return JSON.stringify(text.length > 140 ? `${text.slice(0, 140)}…` : text)
}
