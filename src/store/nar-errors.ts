/** Why a NAR download failed, as the store and the HTTP layer tell them apart. */

/** The NAR failed verification (size or hash) or is not a valid NAR. */
export class NarVerificationError extends Error {
  override readonly name = 'NarVerificationError'
  readonly upstream: string
  constructor(upstream: string, detail: string, options?: ErrorOptions) {
    super(`${upstream}: ${detail}`, options)
    this.upstream = upstream
  }
}

/** A NAR too big to keep was dropped because every client reading it had left. */
export class NarAbandonedError extends Error {
  override readonly name = 'NarAbandonedError'
  constructor() {
    super('every client left a NAR that is not kept')
  }
}

/**
 * The cache could not do its part: writing to its directory failed, or a decoder program could
 * not run there. The store streams straight from upstreams for a while; no upstream is blamed.
 */
export class DiskError extends Error {
  override readonly name = 'DiskError'
}
