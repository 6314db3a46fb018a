/**
 * Upstream `.ls` listings: one per PathInfo, cached; the early one requested beside its narinfo;
 * dropped or replaced when the NAR itself says otherwise.
 */
import { LRUCache } from 'lru-cache'
import {
  checkListingFits,
  listingMemoryBytes,
  maxListingBytes,
  parseListing,
  type Listing,
  type ListingNode,
} from '../formats/listing.js'
import type { Logger } from '../log.js'
import type { PathInfo } from './path-info.js'
import { readSmallBody } from './read-body.js'
import { type Upstream, UpstreamError } from './upstream.js'

export const MAX_LISTING_BYTES = 64 * 1024 * 1024
/**
 * A `.ls` requested beside its narinfo is kept at most this big (~3,000 files; bigger ones are
 * asked for again with the limit their NarSize allows), this many at once, for this long: a burst
 * of lookups whose listings nobody reads holds at most EARLY_MAX × EARLY_MAX_BYTES.
 */
export const EARLY_MAX_BYTES = 256 * 1024
const EARLY_MAX = 64
const EARLY_TTL_MS = 10_000
/** Parsed upstream listings kept in memory: ~200 listings of 1,000 files. */
export const LISTINGS_MEMORY_BYTES = 32 * 1024 * 1024

/**
 * An early `.ls` answer: its body, undefined when there is none, `too-big` when its Content-Length
 * is over EARLY_MAX_BYTES, `retry` when the request failed (listing() asks again, and judges
 * that answer).
 */
type EarlyListing = Buffer | undefined | 'too-big' | 'retry'

type ListingFound = { readonly listing: Listing | undefined }

export interface UpstreamListingsOptions {
  readonly log: Logger
  /** How long a `.ls` the upstream failed to send is remembered as missing. */
  readonly negativeTtlMs: number
  /** How many listings are kept in memory. */
  readonly maxEntries: number
  /** The memory they may take, as listingMemoryBytes() counts it (default LISTINGS_MEMORY_BYTES). */
  readonly maxListingBytes?: number | undefined
  /** Called for each upstream `.ls` that its NAR contradicted (metrics). */
  readonly onListingMismatch?: ((upstream: string) => void) | undefined
}

