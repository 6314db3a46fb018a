/**
 * One regular file of an uncompressed NAR, fetched as byte ranges of the upstream NAR instead of
 * the whole NAR: for big NARs that are not worth caching, on upstreams that honour Range.
 */
import { Readable } from 'node:stream'
import type { ListingNode } from '../formats/listing.js'

export type RegularNode = Extract<ListingNode, { type: 'regular' }>

/** Bytes [start, end] (inclusive) of the NAR; throws if the upstream cannot give exactly those. */
export type FetchRange = (start: number, end: number, signal: AbortSignal) => Promise<Readable>

/** The upstream NAR does not frame the file where the listing says it is. */
export class RangeMismatchError extends Error {
  override readonly name = 'RangeMismatchError'
}

/**
 * Streams bytes [start, end) of the file. The offsets come from the upstream's `.ls`, which unnar
 * cannot verify without the whole NAR, so the 8 bytes before the contents are fetched with them:
 * in a NAR they are the contents' length, little-endian, and must equal the listed size — an
 * offset that is wrong, or a NAR that changed, fails here instead of serving the wrong bytes.
 */
export function openRangedFile(node: RegularNode & { narOffset: number }, start: number, end: number, fetchRange: FetchRange): Readable {
  const abort = new AbortController()
  const from = node.narOffset - 8
  const expected = Buffer.alloc(8)
  expected.writeBigUInt64LE(BigInt(node.size))

  /** Passes on `count` bytes of `stream`, after checking the 8 framing bytes first when `framed`. */
  async function* take(stream: Readable, framed: boolean, count: number): AsyncGenerator<Buffer> {
    let head = Buffer.alloc(0)
    let checking = framed
    let left = count
    try {
      for await (const raw of stream) {
        let chunk = raw as Buffer
        if (checking) {
          const need = 8 - head.length
          head = Buffer.concat([head, chunk.subarray(0, need)])
          chunk = chunk.subarray(need)
          if (head.length < 8) continue
          if (!head.equals(expected)) throw new RangeMismatchError(`the NAR does not frame a ${node.size}-byte file at offset ${node.narOffset}`)
          checking = false
        }
        if (left === 0) break
        const part = chunk.length > left ? chunk.subarray(0, left) : chunk
        left -= part.length
        if (part.length > 0) yield part
        if (left === 0) break
      }
    } finally {
      stream.destroy()
    }
    if (checking || left > 0) throw new RangeMismatchError(`the upstream range ended ${checking ? 'before the file' : `${left} bytes early`}`)
  }

  async function* bytes(): AsyncGenerator<Buffer> {
    if (start === 0 || end <= start) {
      yield* take(await fetchRange(from, node.narOffset + Math.max(end, 1) - 1, abort.signal), true, Math.max(0, end - start))
      return
    }
    // A range inside the file: the framing check and the data in two requests, side by side.
    const [prefix, body] = await Promise.all([fetchRange(from, from + 7, abort.signal), fetchRange(node.narOffset + start, node.narOffset + end - 1, abort.signal)])
    try {
      for await (const _ of take(prefix, true, 0)) void _
    } catch (err) {
      body.destroy()
      throw err
    }
    yield* take(body, false, end - start)
  }

  const out = Readable.from(bytes(), { objectMode: false })
  out.once('close', () => abort.abort())
  return out
}
