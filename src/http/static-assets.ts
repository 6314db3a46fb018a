/** Serves the files of public/ (landing page, stylesheet) and highlight.js's themes, loaded once at start-up. */
import { readdirSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { createHash } from 'node:crypto'
import mime from 'mime-types'

export interface StaticAsset {
  readonly body: Uint8Array<ArrayBuffer>
  readonly type: string
  readonly etag: string
}

/** The file viewer's colours (file-view-page.ts), as the highlight.js package ships them: no copy to drift. */
const THEMES: ReadonlyArray<readonly [name: string, module: string]> = [
  ['hljs-light.css', 'highlight.js/styles/github.css'],
  ['hljs-dark.css', 'highlight.js/styles/github-dark.css'],
]

export function loadStaticAssets(dir: string): Map<string, StaticAsset> {
  const assets = new Map<string, StaticAsset>()
  const add = (name: string, file: string) => {
    const body = readFileSync(file)
    const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"`
    assets.set(name, { body, type: mime.contentType(name) || 'application/octet-stream', etag })
  }
  for (const name of readdirSync(dir)) add(name, path.join(dir, name))
  const require = createRequire(import.meta.url)
  for (const [name, module] of THEMES) add(name, require.resolve(module))
  return assets
}
