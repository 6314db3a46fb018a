/** Composition root: builds every object from a Config and starts listening. Tests start many of these in one process. */
import { existsSync } from 'node:fs'
import { lstat, mkdir, rm, stat, statfs } from 'node:fs/promises'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createConnection, type AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import { getRequestListener, RequestError } from '@hono/node-server'
import { Hono } from 'hono'
import { type DecoderPrograms, findDecoderPrograms } from './codecs/decoder-programs.js'
import { DecoderLauncher } from './codecs/file-decoder.js'
import { warmZstdWorker } from './codecs/worker-decoder.js'
import { describeConfig, type Config, type SizeSetting } from './config.js'
import { CACHE_NIXOS_ORG_KEY, parsePublicKey, type PublicKey } from './formats/signature.js'
import { DEFAULT_STORE_DIR } from './formats/store-path.js'
import { createApp, metricsHandler } from './http/app.js'
import type { HotStoreFile } from './http/store-route.js'
import { HotResponses } from './http/hot-responses.js'
import { DISK_BODY_READ_BYTES } from './http/disk-body.js'
import { ReadBuffers } from './http/read-buffers.js'
import { closeWithConnection } from './http/node-env.js'
import { createRequestReporter, type RequestReporter } from './http/request-log.js'
import { OtherStoreDirs } from './http/store-dirs.js'
import type { Logger } from './log.js'
import { createMetrics, type Metrics } from './metrics.js'
import { warmHashWorker } from './store/file-hasher.js'
import { HotFiles } from './store/hot-files.js'
import { NarStore } from './store/nar-store.js'
import { createUpstream, upstreamOptionsFrom } from './upstream/create-upstream.js'
import type { Upstream } from './upstream/upstream.js'
import { PathInfoLookup } from './upstream/path-info-lookup.js'
import { CACHE_INFO_INTERVAL_MS, type UpstreamOrderWatch, watchUpstreamOrder } from './upstream/upstream-order.js'

export const VERSION = '0.1.0'
/** public/ sits beside src/ when run from source, two levels up from dist/src/ when compiled. */
export const PUBLIC_DIR =
  ['../public/', '../../public/']
    .map((rel) => fileURLToPath(new URL(rel, import.meta.url)))
    .find((dir) => existsSync(dir)) ?? 'public'

export interface RunningServer {
  /** `http://host:port` (`http://localhost` when listening on a unix socket). */
  readonly url: string
  /** The unix socket path, when listening on one. */
  readonly socketPath: string | undefined
  /** `http://host:port` of the separate metrics listener, if any. */
  readonly metricsUrl: string | undefined
  readonly narStore: NarStore
  /** Stops at once: connections closed, downloads aborted (their temp files removed). */
  close(): Promise<void>
  /**
   * Graceful stop: no new connections, `/readyz` says 503, in-flight responses get up to
   * `shutdownTimeoutMs` to finish; then as close().
   */
  shutdown(): Promise<void>
}

export async function startServer(config: Config, log: Logger): Promise<RunningServer> {
  const metrics = createMetrics()
  const upstreams = createUpstreams(config, log, metrics)
  const maxBytes = await resolveCacheSize(config.cacheDir, config.cacheSize)
  // Looked up once: every NAR decodes with the programs this machine had at start.
  const decoders: Decoders = { programs: findDecoderPrograms(), launcher: new DecoderLauncher() }
  // The store reports broken NARs and verified listings to the lookup of the NAR's store dir.
  const store = createStore(config, log, metrics, maxBytes, decoders, (storeDir) => lookups.lookupFor(storeDir))
  const hotFiles = new HotFiles<HotStoreFile>({ maxBytes: config.memoryCacheBytes })
  const readBuffers = new ReadBuffers({ bufferBytes: DISK_BODY_READ_BYTES, maxBytes: READ_BUFFERS_BYTES })
  const lookups = createLookups(config, log, metrics, upstreams, { store, hotFiles, readBuffers })
  metrics.watch({ store: () => store, upstreams: () => lookups.main.health() })
  const state: ServerState = { accepting: true, storeInit: undefined }
  const server = createMainServer(config, log, metrics, { store, hotFiles, readBuffers, lookups, state })
  const { url, address } = await listen(server, config)
  await initStore(store, server, state)
  warnAboutMissingDirectories(config.upstreams, log)
  warmZstdWorker()
  warmHashWorker()
  decoders.launcher.warm()
  const metricsServer = await startMetricsServer(config, log, metrics)
  // `listen` is the address really bound (all interfaces: `[::]`); `url` one that reaches it from here.
  log.info('unnar listening', {
    listen: address,
    url,
    metricsUrl: metricsServer?.url,
    cacheBytes: maxBytes,
    config: describeConfig(config),
  })
  const close = async () => {
    state.accepting = false
    lookups.orderWatch.stop()
    await Promise.all([store.close(), ...[server, metricsServer?.server].map((s) => s !== undefined && stopServer(s))])
    decoders.launcher.close()
  }
  return {
    url,
    socketPath: config.socket,
    metricsUrl: metricsServer?.url,
    narStore: store,
    close,
    shutdown: async () => {
      state.accepting = false
      await drain(server, store, config, log)
      await close()
    },
  }
}

