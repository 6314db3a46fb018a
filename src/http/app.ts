/** The hono app: routes and middleware, built from injected dependencies (no global state). */
import { Hono } from 'hono'
import type { Logger } from '../log.js'
import type { NarStore } from '../store/nar-store.js'
import type { PathInfoLookup } from '../upstream/path-info-lookup.js'
import { createErrorHandler, errorResponse } from './errors.js'
import { loadStaticAssets } from './static-assets.js'
import { createStoreRoutes } from './store-route.js'

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
}

export function createApp(deps: AppDeps): Hono {
  const { log, storeDir } = deps
  const app = new Hono()
  const assets = loadStaticAssets(deps.publicDir)

  app.use(async (c, next) => {
    const started = performance.now()
    await next()
    log.info('request', {
      method: c.req.method,
      path: c.req.path,
      status: c.res.status,
      ms: Math.round(performance.now() - started),
    })
  })
  app.onError(createErrorHandler(log))

  const routes = createStoreRoutes(deps)
  if (deps.domain !== undefined) {
    const site = new RegExp(`^([0-9a-df-np-sv-z]{32})\\.${deps.domain.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(?::\\d+)?$`, 'i')
    app.use(async (c, next) => {
      const match = site.exec(c.req.header('host') ?? '')
      if (match === null) return next()
      if (c.req.method !== 'GET' && c.req.method !== 'HEAD') return errorResponse(c, 405, 'only GET and HEAD')
      return routes.site(c, match[1]!.toLowerCase())
    })
  }
  app.notFound((c) => errorResponse(c, 404, `no route for ${c.req.path}`))

  app.get('/healthz', (c) => c.text('OK\n'))
  app.get('/robots.txt', (c) => c.text('User-agent: *\nDisallow: /nix/store\n'))
  const serveAsset = (name: string) => (c: import('hono').Context) => {
    const asset = assets.get(name)
    if (asset === undefined) return errorResponse(c, 404, `no such asset: ${name}`)
    c.header('ETag', asset.etag)
    c.header('Cache-Control', 'public, max-age=3600')
    if (c.req.header('if-none-match') === asset.etag) return c.body(null, 304)
    c.header('Content-Type', asset.type)
    return c.req.method === 'HEAD' ? c.body(null) : c.body(asset.body)
  }
  app.get('/', serveAsset('index.html'))
  app.get('/static/:name', (c) => serveAsset(c.req.param('name'))(c))

  app.get('/api/upstreams', (c) => c.json(deps.lookup.health()))
  app.get(`${storeDir}/*`, routes.store)
  app.get(storeDir, (c) => errorResponse(c, 404, 'unnar does not list the whole store; ask for a store path'))
  return app
}
