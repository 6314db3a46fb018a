/**
 * Reads each upstream's nix-cache-info: orders the upstreams by Priority like Nix and sets aside other
 * store dirs; at start, and again now and then so that a cache that changes its Priority or StoreDir
 * is picked up without a restart.
 */
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

/** How often nix-cache-info is read again. */
export const CACHE_INFO_INTERVAL_MS = 10 * 60_000

/** What one nix-cache-info said; undefined fields were not said (or could not be read). */
interface CacheFacts {
  readonly storeDir: string | undefined
  readonly priority: number | undefined
}

interface Described {
  readonly upstream: Upstream
  readonly index: number
  readonly storeDir: string | undefined
  readonly priority: number
}

/**
 * Priority comes from `?priority=N` in the URL, else `Priority:` in nix-cache-info, else 0 (Nix's
 * rule); lower is asked first and ties keep the configured order (a stable sort, as in Nix). An
 * upstream for another StoreDir cannot answer `/nix/store/…` and is left out, loudly.
 */
export async function orderUpstreams(
  upstreams: readonly Upstream[],
  urls: readonly string[],
  options: UpstreamOrderOptions,
): Promise<Upstream[]> {
  const described = await describeUpstreams(upstreams, urls, new Map(), options.log)
  const { ordered, excluded } = decide(described, options)
  logOrder(ordered, excluded, options)
  return ordered.map((d) => d.upstream)
}

export interface UpstreamOrderWatch {
  /** Settles once the first round of nix-cache-info reads is over and onOrder has seen it. */
  readonly ready: Promise<void>
  /** Stops the re-reads (a read in progress finishes, but onOrder is not called again). */
  stop(): void
}

export interface UpstreamOrderWatchOptions extends UpstreamOrderOptions {
  /** Time between the end of one round of reads and the start of the next. */
  readonly intervalMs: number
  /** Called after the first round, and after any later round that changes the order. */
  readonly onOrder: (ordered: Upstream[]) => void
  /**
   * Called with onOrder: every upstream by the store dir it declares (none declared counts as
   * `storeDir`), each list in priority order.
   */
  readonly onStoreDirs?: (byStoreDir: ReadonlyMap<string, Upstream[]>) => void
}

/**
 * Reads every nix-cache-info now and then every `intervalMs` (the timer does not keep the process
 * alive). A round in which an upstream cannot be read keeps what that upstream said last time.
 */
export function watchUpstreamOrder(
  upstreams: readonly Upstream[],
  urls: readonly string[],
  options: UpstreamOrderWatchOptions,
): UpstreamOrderWatch {
  const known = new Map<Upstream, CacheFacts>()
  let stopped = false
  let timer: NodeJS.Timeout | undefined
  let last: string | undefined
  const round = async (): Promise<void> => {
    const described = await describeUpstreams(upstreams, urls, known, options.log)
    if (stopped) return
    const { ordered, excluded } = decide(described, options)
    const signature = JSON.stringify([
      ordered.map((d) => [d.index, d.priority]),
      excluded.map((d) => [d.index, d.storeDir]),
    ])
    if (signature === last) return
    const first = last === undefined
    last = signature
    // With onStoreDirs the caller serves (or reports) the other store dirs itself.
    logOrder(
      ordered,
      options.onStoreDirs === undefined ? excluded : [],
      options,
      first ? undefined : 'upstream order changed',
    )
    options.onOrder(ordered.map((d) => d.upstream))
    if (options.onStoreDirs !== undefined) {
      const byStoreDir = new Map<string, Upstream[]>()
      const sorted = options.pinned
        ? described
        : [...described].sort((a, b) => a.priority - b.priority || a.index - b.index)
      for (const d of sorted) {
        const dir = d.storeDir ?? options.storeDir
        byStoreDir.set(dir, [...(byStoreDir.get(dir) ?? []), d.upstream])
      }
      options.onStoreDirs(byStoreDir)
    }
  }
  const schedule = (): void => {
    if (stopped) return
    timer = setTimeout(() => void round().catch(report).finally(schedule), options.intervalMs)
    timer.unref()
  }
  const report = (err: unknown): void =>
    options.log.error('cannot re-read the upstreams nix-cache-info', { error: err })
  const ready = round().catch(report)
  void ready.finally(schedule)
  return {
    ready,
    stop: () => {
      stopped = true
      if (timer !== undefined) clearTimeout(timer)
    },
  }
}

async function describeUpstreams(
  upstreams: readonly Upstream[],
  urls: readonly string[],
  known: Map<Upstream, CacheFacts>,
  log: Logger,
): Promise<Described[]> {
  return Promise.all(
    upstreams.map(async (upstream, index) => {
      const fromUrl = new URL(urls[index]!).searchParams.get('priority')
      let facts = known.get(upstream) ?? { storeDir: undefined, priority: undefined }
      try {
        const res = await upstream.get('nix-cache-info')
        // No nix-cache-info at all is an answer too: nothing declared.
        facts = { storeDir: undefined, priority: undefined }
        if (res !== undefined) {
          const info = parseCacheInfo(
            (await readSmallBody(res, 64 * 1024, upstream.name, 'nix-cache-info')).toString('utf8'),
          )
          facts = { storeDir: info.storeDir, priority: info.priority }
        }
        known.set(upstream, facts)
      } catch (err) {
        facts = known.get(upstream) ?? facts
        log.warn(
          known.has(upstream)
            ? 'cannot re-read nix-cache-info; keeping what it said before'
            : 'cannot read nix-cache-info; keeping the configured position',
          {
            upstream: upstream.name,
            error: err,
          },
        )
      }
      const priority = fromUrl !== null && /^-?\d+$/.test(fromUrl) ? Number(fromUrl) : facts.priority
      return { upstream, index, storeDir: facts.storeDir, priority: priority ?? 0 }
    }),
  )
}

function decide(
  described: readonly Described[],
  options: UpstreamOrderOptions,
): { ordered: Described[]; excluded: Described[] } {
  const ordered = described.filter((d) => d.storeDir === undefined || d.storeDir === options.storeDir)
  const excluded = described.filter((d) => !ordered.includes(d))
  if (!options.pinned) ordered.sort((a, b) => a.priority - b.priority || a.index - b.index)
  return { ordered, excluded }
}

function logOrder(
  ordered: readonly Described[],
  excluded: readonly Described[],
  options: UpstreamOrderOptions,
  message = 'upstream order',
): void {
  for (const d of excluded) {
    options.log.error('upstream is for another store dir and is not used', {
      upstream: d.upstream.name,
      storeDir: d.storeDir,
      serving: options.storeDir,
    })
  }
  options.log.info(message, { upstreams: ordered.map((d) => `${d.upstream.name} (priority ${d.priority})`) })
}