/** What decodes NARs: the programs found at start, and the shells started ahead for them. */
interface Decoders {
  readonly programs: DecoderPrograms
  readonly launcher: DecoderLauncher
}

/** What requests look at while the server starts and stops. */
interface ServerState {
  accepting: boolean
  /** While the NAR store is still reading its directory (just after listen), what requests wait for. */
  storeInit: Promise<void> | undefined
}

/** The narinfo lookups: /nix/store's, the other store dirs', and what keeps their upstream order. */
interface Lookups {
  readonly main: PathInfoLookup
  readonly otherStores: OtherStoreDirs
  readonly lookupFor: (storeDir: string) => PathInfoLookup | undefined
  readonly orderWatch: UpstreamOrderWatch
}

function createUpstreams(config: Config, log: Logger, metrics: Metrics): Upstream[] {
  const upstreamOptions = upstreamOptionsFrom(config, {
    userAgent: `unnar/${VERSION}`,
    log,
    onRequest: (event) => metrics.upstream(event),
  })
  return config.upstreams.map((url) => createUpstream(url, upstreamOptions))
}

function createStore(
  config: Config,
  log: Logger,
  metrics: Metrics,
  maxBytes: number,
  decoders: Decoders,
  lookupFor: (storeDir: string) => PathInfoLookup | undefined,
): NarStore {
  return new NarStore({
    decoderPrograms: decoders.programs,
    decoderLauncher: decoders.launcher,
    dir: config.cacheDir,
    maxBytes,
    maxNarBytes: config.maxNarSize ?? Math.floor(maxBytes / 4),
    maxDownloads: config.maxDownloads,
    events: {
      ...metrics.storeEvents,
      upstreamNarFailed: (info) => lookupFor(info.storePath.storeDir)?.reportBrokenNar(info),
      narVerified: (info, listing) => lookupFor(info.storePath.storeDir)?.confirmListing(info, listing),
    },
    verify: config.verify,
    log,
  })
}

function createLookups(
  config: Config,
  log: Logger,
  metrics: Metrics,
  upstreams: readonly Upstream[],
  serving: {
    readonly store: NarStore
    readonly hotFiles: HotFiles<HotStoreFile>
    readonly readBuffers: ReadBuffers
  },
): Lookups {
  const lookupOptions = {
    log,
    negativeTtlMs: config.negativeTtlMs,
    maxEntries: 10_000,
    trustedKeys: trustPolicy(config),
    strategy: config.lookup,
    onUntrusted: () => metrics.untrusted(),
    onListingMismatch: (upstream: string) => metrics.listingMismatch(upstream),
  }
  const main = new PathInfoLookup(upstreams, { ...lookupOptions, storeDir: DEFAULT_STORE_DIR })
  const otherStores = new OtherStoreDirs({
    defaultStoreDir: DEFAULT_STORE_DIR,
    allowed: config.storeDirs,
    lookup: lookupOptions,
    ...serving,
    log,
  })
  // Served in the configured order until every nix-cache-info has answered (a slow or offline
  // upstream must not delay the start); read again every 10 minutes for Priority/StoreDir changes.
  const orderWatch = watchUpstreamOrder(upstreams, config.upstreams, {
    storeDir: DEFAULT_STORE_DIR,
    pinned: config.pinUpstreamOrder,
    log,
    intervalMs: CACHE_INFO_INTERVAL_MS,
    onOrder: (ordered) => {
      if (ordered.length === 0) log.warn('no upstream serves /nix/store', { storeDir: DEFAULT_STORE_DIR })
      main.reorder(ordered)
    },
    onStoreDirs: (byStoreDir) => otherStores.update(byStoreDir),
  })
  return {
    main,
    otherStores,
    lookupFor: (storeDir) => (storeDir === DEFAULT_STORE_DIR ? main : otherStores.lookup(storeDir)),
    orderWatch,
  }
}

