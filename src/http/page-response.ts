/** A generated answer (listing, search, file view): compressed when the client takes it, with its length. */
import type { Context } from 'hono'
import { chooseEncoding, compressBuffer } from './compression.js'
import { OWN_PAGES_CSP } from './html.js'

/** `vary`: the request headers the body depends on (Accept-Encoding among them). */
export function generatedResponse(c: Context, type: string, body: string, vary: string): Response {
  c.header('Content-Type', type)
  if (type.startsWith('text/html')) c.header('Content-Security-Policy', OWN_PAGES_CSP)
  const bytes = Buffer.from(body)
  const encoding = chooseEncoding(c.req.header('accept-encoding'), bytes.length, true)
  c.header('Vary', vary)
  if (encoding !== undefined) c.header('Content-Encoding', encoding)
  const payload =
    encoding === undefined
      ? (new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength) as Uint8Array<ArrayBuffer>)
      : compressBuffer(bytes, encoding)
  c.header('Content-Length', String(payload.byteLength))
  return c.req.method === 'HEAD' ? c.body(null) : c.body(payload)
}
