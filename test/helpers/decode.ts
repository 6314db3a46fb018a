/** Feeding a decoder as an upstream body would, and collecting what comes out. */
import { type Duplex, Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'

/** Decodes `body` through `decoder`; returns what came out. */
export async function decodeThrough(body: Readable, decoder: Duplex): Promise<Buffer> {
  const chunks: Buffer[] = []
  await pipeline(
    body,
    decoder,
    new Writable({
      write(chunk: Buffer, _e, cb) {
        chunks.push(chunk)
        cb()
      },
    }),
  )
  return Buffer.concat(chunks)
}

/** `data` in pieces of `bytes`, as an upstream body hands them over. */
export function piecesOf(data: Buffer, bytes = 64 * 1024): Readable {
  return Readable.from(
    Array.from({ length: Math.ceil(data.length / bytes) }, (_, i) => data.subarray(i * bytes, (i + 1) * bytes)),
  )
}