export class UpstreamListings {
  readonly #log: Logger
  readonly #onListingMismatch: UpstreamListingsOptions['onListingMismatch']
  readonly #listings: LRUCache<PathInfo, ListingFound>
  /** Early answers waiting for listing(); one never asked for (its NAR is on disk, a 404) is dropped soon. */
  readonly #early = new LRUCache<PathInfo, Promise<EarlyListing>>({
    max: EARLY_MAX,
    ttl: EARLY_TTL_MS,
    ttlAutopurge: true,
  })

  constructor(options: UpstreamListingsOptions) {
    this.#log = options.log
    this.#onListingMismatch = options.onListingMismatch
    this.#listings = new LRUCache<PathInfo, ListingFound>({
      max: options.maxEntries,
      // A listing bigger than the bound is not kept (lru-cache refuses it), and is read again when asked for.
      maxSize: options.maxListingBytes ?? LISTINGS_MEMORY_BYTES,
      sizeCalculation: (found) => 64 + (found.listing === undefined ? 0 : listingMemoryBytes(found.listing)),
      ignoreFetchAbort: true,
      fetchMethod: async (info, _stale, { options: setOptions }) => {
        const { listing, upstreamFailed } = await this.#fetch(info)
        // An upstream that failed may well answer next time: forget that soon, like a "not found".
        if (upstreamFailed) setOptions.ttl = options.negativeTtlMs
        return { listing }
      },
    })
  }

  /** The upstream's `.ls` listing, or undefined when it has none or it is unusable (then the NAR is the source). */
  async listing(info: PathInfo): Promise<Listing | undefined> {
    return (await this.#listings.fetch(info))?.listing
  }

  /**
   * Requests the `.ls` of `hash` now, beside its narinfo: nearly every lookup is followed by
   * listing() and the key needs only the hash, so a cold path costs one round trip before its NAR,
   * not two. The answer is kept for the PathInfo passed to what this returns; without one (the
   * narinfo is not there) it is read and dropped rather than aborted, which would close a
   * kept-alive connection.
   */
  requestEarly(upstream: Upstream, hash: string): (found: PathInfo) => void {
    const body = readEarly(upstream, hash)
    return (found) => this.#early.set(found, body)
  }

  /**
   * The NAR of `info` contradicted its upstream's `.ls` (`why`): the NAR wins, so the listing is
   * no longer used for this path, and the upstream gets a counted fault.
   */
  distrust(info: PathInfo, why: string): void {
    this.#log.warn('upstream listing disagrees with its NAR; using the NAR', {
      upstream: info.upstream.name,
      storePath: info.narInfo.storePath,
      error: why,
    })
    this.#onListingMismatch?.(info.upstream.name)
    this.#listings.set(info, { listing: undefined })
  }

  /**
   * The NAR of `info` was verified, with `verified` as its listing: an upstream `.ls` of it in use
   * that says otherwise (an entry, type, size, mode, target or offset) is replaced by that listing.
   */
  confirm(info: PathInfo, verified: Listing): void {
    const listed = this.#listings.peek(info)?.listing
    if (listed === undefined || sameNode(listed.root, verified.root)) return
    this.distrust(info, 'the listing differs from the NAR')
    this.#listings.set(info, { listing: verified })
  }

  forget(info: PathInfo): void {
    this.#listings.delete(info)
  }

  /** The upstream's `.ls`, or undefined; `upstreamFailed` when that is for now only (a timeout, a 5xx, a reset). */
  async #fetch(info: PathInfo): Promise<{ listing: Listing | undefined; upstreamFailed: boolean }> {
    const key = `${info.storePath.hash}.ls`
    const maxBytes = Math.min(MAX_LISTING_BYTES, maxListingBytes(info.narInfo.narSize))
    const early = this.#early.get(info)
    this.#early.delete(info)
    try {
      const answer = early === undefined ? 'retry' : await early
      // Over the early limit and the NarSize limit alike: no need to ask again to refuse it.
      if (answer === 'too-big' && maxBytes <= EARLY_MAX_BYTES)
        throw new UpstreamError(info.upstream.name, 'bad-response', `${key} is over the ${maxBytes}-byte limit`)
      const body = answer === 'retry' || answer === 'too-big' ? await readListing(info.upstream, key, maxBytes) : answer
      if (body === undefined) return { listing: undefined, upstreamFailed: false }
      // An early body was read before the narinfo said how big the NAR is.
      if (body.length > maxBytes)
        throw new UpstreamError(info.upstream.name, 'bad-response', `${key} is over the ${maxBytes}-byte limit`)
      const listing = parseListing(body.toString('utf8'))
      checkListingFits(listing, info.narInfo.narSize)
      return { listing, upstreamFailed: false }
    } catch (err) {
      // A broken listing only costs speed: the NAR itself is the authority.
      this.#log.warn('ignoring unusable listing', { upstream: info.upstream.name, key, error: err })
      return { listing: undefined, upstreamFailed: err instanceof UpstreamError && err.kind !== 'bad-response' }
    }
  }
}

/** The (decoded) body of the upstream's `.ls`, or undefined when it has none. */
async function readEarly(upstream: Upstream, hash: string): Promise<EarlyListing> {
  try {
    const res = await upstream.get(`${hash}.ls`)
    if (res === undefined) return undefined
    if (res.size !== undefined && res.size > EARLY_MAX_BYTES) {
      res.body.destroy()
      return 'too-big'
    }
    return await readSmallBody(res, EARLY_MAX_BYTES, upstream.name, `${hash}.ls`)
  } catch {
    return 'retry'
  }
}

async function readListing(upstream: Upstream, key: string, maxBytes: number): Promise<Buffer | undefined> {
  const res = await upstream.get(key)
  return res === undefined ? undefined : readSmallBody(res, maxBytes, upstream.name, key)
}

/** Whether a `.ls` node says what the NAR's own says (its offsets, where it has any, included). */
function sameNode(listed: ListingNode, actual: ListingNode): boolean {
  switch (listed.type) {
    case 'regular':
      return (
        actual.type === 'regular' &&
        listed.size === actual.size &&
        listed.executable === actual.executable &&
        (listed.narOffset === undefined || listed.narOffset === actual.narOffset)
      )
    case 'symlink':
      return actual.type === 'symlink' && listed.target === actual.target
    case 'directory':
      if (actual.type !== 'directory' || listed.entries.size !== actual.entries.size) return false
      for (const [name, node] of listed.entries) {
        const other = actual.entries.get(name)
        if (other === undefined || !sameNode(node, other)) return false
      }
      return true
  }
}
