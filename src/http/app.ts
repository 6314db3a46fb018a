/** The hono app: routes and middleware, built from injected dependencies (no global state). */
import { Hono, type Context } from 'hono'
import type { Logger } from '../log.js'
import type { Metrics } from '../metrics.js'
import type { NarStore } from '../store/nar-store.js'
import type { PathInfoLookup } from '../upstream/path-info-lookup.js'
import { createErrorHandler, errorResponse } from './errors.js'
import { OWN_PAGES_CSP } from './html.js'
import type { HotFiles } from '../store/hot-files.js'
import type { HotResponses } from './hot-responses.js'
import type { ReadBuffers } from './read-buffers.js'
import { requestLog, type RequestReporter } from './request-log.js'
import { loadStaticAssets } from './static-assets.js'
import type { FileSources } from '../store/file-source.js'
import { createStoreRoutes, type HotStoreFile } from './store-route.js'
import { incomingOf } from './node-env.js'

export interface AppDeps {
  readonly lookup: PathInfoLookup
  readonly store: NarStore
  readonly log: Logger
  /** The store directory the routes answer for (`/nix/store`). */
  readonly storeDir: string
  /** Directory of the static web assets. */
  readonly publicDir: string
  /** Subdomain mode (`DOMAIN`): `<hash>.<domain>` serves that store path as a site root. */
  readonly domain: string | undefined
  readonly metrics: Metrics
  /** Logs and counts each request (shared with the hot-response lane in front of the app). */
  readonly reporter: RequestReporter
  /** Files kept in memory (UNNAR_MEMORY_CACHE_SIZE). */
  readonly hotFiles: HotFiles<HotStoreFile>
  /** What bodies read from disk read into (shared with the other store dirs' routes). */
  readonly readBuffers: ReadBuffers
  /** Answers from hot files kept for the lane in front of the app (server.ts). */
  readonly hotResponses?: HotResponses
  /** Where /nix/store files are read from (made from the above when absent); given, its leases can be watched. */
  readonly sources?: FileSources<HotStoreFile>
  /** Serve `/metrics` here (false when it has its own listener or is off). */
  readonly serveMetrics: boolean
  /** Longer request targets get 414. */
  readonly maxUrlLength: number
  /** False while shutting down: `/readyz` then says 503 so load balancers move on. */
  readonly accepting: () => boolean
  /** The route of another store dir (`/opt/store/…`) an upstream declared, if `path` is in one. */
  readonly otherStore?: (path: string) => ((c: Context) => Promise<Response>) | undefined
}

const NIX32 = '[0123456789abcdfghijklmnpqrsvwxyz]{32}'

/**
 * A pasted store path, bare hash, `<hash>.narinfo`, `/nix/store/…/sub/path`, or a URL whose path is
 * one of those → where it lives here: what the landing page's script accepts, for clients without it.
 */
function jump(c: Context, input: string): Response {
  let text = input.trim()
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) {
    try {
      text = new URL(text).pathname
    } catch {
      return errorResponse(c, 400, `not a URL: "${input}"`)
    }
  }
  const match = new RegExp(`^/*(?:nix/store/)?(${NIX32})([^/\\s]*)(/\\S*)?$`, 'i').exec(text)
  if (match === null) return errorResponse(c, 400, `not a store path: "${input}"`)
  const name = match[2] === '.narinfo' ? '' : match[2]!
  const rest = match[3] ?? '/'
  // Encoded like the rest: a control character in the name must not reach the Location header.
  const location = `/nix/store/${match[1]!.toLowerCase()}${encodeURIComponent(decodeSafe(name))}${rest
    .split('/')
    .map((s) => encodeURIComponent(decodeSafe(s)))
    .join('/')}`
  return c.redirect(location, 302)
}

function decodeSafe(segment: string): string {
  try {
    return decodeURIComponent(segment)
  } catch {
    return segment
  }
}

const KNOWN_ROUTES = new Set(['/', '/healthz', '/readyz', '/metrics', '/robots.txt', '/api/upstreams', '/favicon.ico'])

/** `/metrics` in Prometheus' text format. */
export function metricsHandler(metrics: Metrics): (c: Context) => Promise<Response> {
  return async (c) => {
    c.header('Content-Type', metrics.contentType)
    c.header('Cache-Control', 'no-store')
    return c.body(await metrics.text())
  }
}

