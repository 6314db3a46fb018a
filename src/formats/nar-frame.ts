/**
 * The NAR bytes that frame a regular file: what comes right before its contents. A file fetched by
 * byte range from an uncompressed NAR is checked against them, without the rest of the NAR.
 */

const encoder = new TextEncoder()

/** Nix's `str(s)`: a little-endian u64 length, the bytes, zero padding to a multiple of 8. */
function str(text: string): Uint8Array {
  const data = encoder.encode(text)
  const out = new Uint8Array(8 + Math.ceil(data.length / 8) * 8)
  new DataView(out.buffer).setBigUint64(0, BigInt(data.length), true)
  out.set(data, 8)
  return out
}

/**
 * The tokens from the entry's name (or the archive's magic, for a NAR that is one file) up to and
 * including the contents' length: `name <name> node ( type regular [executable ""] contents <size>`.
 * @example regularFileFrame('hello', true, 21).length // 152
 */
export function regularFileFrame(name: string | undefined, executable: boolean, size: number): Uint8Array {
  const words = name === undefined ? ['nix-archive-1'] : ['name', name, 'node']
  words.push('(', 'type', 'regular', ...(executable ? ['executable', ''] : []), 'contents')
  const parts = words.map(str)
  const length = new Uint8Array(8)
  new DataView(length.buffer).setBigUint64(0, BigInt(size), true)
  parts.push(length)
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0))
  let at = 0
  for (const part of parts) {
    out.set(part, at)
    at += part.length
  }
  return out
}
