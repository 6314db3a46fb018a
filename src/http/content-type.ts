/** Content-Type of a store file: by extension, else sniffed (UTF-8 text or binary). */
import mime from 'mime-types'

/** How many leading bytes decide between text/plain and application/octet-stream. */
export const SNIFF_BYTES = 1024

/** The type by file name, or undefined when the name says nothing (then the bytes decide). */
export function contentTypeByName(name: string): string | undefined {
  if (!name.includes('.') || (name.startsWith('.') && name.indexOf('.', 1) < 0)) return undefined
  const type = mime.contentType(name)
  return type === false ? undefined : type
}

export function contentTypeBySniffing(head: Uint8Array): string {
  return looksLikeText(head) ? 'text/plain; charset=utf-8' : 'application/octet-stream'
}

const utf8 = new TextDecoder('utf-8', { fatal: true })

function looksLikeText(head: Uint8Array): boolean {
  if (head.includes(0)) return false
  // The sample may end inside a multi-byte character: drop an incomplete tail before decoding.
  let end = head.length
  for (let back = 1; back <= 3 && end - back >= 0; back++) {
    const byte = head[end - back]!
    if ((byte & 0xc0) === 0x80) continue
    const need = byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : byte >= 0xc0 ? 2 : 1
    if (need > back) end -= back
    break
  }
  try {
    const text = utf8.decode(head.subarray(0, end))
    // Control characters other than tab, newline, form feed and carriage return mean binary.
    return !/[\x01-\x08\x0e-\x1a\x1c-\x1f\x7f]/.test(text)
  } catch {
    return false
  }
}
