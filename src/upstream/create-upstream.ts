/** Builds an Upstream from a cache URL, by scheme. */
import { FileUpstream } from './file-upstream.js'
import { HttpUpstream, type HttpUpstreamOptions } from './http-upstream.js'
import { S3Upstream } from './s3-upstream.js'
import type { Upstream } from './upstream.js'

export const SUPPORTED_SCHEMES = ['http:', 'https:', 'file:', 's3:'] as const

/** Throws a TypeError naming the URL when it cannot be used. */
export function createUpstream(url: string, options: HttpUpstreamOptions): Upstream {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    throw new TypeError(`not a URL: "${url}"`)
  }
  switch (parsed.protocol) {
    case 'http:':
    case 'https:':
      return new HttpUpstream(parsed, options)
    case 'file:':
      return new FileUpstream(parsed)
    case 's3:':
      return new S3Upstream(parsed, options)
    default:
      throw new TypeError(`unsupported upstream scheme "${parsed.protocol}" in "${parsed.protocol}//${parsed.host}…" (supported: ${SUPPORTED_SCHEMES.join(' ')})`)
  }
}
