/**
 * The read buffers of response bodies written from disk (disk-body.ts), shared by every response
 * and bounded in bytes. A buffer comes back once node has handed its last bytes to the kernel, so a
 * crawl, or a big file read by many clients, cycles through the same few MiB instead of leaving a
 * fresh buffer per read for V8 to collect some time later (bench/ "crawl": RSS at the end vs halfway).
 */
export class ReadBuffers {
  /** The size of every buffer lent. */
  readonly bufferBytes: number
  readonly #maxBytes: number
  readonly #free: Buffer[] = []
  /** Bytes of the buffers that exist, lent or free. */
  #allocated = 0

  constructor(options: { readonly bufferBytes: number; readonly maxBytes: number }) {
    this.bufferBytes = options.bufferBytes
    this.#maxBytes = options.maxBytes
  }

  /** A buffer of bufferBytes, or undefined when the bound is lent out (the caller then reads into small buffers of its own). */
  take(): Buffer | undefined {
    const free = this.#free.pop()
    if (free !== undefined) return free
    if (this.#allocated + this.bufferBytes > this.#maxBytes) return undefined
    this.#allocated += this.bufferBytes
    return Buffer.allocUnsafeSlow(this.bufferBytes)
  }

  /** Takes back a buffer take() gave, once nothing reads or writes it any more. */
  give(buffer: Buffer): void {
    this.#free.push(buffer)
  }

  /**
   * A lent buffer that will not come back: a write of it was still pending when its response ended
   * (node may call that write back late, or never). It no longer counts against the bound.
   */
  forget(): void {
    this.#allocated -= this.bufferBytes
  }

  /** Bytes of buffers that exist (lent or free): never more than maxBytes. */
  get allocatedBytes(): number {
    return this.#allocated
  }

  /** Bytes of buffers waiting to be lent. */
  get freeBytes(): number {
    return this.#free.length * this.bufferBytes
  }
}