/** The app behind the hot-response lane, in the node server that listens on the main address. */
function createMainServer(
  config: Config,
  log: Logger,
  metrics: Metrics,
  parts: {
    readonly store: NarStore
    readonly hotFiles: HotFiles<HotStoreFile>
    readonly readBuffers: ReadBuffers
    readonly lookups: Lookups
    readonly state: ServerState
  },
): Server {
  const { store, hotFiles, readBuffers, lookups, state } = parts
  const reporter = createRequestReporter(log, metrics)
  const hotResponses = new HotResponses({
    reporter,
    maxBytes: HOT_RESPONSES_BYTES,
    maxUrlLength: config.maxUrlLength,
    keyByHost: config.domain !== undefined,
    onAnswer: () => metrics.hotAnswer(),
  })
  const app = createApp({
    lookup: lookups.main,
    store,
    log,
    storeDir: DEFAULT_STORE_DIR,
    publicDir: PUBLIC_DIR,
    domain: config.domain,
    metrics,
    reporter,
    hotFiles,
    readBuffers,
    hotResponses,
    serveMetrics: config.metrics.kind === 'main',
    maxUrlLength: config.maxUrlLength,
    accepting: () => state.accepting,
    otherStore: (path) => lookups.otherStores.route(path),
  })
  return createHttpServer(app.fetch, config, log, {
    answer: (req, res) => hotResponses.serve(req, res),
    reporter,
    pending: () => state.storeInit,
  })
}

/**
 * Reads (and tidies: temp files of a crash deleted) the store only once the listen address is
 * ours: a second instance started by mistake on the same cache directory must fail before touching
 * it. Requests arriving meanwhile wait for it.
 */
async function initStore(store: NarStore, server: Server, state: ServerState): Promise<void> {
  state.storeInit = store.init()
  try {
    await state.storeInit
  } catch (err) {
    await stopServer(server)
    throw err
  }
  state.storeInit = undefined
}

/** The separate metrics listener, when configured. */
async function startMetricsServer(
  config: Config,
  log: Logger,
  metrics: Metrics,
): Promise<{ server: Server; url: string } | undefined> {
  if (config.metrics.kind !== 'separate') return undefined
  const metricsApp = new Hono()
  metricsApp.get('/metrics', metricsHandler(metrics))
  const server = createHttpServer(metricsApp.fetch, config, log)
  const { url } = await listen(server, { port: config.metrics.port, host: config.metrics.host, socket: undefined })
  return { server, url }
}

/**
 * No new connections; in-flight responses get up to `shutdownTimeoutMs` to finish, and a download
 * whose readers are done gets the rest of that time to be committed.
 */
async function drain(server: Server, store: NarStore, config: Config, log: Logger): Promise<void> {
  const drained = new Promise<boolean>((resolve) => server.close(() => resolve(true)))
  // Keep-alive connections become idle as their responses finish; close them as they do.
  const sweep = setInterval(() => server.closeIdleConnections(), 100)
  const deadline = Date.now() + config.shutdownTimeoutMs
  let timer: NodeJS.Timeout | undefined
  const timedOut = new Promise<boolean>(
    (resolve) => (timer = setTimeout(() => resolve(false), config.shutdownTimeoutMs)),
  )
  server.closeIdleConnections()
  if (!(await Promise.race([drained, timedOut]))) {
    log.warn('shutdown timeout: closing the connections still open', { seconds: config.shutdownTimeoutMs / 1000 })
  }
  clearInterval(sweep)
  clearTimeout(timer)
  await store.idle(Math.max(0, deadline - Date.now()))
}

/** A file:// upstream whose directory is not there (a typo, an unmounted disk) would only ever answer "not found". */
function warnAboutMissingDirectories(upstreams: readonly string[], log: Logger): void {
  for (const url of upstreams) {
    if (!url.startsWith('file:')) continue
    const dir = fileURLToPath(url)
    stat(dir).then(
      (info) => {
        if (!info.isDirectory())
          log.warn('a file:// upstream is not a directory: nothing will be found there', { upstream: url })
      },
      (err: NodeJS.ErrnoException) =>
        log.warn('a file:// upstream directory cannot be read: nothing will be found there until it can', {
          upstream: url,
          error: err.code ?? err.message,
        }),
    )
  }
}

/** What the main listener adds in front of the app: the hot-response lane, and the request log for requests the app never sees. */
interface Front {
  /** True when the request was answered. */
  readonly answer: (req: IncomingMessage, res: ServerResponse) => boolean
  readonly reporter: RequestReporter
  /** While the NAR store is still reading its directory (just after listen), what requests wait for. */
  readonly pending: () => Promise<void> | undefined
}

