/** Composition root: builds every object from a Config and starts listening. Tests start many of these in one process. */
import { existsSync } from 'node:fs'
import { mkdir, statfs } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import { serve, type ServerType } from '@hono/node-server'
import type { Config, SizeSetting } from './config.js'
import { CACHE_NIXOS_ORG_KEY, parsePublicKey, type PublicKey } from './formats/signature.js'
import { DEFAULT_STORE_DIR } from './formats/store-path.js'
import { createApp } from './http/app.js'
import type { Logger } from './log.js'
import { NarStore } from './store/nar-store.js'
import { createUpstream } from './upstream/create-upstream.js'
import type { Upstream } from './upstream/upstream.js'
import { PathInfoLookup } from './upstream/path-info-lookup.js'
import { orderUpstreams } from './upstream/upstream-order.js'

export const VERSION = '0.1.0'
/** public/ sits beside src/ when run from source, two levels up from dist/src/ when compiled. */
export const PUBLIC_DIR = ['../public/', '../../public/'].map((rel) => fileURLToPath(new URL(rel, import.meta.url))).find((dir) => existsSync(dir)) ?? 'public'

export interface RunningServer {
  /** `http://host:port` */
  readonly url: string
  readonly narStore: NarStore
  close(): Promise<void>
}

export async function startServer(config: Config, log: Logger): Promise<RunningServer> {
  const upstreams = config.upstreams.map((url) => createUpstream(url, { timeoutMs: config.upstreamTimeoutMs, userAgent: `unnar/${VERSION}` }))
  const maxBytes = await resolveCacheSize(config.cacheDir, config.cacheSize)
  const store = new NarStore({ dir: config.cacheDir, maxBytes, maxNarBytes: config.maxNarSize ?? Math.floor(maxBytes / 4), log })
  await store.init()
  const lookup = new PathInfoLookup(upstreams, { log, negativeTtlMs: config.negativeTtlMs, maxEntries: 10_000, trustedKeys: trustPolicy(config) })
  // Served in the configured order until every nix-cache-info has answered (a slow or offline
  // upstream must not delay the start).
  void orderUpstreams(upstreams, config.upstreams, { storeDir: DEFAULT_STORE_DIR, pinned: config.pinUpstreamOrder, log }).then((ordered) => {
    if (ordered.length === 0) log.error('no upstream serves /nix/store; keeping the configured list', { storeDir: DEFAULT_STORE_DIR })
    else lookup.reorder(ordered)
  })
  const app = createApp({ lookup, store, log, storeDir: DEFAULT_STORE_DIR, publicDir: PUBLIC_DIR, domain: config.domain })
  const server: ServerType = await new Promise((resolve, reject) => {
    const s = serve({ fetch: app.fetch, port: config.port, ...(config.host === undefined ? {} : { hostname: config.host }) }, () => resolve(s))
    s.once('error', reject)
  })
  const address = server.address() as AddressInfo
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address
  const url = `http://${host === '[::]' ? '[::1]' : host === '0.0.0.0' ? '127.0.0.1' : host}:${address.port}`
  log.info('unnar listening', { url, upstreams: upstreams.map((u) => u.name), cacheDir: config.cacheDir, cacheBytes: maxBytes })
  return {
    url,
    narStore: store,
    close: () =>
      new Promise<void>((resolve) => {
        store.close()
        server.close(() => resolve())
        ;(server as { closeAllConnections?: () => void }).closeAllConnections?.()
      }),
  }
}

/**
 * TRUSTED_PUBLIC_KEYS set: every upstream must sign with one of them (an empty value turns checking
 * off). Unset: like Nix's default, cache.nixos.org must carry cache.nixos.org-1's signature, and
 * other upstreams are not checked.
 */
function trustPolicy(config: Config): (upstream: Upstream) => readonly PublicKey[] | undefined {
  const configured = config.trustedPublicKeys
  if (configured !== undefined) return () => (configured.length > 0 ? configured : undefined)
  const nixos = [parsePublicKey(CACHE_NIXOS_ORG_KEY)]
  return (upstream) => (/^https?:\/\/cache\.nixos\.org(\/|$)/.test(upstream.name) ? nixos : undefined)
}

/** `20%` means a share of the filesystem that holds the cache directory. */
async function resolveCacheSize(dir: string, setting: SizeSetting): Promise<number> {
  if ('bytes' in setting) return setting.bytes
  await mkdir(dir, { recursive: true })
  const fs = await statfs(dir)
  return Math.floor((fs.blocks * fs.bsize * setting.percent) / 100)
}
