/** Serves the files of public/ (landing page, stylesheet), loaded once at start-up. */
import { readdirSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { createHash } from 'node:crypto'
import mime from 'mime-types'

export interface StaticAsset {
  readonly body: Uint8Array<ArrayBuffer>
  readonly type: string
  readonly etag: string
}

export function loadStaticAssets(dir: string): Map<string, StaticAsset> {
  const assets = new Map<string, StaticAsset>()
  for (const name of readdirSync(dir)) {
    const body = readFileSync(path.join(dir, name))
    const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"`
    assets.set(name, { body, type: mime.contentType(name) || 'application/octet-stream', etag })
  }
  return assets
}
