/**
 * One regular file of an uncompressed NAR, fetched as byte ranges of the upstream NAR instead of
 * the whole NAR: for big NARs that are not worth caching, on upstreams that honour Range.
 */
import { Readable } from 'node:stream'
import type { ListingNode } from '../formats/listing.js'

export type RangedNode = Extract<ListingNode, { type: 'regular' }> & { readonly narOffset: number }

/** Bytes [start, end] (inclusive) of the NAR; throws if the upstream cannot give exactly those. */
export type FetchRange = (start: number, end: number, signal?: AbortSignal) => Promise<Readable>

/** The upstream NAR does not frame the file where the listing says it is, or ended early. */
export class RangeMismatchError extends Error {
  override readonly name = 'RangeMismatchError'
}

/**
 * Fetches the 8 bytes before the file's contents, plus its first `headBytes` (for sniffing), and
 * returns that head. The offsets come from the upstream's `.ls`, which unnar cannot verify without
 * the whole NAR; but in a NAR those 8 bytes are the contents' length, little-endian, so an offset
 * that is wrong (or a NAR that changed) fails here, before any byte is served.
 */
export async function probeRangedFile(node: RangedNode, headBytes: number, fetchRange: FetchRange): Promise<Buffer> {
  const head = Math.min(headBytes, node.size)
  const bytes = await readAll(await fetchRange(node.narOffset - 8, node.narOffset + Math.max(head, 1) - 1), 8 + head)
  const expected = Buffer.alloc(8)
  expected.writeBigUInt64LE(BigInt(node.size))
  if (!bytes.subarray(0, 8).equals(expected)) throw new RangeMismatchError(`the NAR does not frame a ${node.size}-byte file at offset ${node.narOffset}`)
  return bytes.subarray(8, 8 + head)
}

/** Streams bytes [start, end) of the file (after probeRangedFile checked where it is). */
export function openRangedFile(node: RangedNode, start: number, end: number, fetchRange: FetchRange): Readable {
  const abort = new AbortController()
  async function* bytes(): AsyncGenerator<Buffer> {
    if (end <= start) return
    const stream = await fetchRange(node.narOffset + start, node.narOffset + end - 1, abort.signal)
    let left = end - start
    try {
      for await (const chunk of stream as AsyncIterable<Buffer>) {
        const part = chunk.length > left ? chunk.subarray(0, left) : chunk
        left -= part.length
        if (part.length > 0) yield part
        if (left === 0) return
      }
    } finally {
      stream.destroy()
    }
    throw new RangeMismatchError(`the upstream range ended ${left} bytes early`)
  }
  const out = Readable.from(bytes(), { objectMode: false })
  out.once('close', () => abort.abort())
  return out
}

/** The first `count` bytes of `stream` (fewer is an error), then the stream is closed. */
async function readAll(stream: Readable, count: number): Promise<Buffer> {
  const chunks: Buffer[] = []
  let length = 0
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      chunks.push(chunk)
      length += chunk.length
      if (length >= count) break
    }
  } finally {
    stream.destroy()
  }
  if (length < count) throw new RangeMismatchError(`the upstream range ended ${count - length} bytes early`)
  return Buffer.concat(chunks).subarray(0, count)
}