export function createApp(deps: AppDeps): Hono {
  const { log, storeDir } = deps
  const app = new Hono()
  const assets = loadStaticAssets(deps.publicDir)

  const storePrefix = `${storeDir}/`
  const site =
    deps.domain === undefined
      ? undefined
      : new RegExp(`^([0-9a-df-np-sv-z]{32})\\.${deps.domain.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(?::\\d+)?$`, 'i')
  /** A metrics label: a handful of fixed values, never the path itself. */
  const routeOf = (c: Context): string => {
    const path = c.req.path
    if (path.startsWith('/_unnar/')) return 'asset'
    if (site?.test(c.req.header('host') ?? '') === true) return 'site'
    if (path.startsWith(storePrefix) || deps.otherStore?.(path) !== undefined) return 'store'
    return KNOWN_ROUTES.has(path) ? path : 'other'
  }
  app.use(requestLog(deps.reporter, routeOf))
  app.use(async (c, next) => {
    // Measured on the raw request target: what the client sent, before any normalisation.
    const target = incomingOf(c)?.url ?? new URL(c.req.url).pathname
    if (target.length > deps.maxUrlLength)
      return errorResponse(
        c,
        414,
        `the request target is ${target.length} bytes long; the limit is ${deps.maxUrlLength}`,
      )
    return next()
  })
  app.onError(createErrorHandler(log))

  const routes = createStoreRoutes(deps)
  if (site !== undefined) {
    app.use(async (c, next) => {
      const match = site.exec(c.req.header('host') ?? '')
      if (match === null || c.req.path.startsWith('/_unnar/')) return next()
      if (c.req.method !== 'GET' && c.req.method !== 'HEAD') return errorResponse(c, 405, 'only GET and HEAD')
      return routes.site(c, match[1]!.toLowerCase())
    })
  }
  app.notFound((c) => errorResponse(c, 404, `no route for ${c.req.path}`))

  app.get('/healthz', (c) => c.text('OK\n'))
  app.get('/readyz', (c) => {
    const upstreams = deps.lookup.health()
    const healthy = upstreams.filter((u) => u.state !== 'failing').length
    const ready = deps.accepting() && healthy > 0
    const reason = !deps.accepting() ? 'shutting down' : healthy === 0 ? 'every upstream is failing' : undefined
    c.header('Cache-Control', 'no-store')
    return c.json(
      { ready, healthyUpstreams: healthy, upstreams: upstreams.length, ...(reason === undefined ? {} : { reason }) },
      ready ? 200 : 503,
    )
  })
  if (deps.serveMetrics) app.get('/metrics', metricsHandler(deps.metrics))
  app.get('/robots.txt', (c) => c.text('User-agent: *\nDisallow: /nix/store\n'))
  const serveAsset = (name: string) => (c: Context) => {
    const asset = assets.get(name)
    if (asset === undefined) return errorResponse(c, 404, `no such asset: ${name}`)
    c.header('ETag', asset.etag)
    c.header('Cache-Control', 'public, max-age=3600')
    if (c.req.header('if-none-match') === asset.etag) return c.body(null, 304)
    c.header('Content-Type', asset.type)
    if (asset.type.startsWith('text/html')) c.header('Content-Security-Policy', OWN_PAGES_CSP)
    return c.req.method === 'HEAD' ? c.body(null) : c.body(asset.body)
  }
  app.get('/', (c) => {
    // The landing form without JavaScript submits `/?path=…`: jump there on the server.
    const target = c.req.query('path')
    return target === undefined ? serveAsset('index.html')(c) : jump(c, target)
  })
  // `/_unnar/` also passes through subdomain sites, so their listings find their assets.
  app.get('/_unnar/:name', (c) => serveAsset(c.req.param('name'))(c))
  // Browsers ask for it whatever the page says.
  app.get('/favicon.ico', serveAsset('favicon.svg'))

  app.get('/api/upstreams', (c) => c.json(deps.lookup.health()))
  // Before the store route, whose pattern also matches the bare store directory.
  const wholeStore = (c: Context) => errorResponse(c, 404, 'unnar does not list the whole store; ask for a store path')
  app.get(storeDir, wholeStore)
  app.get(`${storeDir}/`, wholeStore)
  app.get(`${storeDir}/*`, routes.store)
  app.get('*', (c, next) => deps.otherStore?.(c.req.path)?.(c) ?? next())
  return app
}
