/** Builds an Upstream from a cache URL, by scheme. */
import type { Config } from '../config.js'
import { readNetrcFile, type UpstreamCredentials } from './credentials.js'
import { FileUpstream } from './file-upstream.js'
import { HttpUpstream } from './http-upstream.js'
import { instrumentUpstream, type UpstreamRequestHook } from './instrument.js'
import { S3Upstream } from './s3-upstream.js'
import type { Upstream, UpstreamTimeouts } from './upstream.js'

export const SUPPORTED_SCHEMES = ['http:', 'https:', 'file:', 's3:'] as const

export interface UpstreamOptions extends UpstreamTimeouts {
  readonly userAgent: string
  /** netrc entries and bearer tokens for http(s) upstreams (URL credentials win over both). */
  readonly credentials?: UpstreamCredentials | undefined
  /** Sees every request once it is over (metrics); the upstream is wrapped when given. */
  readonly onRequest?: UpstreamRequestHook | undefined
}

/**
 * The options every upstream of `config` is built with. Reads the netrc file (NETRC) once; a file
 * that cannot be read was already refused by loadConfig, so a failure here is a race and throws.
 */
export function upstreamOptionsFrom(
  config: Pick<Config, 'upstreamTimeoutMs' | 'upstreamConnectTimeoutMs' | 'upstreamIdleTimeoutMs' | 'netrcFile' | 'upstreamTokens'>,
  extra: { readonly userAgent: string; readonly onRequest?: UpstreamRequestHook | undefined },
): UpstreamOptions {
  return {
    ...extra,
    timeoutMs: config.upstreamTimeoutMs,
    connectTimeoutMs: config.upstreamConnectTimeoutMs,
    idleTimeoutMs: config.upstreamIdleTimeoutMs,
    credentials: {
      netrc: config.netrcFile === undefined ? undefined : readNetrcFile(config.netrcFile),
      tokens: config.upstreamTokens,
    },
  }
}

/** Throws a TypeError naming the URL when it cannot be used. */
export function createUpstream(url: string, options: UpstreamOptions): Upstream {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    throw new TypeError(`not a URL: "${url}"`)
  }
  let upstream: Upstream
  switch (parsed.protocol) {
    case 'http:':
    case 'https:':
      upstream = new HttpUpstream(parsed, options)
      break
    case 'file:':
      upstream = new FileUpstream(parsed)
      break
    case 's3:':
      upstream = new S3Upstream(parsed, options)
      break
    default:
      throw new TypeError(`unsupported upstream scheme "${parsed.protocol}" in "${parsed.protocol}//${parsed.host}…" (supported: ${SUPPORTED_SCHEMES.join(' ')})`)
  }
  return options.onRequest === undefined ? upstream : instrumentUpstream(upstream, options.onRequest)
}
