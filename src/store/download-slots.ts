/** A counting semaphore for upstream NAR downloads: excess downloads wait in FIFO order instead of failing. */
export class DownloadSlots {
  readonly #max: number
  #used = 0
  readonly #queue: Array<() => void> = []

  constructor(max: number) {
    this.#max = Math.max(1, max)
  }

  get active(): number {
    return this.#used
  }

  get queued(): number {
    return this.#queue.length
  }

  /** Resolves with a release function once a slot is free; release exactly once. */
  async acquire(): Promise<() => void> {
    if (this.#used < this.#max) this.#used++
    else await new Promise<void>((resolve) => this.#queue.push(resolve))
    let released = false
    return () => {
      if (released) return
      released = true
      const next = this.#queue.shift()
      // The slot passes straight to the next waiter, so #used stays the same.
      if (next !== undefined) next()
      else this.#used--
    }
  }
}
