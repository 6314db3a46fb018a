/** What the HTTP layer reads a NAR through: a complete cached NAR or one still downloading. */
import type { Listing, ListingNode } from '../formats/listing.js'

export interface NarSource {
  /** The node at `segments`, without following symlinks; waits for the NAR's index when downloading. */
  node(segments: readonly string[]): Promise<ListingNode | undefined>
  /** The complete listing (with offsets); waits for the whole NAR when downloading. */
  listing(): Promise<Listing>
  /** Bytes `[start, end)` of the uncompressed NAR, streamed as they become available. */
  read(start: number, end: number): ReadableStream<Uint8Array>
  /** Bytes `[start, end)` in one buffer, for small files (no stream machinery on the hot path). */
  readBytes(start: number, end: number): Promise<Uint8Array<ArrayBuffer>>
}

/** The pieces a byte-range stream needs from its source. */
export interface RangeSource {
  /** Positioned read into `buffer`; resolves with the byte count. */
  readAt(buffer: Uint8Array, length: number, position: number): Promise<number>
  /** Resolves once bytes up to `end` exist (at once for a complete NAR); rejects if they never will. */
  waitFor(end: number): Promise<void>
  /** Called exactly once when the stream is done or cancelled. */
  release(): void
}

/** One positioned read of a small range, through the same source a stream would use. */
export async function readRangeBytes(source: RangeSource, start: number, end: number): Promise<Uint8Array<ArrayBuffer>> {
  const buffer = new Uint8Array(end - start)
  try {
    await source.waitFor(end)
    const bytesRead = buffer.length === 0 ? 0 : await source.readAt(buffer, buffer.length, start)
    if (bytesRead !== buffer.length) throw new Error(`NAR file ended at ${start + bytesRead}, expected ${end}`)
    return buffer
  } finally {
    source.release()
  }
}

export const RANGE_CHUNK_BYTES = 256 * 1024

/**
 * A pull-based web stream of positioned reads: nothing is read before the client wants it, and
 * each chunk is a fresh buffer handed over without copying (Readable.toWeb would copy every chunk).
 */
export function createRangeStream(source: RangeSource, start: number, end: number): ReadableStream<Uint8Array> {
  let position = start
  let released = false
  const release = () => {
    if (!released) {
      released = true
      source.release()
    }
  }
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          if (position >= end) {
            release()
            controller.close()
            return
          }
          const length = Math.min(RANGE_CHUNK_BYTES, end - position)
          await source.waitFor(position + length)
          const buffer = new Uint8Array(length)
          const bytesRead = await source.readAt(buffer, length, position)
          if (bytesRead !== length) throw new Error(`NAR file ended at ${position + bytesRead}, expected ${end}`)
          position += length
          controller.enqueue(buffer)
          if (position >= end) {
            release()
            controller.close()
          }
        } catch (err) {
          release()
          controller.error(err)
        }
      },
      cancel() {
        release()
      },
    },
    { highWaterMark: 0 },
  )
}
