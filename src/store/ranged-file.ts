/**
 * One regular file of an uncompressed NAR, fetched as byte ranges of the upstream NAR instead of
 * the whole NAR: for big NARs that are not worth caching, on upstreams that honour Range.
 */
import { Readable } from 'node:stream'
import type { ListingNode } from '../formats/listing.js'
import { regularFileFrame } from '../formats/nar-frame.js'

export type RangedNode = Extract<ListingNode, { type: 'regular' }> & { readonly narOffset: number }

/** Bytes [start, end] (inclusive) of the NAR; throws if the upstream cannot give exactly those. */
export type FetchRange = (start: number, end: number, signal?: AbortSignal) => Promise<Readable>

/** The upstream NAR does not frame the file where the listing says it is, or ended early. */
export class RangeMismatchError extends Error {
  override readonly name = 'RangeMismatchError'
}

/**
 * Fetches the NAR bytes that frame the file (regularFileFrame: its entry's name, type, executable
 * flag and size) plus its first `headBytes` (for sniffing), and returns that head. The offset comes
 * from the upstream's `.ls`, which cannot be verified without the whole NAR; a wrong one fails here
 * before any byte is served, unless it points at a file of the same name, mode and size elsewhere
 * in the NAR (so this path is for `stream` verification only). `name`: the entry's name,
 * undefined for a NAR that is the file itself.
 */
export async function probeRangedFile(
  node: RangedNode,
  name: string | undefined,
  headBytes: number,
  fetchRange: FetchRange,
): Promise<Buffer> {
  const frame = regularFileFrame(name, node.executable, node.size)
  const from = node.narOffset - frame.length
  if (from < 0)
    throw new RangeMismatchError(
      `the listing puts a ${node.size}-byte file at offset ${node.narOffset}, where no NAR can frame it`,
    )
  const head = Math.min(headBytes, node.size)
  const bytes = await readAll(await fetchRange(from, node.narOffset + Math.max(head, 1) - 1), frame.length + head)
  if (!bytes.subarray(0, frame.length).equals(frame))
    throw new RangeMismatchError(
      `the NAR does not frame a ${node.size}-byte file named ${JSON.stringify(name ?? '')} at offset ${node.narOffset}`,
    )
  return bytes.subarray(frame.length, frame.length + head)
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
