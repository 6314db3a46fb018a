/** Hashes a NAR's temp file in a worker thread as it is written, so the event loop never hashes. */
import { createHash, type Hash as Hasher } from 'node:crypto'
import { availableParallelism } from 'node:os'
import type { MessagePort } from 'node:worker_threads'
import { WorkerPool, type PooledJob } from '../worker-pool.js'

/** What NarSink feeds: either every chunk (in-process) or how far the file is written (worker). */
export interface NarHasher {
  /** Bytes about to be written at the current end of the file. */
  update(chunk: Uint8Array): void
  /** Bytes [0, end) of the file are written. */
  written(end: number): void
  /** The digest of everything written; call once, after the last write. */
  digest(): Promise<Buffer>
  /** Stops hashing (the download failed); safe to call at any time, and again. */
  dispose(): void
}

/**
 * Hashing a ≈100 MB NAR takes ~70 ms of CPU; in the event loop that delays every chunk behind it
 * (bench/ "cold last file", zstd). Tiny NARs are hashed in-process: there a worker's round trip costs more.
 */
export const WORKER_HASH_MIN_BYTES = 1024 * 1024

/**
 * The worker is told about progress at most once per this many bytes: every wake-up of another
 * thread can preempt the decoder on a two-core machine (bench/ "cold last file", xz, lost ~10% when the worker
 * was woken for every 64 KiB–1 MiB written).
 */
const WORKER_ADVANCE_BYTES = 8 * 1024 * 1024

/**
 * Whether the worker hashes the file while it is written, or once it is complete (still in the
 * page cache). With fewer cores than busy threads (the decoder, the event loop, libuv's writes) a
 * hash worker running alongside takes CPU from the download itself: on two cores that put ~100 ms
 * of a 100 MB NAR's ~430 ms of CPU on the critical path of a file's last byte in stream
 * verification (bench/ cold last file, zstd). In strict verification the last byte waits for the
 * digest, and hashing afterwards added those ~100 ms to it instead: there it always runs alongside.
 */
export function hashWhileWriting(strict: boolean): boolean {
  return strict || availableParallelism() >= 4
}

/** A hasher for a NAR of `narSize` bytes being written to `file`. */
export function createNarHasher(algorithm: string, file: string, narSize: number, whileWriting: boolean): NarHasher {
  return narSize >= WORKER_HASH_MIN_BYTES
    ? new WorkerFileHasher(algorithm, file, whileWriting)
    : new InProcessHasher(algorithm)
}

/** A hasher that only reads the file back (for NARs a decoder program writes, never seen in chunks). */
export function createFileHasher(algorithm: string, file: string, whileWriting: boolean): NarHasher {
  return new WorkerFileHasher(algorithm, file, whileWriting)
}

class InProcessHasher implements NarHasher {
  readonly #hasher: Hasher
  constructor(algorithm: string) {
    this.#hasher = createHash(algorithm)
  }
  update(chunk: Uint8Array): void {
    this.#hasher.update(chunk)
  }
  written(): void {}
  async digest(): Promise<Buffer> {
    return this.#hasher.digest()
  }
  dispose(): void {}
}

/**
 * The worker opens the file itself (its own descriptor, so the download may close or delete its
 * own at any time) and reads back exactly the bytes that were written: the digest is that of what
 * gets committed. One MessagePort per file; a worker serves several files.
 */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads')
const { createHash } = require('node:crypto')
const { openSync, readSync, closeSync } = require('node:fs')
const CHUNK = 4 * 1024 * 1024
let buffer
parentPort.on('message', ({ port, file, algorithm }) => {
  let fd
  let hashed = 0
  const hash = createHash(algorithm)
  const close = () => {
    if (fd !== undefined) closeSync(fd)
    fd = undefined
    port.close()
  }
  // The download closes its end when it fails or no longer needs the digest.
  port.on('close', close)
  port.on('message', (message) => {
    try {
      fd ??= openSync(file, 'r')
      buffer ??= Buffer.allocUnsafe(CHUNK)
      while (hashed < message.end) {
        const n = readSync(fd, buffer, 0, Math.min(CHUNK, message.end - hashed), hashed)
        if (n === 0) throw new Error('the file ended at ' + hashed + ', expected ' + message.end)
        hash.update(buffer.subarray(0, n))
        hashed += n
      }
      if (message.type === 'digest') {
        port.postMessage({ digest: hash.digest() })
        close()
      }
    } catch (err) {
      port.postMessage({ error: err.message })
      close()
    }
  })
})
`

const pool = new WorkerPool(WORKER_SOURCE)

/** Starts the hashing thread ahead of the first big NAR (see WorkerPool.warm). */
export function warmHashWorker(): void {
  pool.warm()
}

class WorkerFileHasher implements NarHasher {
  readonly #port: MessagePort
  readonly #job: PooledJob
  readonly #result: Promise<Buffer>
  #end = 0
  #posted = 0
  #done = false
  readonly #whileWriting: boolean

  constructor(algorithm: string, file: string, whileWriting: boolean) {
    this.#whileWriting = whileWriting
    this.#job = pool.start({ file, algorithm })
    const port = this.#job.port
    this.#port = port
    this.#result = new Promise<Buffer>((resolve, reject) => {
      port.once('message', (message: { digest?: Uint8Array; error?: string }) => {
        this.#finish()
        if (message.digest !== undefined)
          resolve(Buffer.from(message.digest.buffer, message.digest.byteOffset, message.digest.byteLength))
        else reject(new Error(`hashing the NAR: ${message.error}`))
      })
      // The worker died (or dispose() ran) before answering.
      port.once('close', () => reject(new Error('hashing the NAR: the hash worker stopped')))
    })
    this.#result.catch(() => {}) // observed through digest()
  }

  update(): void {}

  written(end: number): void {
    this.#end = end
    if (this.#done || !this.#whileWriting || end - this.#posted < WORKER_ADVANCE_BYTES) return
    this.#posted = end
    this.#port.postMessage({ type: 'advance', end })
  }

  digest(): Promise<Buffer> {
    if (!this.#done) this.#port.postMessage({ type: 'digest', end: this.#end })
    return this.#result
  }

  dispose(): void {
    this.#finish()
  }

  #finish(): void {
    if (this.#done) return
    this.#done = true
    this.#job.release()
  }
}
