/** Builds an Upstream from a cache URL, by scheme. */
import type { Config } from '../config.js'
import type { Logger } from '../log.js'
import { type CredentialSource, CredentialFiles } from './credential-files.js'
import { readNetrcFile, readTokensFile } from './credentials.js'
import { FileUpstream } from './file-upstream.js'
import { HttpUpstream } from './http-upstream.js'
import { instrumentUpstream, type UpstreamRequestHook } from './instrument.js'
import { S3Upstream } from './s3-upstream.js'
import { SUPPORTED_SCHEMES } from './schemes.js'
import type { Upstream, UpstreamTimeouts } from './upstream.js'

export interface UpstreamOptions extends UpstreamTimeouts {
  readonly userAgent: string
  /** netrc entries and bearer tokens for http(s) upstreams (URL credentials win over both). */
  readonly credentials?: CredentialSource | undefined
  /** Sees every request once it is over (metrics); the upstream is wrapped when given. */
  readonly onRequest?: UpstreamRequestHook | undefined
}

/**
 * The options every upstream of `config` is built with. The netrc and tokens files are read now
 * and again whenever they change (see CredentialFiles); a file that cannot be read now was already
 * refused by loadConfig, so a failure here is a race and throws.
 */
export function upstreamOptionsFrom(
  config: Pick<
    Config,
    | 'upstreamTimeoutMs'
    | 'upstreamConnectTimeoutMs'
    | 'upstreamIdleTimeoutMs'
    | 'netrcFile'
    | 'upstreamTokensFile'
    | 'upstreamTokensFromEnv'
  >,
  extra: { readonly userAgent: string; readonly log: Logger; readonly onRequest?: UpstreamRequestHook | undefined },
): UpstreamOptions {
  return {
    userAgent: extra.userAgent,
    onRequest: extra.onRequest,
    timeoutMs: config.upstreamTimeoutMs,
    connectTimeoutMs: config.upstreamConnectTimeoutMs,
    idleTimeoutMs: config.upstreamIdleTimeoutMs,
    credentials: new CredentialFiles({
      netrcFile: config.netrcFile,
      readNetrc: readNetrcFile,
      tokensFile: config.upstreamTokensFile,
      readTokens: readTokensFile,
      fixedTokens: config.upstreamTokensFromEnv,
      log: extra.log,
    }),
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
      throw new TypeError(
        `unsupported upstream scheme "${parsed.protocol}" in "${parsed.protocol}//${parsed.host}…" (supported: ${SUPPORTED_SCHEMES.join(' ')})`,
      )
  }
  return options.onRequest === undefined ? upstream : instrumentUpstream(upstream, options.onRequest)
}
