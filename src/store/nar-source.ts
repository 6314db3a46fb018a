/** What the HTTP layer reads a NAR through: a complete cached NAR or one still downloading. */
import type { Listing, ListingNode } from '../formats/listing.js'

export interface NarSource {
  /** The node at `segments`, without following symlinks; waits for the NAR's index when downloading. */
  node(segments: readonly string[]): Promise<ListingNode | undefined>
  /** The complete listing (with offsets); waits for the whole NAR when downloading. */
  listing(): Promise<Listing>
  /**
   * Bytes `[start, end)` of the uncompressed NAR, streamed as they become available. While
   * `holdsBack`, the last byte waits until the NAR is verified, and the stream fails instead if it
   * is not: a response never completes with unverified bytes (strict verification).
   */
  read(start: number, end: number): ReadableStream<Uint8Array>
  /**
   * Bytes `[start, end)` in one buffer, never held back: for sniffing, for memory, and for small
   * responses when `holdsBack` is false (no stream machinery on the hot path).
   */
  readBytes(start: number, end: number): Promise<Uint8Array<ArrayBuffer>>
  /** True once every byte matched NarHash (always, for a cached NAR); bytes read before may not. */
  readonly verified: boolean
  /** True while read() holds the last byte of a range back (strict verification, NAR not verified yet). */
  readonly holdsBack: boolean
  /** Resolves once the NAR is verified (at once for a cached NAR); rejects with why when it never will be. */
  verification(): Promise<void>
  /**
   * Positioned reads of the NAR on disk, for a body the HTTP layer writes itself; while `holdsBack`,
   * its beforeLastByte is the verification, as for read().
   */
  readonly reader?: (() => RangeSource) | undefined
}

/**
 * A source opened for one request. Until `release`, its bytes stay readable: a download's temp file
 * stays open and an evicted NAR stays on disk, however long the request takes to read them.
 */
export interface NarLease {
  readonly source: NarSource
  /** Idempotent. */
  readonly release: () => void
}

/** The pieces a byte-range stream needs from its source. */
export interface RangeSource {
  /** Positioned read into `buffer`; resolves with the byte count. */
  readAt(buffer: Uint8Array, length: number, position: number): Promise<number>
  /**
   * Resolves once bytes up to `end` exist (at once for a complete NAR) with how far the NAR exists
   * now (at least `end`); rejects if those bytes never will.
   */
  waitFor(end: number): Promise<number>
  /** Called exactly once when the stream is done or cancelled. */
  release(): void
  /** What the last byte of a stream waits for (the NAR's verification, in strict mode); none: nothing. */
  beforeLastByte?: (() => Promise<void>) | undefined
}

/** One positioned read of a small range, through the same source a stream would use. */
export async function readRangeBytes(
  source: RangeSource,
  start: number,
  end: number,
): Promise<Uint8Array<ArrayBuffer>> {
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

/**
 * On a NAR still downloading, a read waits for this many bytes (or the end of the range), then
 * takes whatever has arrived: readers follow the download closely without tiny reads.
 */
export const READ_WAIT_BYTES = 64 * 1024
/**
 * Large reads make hot big files cheap (bench/ "hot 64 MiB file": fewer reads, socket writes and promise hops
 * per byte). Not larger: from 1 MiB on, each fresh buffer is a new mmap whose page faults cost more
 * than the bigger read saves (measured: 64 MiB in 1 MiB reads took 3x the CPU of 512 KiB reads).
 */
export const READ_MAX_BYTES = 512 * 1024

/**
 * A pull-based web stream of positioned reads: nothing is read before the client wants it, and
 * each chunk is a fresh buffer handed over without copying (Readable.toWeb would copy every chunk).
 * On a NAR still downloading, a read takes what has arrived (see READ_WAIT_BYTES). With
 * `beforeLastByte`, everything but the range's last byte flows at once and that byte waits for it.
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
          const available = await source.waitFor(Math.min(position + READ_WAIT_BYTES, end))
          const length = Math.min(READ_MAX_BYTES, end - position, available - position)
          // Not zero-filled: a short read throws below, so no byte of old memory is ever sent.
          const buffer = Buffer.allocUnsafeSlow(length)
          const bytesRead = await source.readAt(buffer, length, position)
          if (bytesRead !== length) throw new Error(`NAR file ended at ${position + bytesRead}, expected ${end}`)
          position += length
          if (position >= end && source.beforeLastByte !== undefined) {
            if (length > 1) controller.enqueue(buffer.subarray(0, length - 1))
            await source.beforeLastByte()
            controller.enqueue(buffer.subarray(length - 1))
          } else {
            controller.enqueue(buffer)
          }
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
