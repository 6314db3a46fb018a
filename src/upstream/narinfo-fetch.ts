/** One upstream's narinfo of one store path: fetched, parsed, checked against the path, and trusted or refused. */
import { parseNarInfo, type NarInfo } from '../formats/narinfo.js'
import { isContentAddressed, verifyNarInfo, type PublicKey } from '../formats/signature.js'
import { parseStorePath, type StorePath } from '../formats/store-path.js'
import { keyProblem } from './cache-key.js'
import type { PathInfo } from './path-info.js'
import { readSmallBody } from './read-body.js'
import { type Upstream, UpstreamError } from './upstream.js'

export const MAX_NARINFO_BYTES = 1024 * 1024

/** What a narinfo must satisfy to be used. */
export interface NarInfoRules {
  /** The store directory the narinfos must be for. */
  readonly storeDir: string
  /** The keys an upstream's narinfos must be signed with; undefined = not checked. */
  readonly trustedKeys: (upstream: Upstream) => readonly PublicKey[] | undefined
  /** Called for each narinfo rejected for want of a trusted signature (metrics). */
  readonly onUntrusted?: ((upstream: string) => void) | undefined
}

/**
 * The narinfo of `hash` from `upstream`, or undefined when it has none. Throws an UpstreamError
 * when the request fails or the narinfo is unusable (`untrusted` when no trusted key signed it).
 */
export async function fetchPathInfo(
  upstream: Upstream,
  hash: string,
  rules: NarInfoRules,
  signal?: AbortSignal,
): Promise<PathInfo | undefined> {
  const key = `${hash}.narinfo`
  const res = await upstream.get(key, signal)
  if (res === undefined) return undefined
  const text = (await readSmallBody(res, MAX_NARINFO_BYTES, upstream.name, key)).toString('utf8')
  const { narInfo, storePath } = parse(upstream, key, text, rules.storeDir)
  if (storePath.hash !== hash) {
    throw new UpstreamError(upstream.name, 'bad-response', `${key} describes another path (${narInfo.storePath})`)
  }
  // Refused before the NAR is asked for: its signature (if any) does not cover URL.
  const problem = keyProblem(narInfo.url)
  if (problem !== undefined) {
    throw new UpstreamError(
      upstream.name,
      'bad-response',
      `${key} has a URL outside the cache (${JSON.stringify(narInfo.url.slice(0, 200))}: ${problem})`,
    )
  }
  return { storePath, narInfo, upstream, narKey: narInfo.url, trustedBy: checkTrust(upstream, narInfo, key, rules) }
}

function parse(
  upstream: Upstream,
  key: string,
  text: string,
  storeDir: string,
): { narInfo: NarInfo; storePath: StorePath } {
  try {
    const narInfo = parseNarInfo(text)
    return { narInfo, storePath: parseStorePath(narInfo.storePath, storeDir) }
  } catch (err) {
    throw new UpstreamError(upstream.name, 'bad-response', `invalid ${key}: ${(err as Error).message}`, { cause: err })
  }
}

/** Nix's rule: one valid signature by a trusted key, or a content address that recomputes. */
function checkTrust(upstream: Upstream, narInfo: NarInfo, key: string, rules: NarInfoRules): string | undefined {
  const keys = rules.trustedKeys(upstream)
  if (keys === undefined) return undefined
  const signer = verifyNarInfo(narInfo, keys, rules.storeDir)
  if (signer !== undefined) return signer
  if (isContentAddressed(narInfo, rules.storeDir)) return 'content-address'
  rules.onUntrusted?.(upstream.name)
  throw new UpstreamError(
    upstream.name,
    'untrusted',
    `${key} has no trusted signature (trusted keys: ${keys.map((k) => k.name).join(', ')})`,
  )
}