/** The node HTTP server with the limits that keep slow or numerous clients from starving others. */
function createHttpServer(
  fetch: (request: Request, env: never) => Response | Promise<Response>,
  config: Config,
  log: Logger,
  front?: Front,
): Server {
  // node-server calls errorHandler synchronously from the listener call when the request target
  // is no URL at all (a raw backslash, say), before any await: `arriving` is that request.
  let arriving: { req: IncomingMessage; res: ServerResponse; started: number } | undefined
  const app = getRequestListener(fetch as never, {
    errorHandler: (err) => {
      const bad = err instanceof RequestError
      if (bad && arriving !== undefined && front !== undefined) {
        const { req, res, started } = arriving
        front.reporter.reportOnClose(res, {
          id: front.reporter.id(undefined),
          method: req.method ?? '',
          path: req.url ?? '',
          route: 'other',
          status: 400,
          started,
          notes: {},
        })
      } else if (!bad) {
        log.error('request failed', { status: 500, error: err as Error, stack: (err as Error).stack })
      }
      const text = bad
        ? '400 Bad Request: the request target is not a valid URL path\n'
        : '500 Internal Server Error: internal error\n'
      return new Response(text, {
        status: bad ? 400 : 500,
        headers: { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' },
      })
    },
  })
  const listener = (req: IncomingMessage, res: ServerResponse): void => {
    const waiting = front?.pending()
    if (waiting !== undefined) {
      void waiting.then(
        () => listener(req, res),
        () => res.destroy(), // the start failed: the server is closing
      )
      return
    }
    // HTTP/1.0 may omit Host (node refuses that only for 1.1); node-server needs one for the URL.
    req.headers.host ??= 'localhost'
    // A request queued behind another on a connection that dies while it waits must see its
    // response closed, or whatever the app takes for it is never let go.
    closeWithConnection(res)
    if (front?.answer(req, res) === true) return
    arriving = { req, res, started: performance.now() }
    const handled = app(req, res)
    arriving = undefined
    void handled
  }
  const server = createServer(
    {
      headersTimeout: config.headerTimeoutMs,
      requestTimeout: config.headerTimeoutMs,
      keepAliveTimeout: config.keepAliveTimeoutMs,
      // Node checks the two timeouts above only this often (30 s by default).
      connectionsCheckingInterval: Math.max(100, Math.min(1000, config.headerTimeoutMs / 2)),
    },
    listener,
  )
  server.maxConnections = config.maxConnections
  // A client that stops reading a response for this long is dropped (its reader is released).
  server.setTimeout(IDLE_SOCKET_MS)
  return server
}

const IDLE_SOCKET_MS = 300_000

/**
 * Memory for the read buffers of bodies written from disk: eight responses' two buffers at once;
 * responses beyond those read into small buffers of their own.
 */
const READ_BUFFERS_BYTES = 16 * 1024 * 1024

/** Memory for repeatable answers (their bodies are mostly shared with the store route's hot files). */
const HOT_RESPONSES_BYTES = 16 * 1024 * 1024

/** `url` reaches the server from this machine; `address` is what it is bound to (`[::]:8383` for all interfaces). */
async function listen(
  server: Server,
  config: Pick<Config, 'port' | 'host' | 'socket'>,
): Promise<{ url: string; address: string }> {
  if (config.socket !== undefined) await removeStaleSocket(config.socket)
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    const done = () => {
      server.off('error', reject)
      resolve()
    }
    if (config.socket !== undefined) server.listen(config.socket, done)
    else if (config.host === undefined) server.listen(config.port, done)
    else server.listen(config.port, config.host, done)
  })
  if (config.socket !== undefined) return { url: 'http://localhost', address: `unix:${config.socket}` }
  const bound = server.address() as AddressInfo
  const host = bound.family === 'IPv6' ? `[${bound.address}]` : bound.address
  return {
    url: `http://${host === '[::]' ? '[::1]' : host === '0.0.0.0' ? '127.0.0.1' : host}:${bound.port}`,
    address: `${host}:${bound.port}`,
  }
}

/** A socket file left by a crashed instance is removed; one that still answers is not. */
async function removeStaleSocket(socketPath: string): Promise<void> {
  const info = await lstat(socketPath).catch(() => undefined)
  if (info === undefined) return
  if (!info.isSocket()) throw new Error(`${socketPath} exists and is not a socket`)
  const alive = await new Promise<boolean>((resolve) => {
    const probe = createConnection(socketPath)
    probe.once('connect', () => {
      probe.destroy()
      resolve(true)
    })
    probe.once('error', () => resolve(false))
  })
  if (alive) throw new Error(`another process listens on ${socketPath}`)
  await rm(socketPath, { force: true })
}

function stopServer(server: Server): Promise<void> {
  return new Promise<void>((resolve) => {
    server.close(() => resolve())
    server.closeAllConnections()
  })
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
