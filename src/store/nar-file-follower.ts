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
}

/**
 * The file is looked at this often while it grows, and less often (doubling up to the maximum)
 * while it does not (a slow upstream): a stat costs far less than the pipe reads and writes it replaces.
 */
const POLL_MIN_MS = 4
const POLL_MAX_MS = 32

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
  let delay = POLL_MIN_MS
  for (;;) {
    signal.throwIfAborted()
    if (failure !== undefined) throw failure.error
    // Sampled before the stat: once the program has exited, that stat sees all it wrote.
    const last = exited
    const now = stat(file)
    if (now > narSize) throw new NarVerificationError(upstream, `NAR is larger than its NarSize ${narSize}`)
    const growing = now > size
    if (growing) {
      options.hasher.written(now)
      options.onWritten(now - size, [])
      size = now
      if (size === narSize) decoder.finish()
    }
    delay = growing ? POLL_MIN_MS : Math.min(delay * 2, POLL_MAX_MS)
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
