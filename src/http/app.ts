/** The hono app: routes and middleware, built from injected dependencies (no global state). */
import { Hono, type Context } from 'hono'
import type { Logger } from '../log.js'
import type { NarStore } from '../store/nar-store.js'
import type { PathInfoLookup } from '../upstream/path-info-lookup.js'
import { createErrorHandler, errorResponse } from './errors.js'
import { OWN_PAGES_CSP } from './html.js'
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

const NIX32 = '[0123456789abcdfghijklmnpqrsvwxyz]{32}'

/** A pasted store path, bare hash or `/nix/store/…/sub/path` → where it lives here. */
function jump(c: Context, input: string): Response {
  const match = new RegExp(`^\\s*(?:/nix/store/)?(${NIX32}[^/\\s]*)(/\\S*)?\\s*$`).exec(input)
  if (match === null) return errorResponse(c, 400, `not a store path: "${input}"`)
  const rest = match[2] ?? '/'
  return c.redirect(`/nix/store/${match[1]}${rest.split('/').map((s) => encodeURIComponent(decodeSafe(s))).join('/')}`, 302)
}

function decodeSafe(segment: string): string {
  try {
    return decodeURIComponent(segment)
  } catch {
    return segment
  }
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
      if (match === null || c.req.path.startsWith('/_unnar/')) return next()
      if (c.req.method !== 'GET' && c.req.method !== 'HEAD') return errorResponse(c, 405, 'only GET and HEAD')
      return routes.site(c, match[1]!.toLowerCase())
    })
  }
  app.notFound((c) => errorResponse(c, 404, `no route for ${c.req.path}`))

  app.get('/healthz', (c) => c.text('OK\n'))
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

  app.get('/api/upstreams', (c) => c.json(deps.lookup.health()))
  app.get(`${storeDir}/*`, routes.store)
  app.get(storeDir, (c) => errorResponse(c, 404, 'unnar does not list the whole store; ask for a store path'))
  return app
}
