/** Reads each upstream's nix-cache-info at start: orders them by Priority like Nix and sets aside other store dirs. */
import { parseCacheInfo } from '../formats/cache-info.js'
import type { Logger } from '../log.js'
import { readSmallBody } from './read-body.js'
import type { Upstream } from './upstream.js'

export interface UpstreamOrderOptions {
  readonly storeDir: string
  /** Keep the configured order whatever the caches say. */
  readonly pinned: boolean
  readonly log: Logger
}

/**
 * Priority comes from `?priority=N` in the URL, else `Priority:` in nix-cache-info, else 0 (Nix's
 * rule); lower is asked first and ties keep the configured order (a stable sort, as in Nix). An
 * upstream for another StoreDir cannot answer `/nix/store/…` and is left out, loudly.
 */
export async function orderUpstreams(upstreams: readonly Upstream[], urls: readonly string[], options: UpstreamOrderOptions): Promise<Upstream[]> {
  const described = await Promise.all(
    upstreams.map(async (upstream, index) => {
      const fromUrl = new URL(urls[index]!).searchParams.get('priority')
      let storeDir: string | undefined
      let priority = fromUrl !== null && /^-?\d+$/.test(fromUrl) ? Number(fromUrl) : undefined
      try {
        const res = await upstream.get('nix-cache-info')
        if (res !== undefined) {
          const info = parseCacheInfo((await readSmallBody(res, 64 * 1024, upstream.name, 'nix-cache-info')).toString('utf8'))
          storeDir = info.storeDir
          priority ??= info.priority
        }
      } catch (err) {
        options.log.warn('cannot read nix-cache-info; keeping the configured position', { upstream: upstream.name, error: err })
      }
      return { upstream, index, storeDir, priority: priority ?? 0 }
    }),
  )
  const usable = described.filter((d) => {
    if (d.storeDir === undefined || d.storeDir === options.storeDir) return true
    options.log.error('upstream is for another store dir and is not used', { upstream: d.upstream.name, storeDir: d.storeDir, serving: options.storeDir })
    return false
  })
  if (!options.pinned) usable.sort((a, b) => a.priority - b.priority || a.index - b.index)
  options.log.info('upstream order', { upstreams: usable.map((d) => `${d.upstream.name} (priority ${d.priority})`) })
  return usable.map((d) => d.upstream)
}
