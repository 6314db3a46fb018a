/** Nix's base-32 encoding ("nix32"), used for store path hashes and `sha256:` hashes in narinfo files. */

// nix32 is not RFC 4648 base32, so no standard library will do: it prints the bytes as one
// little-endian integer, most significant digit first, in an alphabet without e, o, t and u
// (Nix `printHash32`, hash.cc). There is no padding and no upper case, and the string is not a
// byte-wise transform of the input (no 5-byte blocks), which is why every sha256 starts with 0 or 1.

export const NIX32_ALPHABET = '0123456789abcdfghijklmnpqrsvwxyz'
const ALPHABET_CODES = Array.from(NIX32_ALPHABET, (ch) => ch.charCodeAt(0))
const SPREAD_CHARACTERS = 8192

export class Nix32Error extends Error {
  override readonly name = 'Nix32Error'
}

/** Character code → digit value, or -1 for a character outside the alphabet. */
const DIGIT_OF = new Int8Array(128).fill(-1)
for (let digit = 0; digit < NIX32_ALPHABET.length; digit++) DIGIT_OF[NIX32_ALPHABET.charCodeAt(digit)] = digit

/**
 * Number of nix32 characters that encode `byteCount` bytes: `(n*8 - 1)/5 + 1`, i.e. ceil(n*8/5).
 * @example nix32Length(32) // 52 (sha256); nix32Length(20) // 32 (store path hash)
 */
export function nix32Length(byteCount: number): number {
  if (!Number.isSafeInteger(byteCount) || byteCount < 0) throw new RangeError(`invalid byte count ${byteCount}`)
  // Nix computes this in unsigned arithmetic, where 0 bytes would wrap around; 0 bytes is 0 characters.
  if (byteCount === 0) return 0
  return Math.floor((byteCount * 8 - 1) / 5) + 1
}

/**
 * Encodes bytes the way Nix's `printHash32` does.
 * @example encodeNix32(sha256Digest) // '0h40zg6hakjv951nyhdad7mv9za56m3za5gnpiw5s1hbwcxzdrq3'
 */
export function encodeNix32(bytes: Uint8Array): string {
  const length = nix32Length(bytes.length)
  // Character codes first, one string at the end: a string grown a character at a time allocates
  // a piece per character, and this runs for every request (cache keys, ETags).
  const codes = new Array<number>(length)
  for (let n = length - 1; n >= 0; n--) {
    const bit = n * 5
    const i = bit >> 3
    const j = bit & 7
    const low = (bytes[i] ?? 0) >> j
    const high = i + 1 < bytes.length ? (bytes[i + 1] ?? 0) << (8 - j) : 0
    codes[length - 1 - n] = ALPHABET_CODES[(low | high) & 31]!
  }
  // A spread passes one argument per character, and the stack limits how many (~100,000 here):
  // longer inputs than a hash go in pieces.
  if (length <= SPREAD_CHARACTERS) return String.fromCharCode(...codes)
  let out = ''
  for (let start = 0; start < length; start += SPREAD_CHARACTERS)
    out += String.fromCharCode(...codes.slice(start, start + SPREAD_CHARACTERS))
  return out
}

/**
 * Decodes a nix32 string into `floor(length*5/8)` bytes.
 * Throws Nix32Error for a character outside the alphabet, for a length no byte count encodes to
 * (such as 1 or 3), and for non-zero overflow bits in the first character, which Nix rejects too
 * ("invalid base-32 hash"): without that check two strings would decode to the same bytes.
 */
export function decodeNix32(text: string): Uint8Array {
  const byteCount = Math.floor((text.length * 5) / 8)
  if (nix32Length(byteCount) !== text.length) {
    throw new Nix32Error(`invalid nix32 length ${text.length} in ${describe(text)}: no byte count encodes to it`)
  }
  const out = new Uint8Array(byteCount)
  for (let n = 0; n < text.length; n++) {
    const position = text.length - 1 - n
    const code = text.charCodeAt(position)
    const digit = code < 128 ? (DIGIT_OF[code] ?? -1) : -1
    if (digit < 0) {
      throw new Nix32Error(
        `invalid character ${JSON.stringify(text[position])} at position ${position} in nix32 string ${describe(text)}`,
      )
    }
    const bit = n * 5
    const i = bit >> 3
    const j = bit & 7
    // A canonical length guarantees i < byteCount (5*(length-1) < 8*byteCount).
    out[i] = (out[i] ?? 0) | ((digit << j) & 0xff)
    const carry = digit >> (8 - j)
    if (i + 1 < byteCount) {
      out[i + 1] = (out[i + 1] ?? 0) | carry
    } else if (carry !== 0) {
      throw new Nix32Error(`non-zero overflow bits in nix32 string ${describe(text)} (first character too large)`)
    }
  }
  return out
}

/** True when every character is in the nix32 alphabet (the empty string included); says nothing about length. */
export function isNix32(text: string): boolean {
  return /^[0-9a-df-np-sv-z]*$/.test(text)
}

// Quoted for error messages, shortened so a hostile megabyte of input does not end up in a log line.
function describe(text: string): string {
  return JSON.stringify(text.length > 120 ? `${text.slice(0, 120)}…` : text)
}
