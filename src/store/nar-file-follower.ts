/**
 * Follows a NAR that a decoder program writes into the temp file (codecs/file-decoder.ts): watches
 * the file grow, tells readers about the new bytes, and indexes the NAR by reading back its
 * headers only (file contents are skipped, never read).
 */
import { fstatSync, readSync } from 'node:fs'
import type { FileHandle } from 'node:fs/promises'
import type { FileDecoder } from '../codecs/file-decoder.js'
import type { NarEntry, NarIndexer } from '../formats/nar-indexer.js'
import type { NarHasher } from './file-hasher.js'
import { DiskError, NarVerificationError } from './nar-errors.js'

export interface FollowOptions {
  /** The temp file the decoder writes. */
  readonly file: FileHandle
  readonly decoder: FileDecoder
  readonly indexer: NarIndexer
  readonly hasher: NarHasher
  readonly narSize: number
  readonly upstream: string
  /** `bytes` more are on disk, and `entries` are indexed (either may be empty). */
  readonly onWritten: (bytes: number, entries: readonly NarEntry[]) => void
  readonly signal: AbortSignal
  /**
   * What readers wait for: the nearest byte offset one needs, and whether one waits for an entry
   * of the index it cannot place. Without it, the file is looked at every POLL_MIN_MS while it grows.
   */
  readonly wanted?: () => { readonly at: number | undefined; readonly unplaced: boolean }
  /** Receives the function that wakes the follower when a reader starts waiting. */
  readonly onNudge?: (nudge: (() => void) | undefined) => void
}

/**
 * The file is looked at this often while it grows and a reader waits for an entry it cannot place,
 * and less often (doubling up to the maximum) while it does not grow (a slow upstream): a stat costs
 * far less than the pipe reads and writes it replaces.
 */
const POLL_MIN_MS = 4
const POLL_MAX_MS = 32
/**
 * While it grows, a reader waiting for a known offset is served by looking halfway to when that
 * offset should be written, at this pace the closest. Each look wakes the event loop beside the
 * decoder on the same cores: looking every POLL_MIN_MS through a whole ≈100 MB NAR made zstd
 * ~5-10 ms slower (bench/ row 3a), looking close to the wanted bytes answers ~2 ms sooner.
 */
const POLL_NEAR_MS = 1

/**
 * Header reads start small (a header is a few hundred bytes, and the contents after it are skipped)
 * and double while the headers keep coming (a run of small files), up to the maximum.
 */
const READ_MIN_BYTES = 8 * 1024
const READ_MAX_BYTES = 256 * 1024

/** Runs until the decoder has exited and its whole output is indexed; returns the NAR's size. */
export async function followDecodedFile(options: FollowOptions): Promise<number> {
  const { file, decoder, indexer, narSize, upstream, signal } = options
  let exited = false
  let failure: { error: unknown } | undefined
  // One wake-up for the whole loop: racing `decoder.exited` against each poll's timer would add a
  // reaction to it per poll, thousands for a long download.
  let wake: (() => void) | undefined
  decoder.exited.then(
    () => {
      exited = true
      wake?.()
    },
    (error: unknown) => {
      failure = { error }
      wake?.()
    },
  )
  const buffer = Buffer.allocUnsafe(READ_MAX_BYTES)
  let readBytes = READ_MIN_BYTES
  let size = 0
  let stalled = POLL_MIN_MS
  // Bytes per millisecond, between the last two looks that saw the file grow.
  let rate = 0
  let grewAt = performance.now()
  let nudged = false
  options.onNudge?.(() => {
    nudged = true
    wake?.()
  })
  try {
    for (;;) {
      signal.throwIfAborted()
      if (failure !== undefined) throw failure.error
      // Sampled before the stat: once the program has exited, that stat sees all it wrote.
      const last = exited
      const now = stat(file)
      if (now > narSize) throw new NarVerificationError(upstream, `NAR is larger than its NarSize ${narSize}`)
      const growing = now > size
      if (growing) {
        const at = performance.now()
        if (at - grewAt >= POLL_NEAR_MS) rate = (now - size) / (at - grewAt)
        grewAt = at
        options.hasher.written(now)
        options.onWritten(now - size, [])
        size = now
        if (size === narSize) decoder.finish()
      }
      stalled = growing ? POLL_MIN_MS : Math.min(stalled * 2, POLL_MAX_MS)
      while (indexer.position < size) {
        const skip = Math.min(indexer.contentsAhead, size - indexer.position)
        if (skip > 0) {
          indexer.skip(skip)
          readBytes = READ_MIN_BYTES
          continue
        }
        const length = Math.min(readBytes, size - indexer.position)
        readBytes = Math.min(readBytes * 2, READ_MAX_BYTES)
        const bytesRead = read(file, buffer, length, indexer.position)
        let entries: NarEntry[]
        try {
          entries = indexer.push(buffer.subarray(0, bytesRead))
        } catch (err) {
          throw new NarVerificationError(upstream, (err as Error).message, { cause: err })
        }
        if (entries.length > 0) options.onWritten(0, entries)
      }
      if (last) return size
      if (exited || failure !== undefined) continue // it ended while this pass ran: no need to wait
      const delay =
        options.wanted !== undefined && rate > 0 && (growing || nudged) ? pace(options.wanted(), size, rate) : stalled
      nudged = false
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer)
          signal.removeEventListener('abort', done)
          wake = undefined
          resolve()
        }
        const timer = setTimeout(done, delay)
        signal.addEventListener('abort', done)
        wake = done
      })
    }
  } finally {
    options.onNudge?.(undefined)
  }
}

/** How long to wait before the next look, for what readers wait for (see POLL_NEAR_MS). */
function pace(
  wanted: { readonly at: number | undefined; readonly unplaced: boolean },
  size: number,
  rate: number,
): number {
  const delay = wanted.unplaced ? POLL_MIN_MS : POLL_MAX_MS
  return wanted.at === undefined ? delay : Math.min(delay, Math.max(POLL_NEAR_MS, (wanted.at - size) / rate / 2))
}

// Synchronous on purpose: the file is in the cache directory and was written a moment ago, so
// these never wait for a disk, and a promise round trip through libuv's pool costs 10-15x more
// event-loop time than the call itself (a stat: 50 µs against 3 µs).

function stat(file: FileHandle): number {
  try {
    return fstatSync(file.fd).size
  } catch (err) {
    throw new DiskError(
      `watching the NAR being written: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      { cause: err },
    )
  }
}

function read(file: FileHandle, buffer: Buffer, length: number, position: number): number {
  try {
    const bytesRead = readSync(file.fd, buffer, 0, length, position)
    if (bytesRead === 0) throw new Error(`the file ends before byte ${position}`)
    return bytesRead
  } catch (err) {
    throw new DiskError(`reading the NAR back: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, {
      cause: err,
    })
  }
}
