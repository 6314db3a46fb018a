/**
 * An s3:// binary cache, read with the AWS SDK v3 (GetObject, SigV4 signed by the SDK).
 *
 * URL form as Nix writes it: `s3://<bucket>?region=…&endpoint=…&scheme=http|https&profile=…`.
 * Credentials come from the SDK's default provider chain (environment, shared config/credentials
 * files, SSO, web identity, container/instance metadata), or from the named `profile`; never from
 * the URL.
 */
import http from 'node:http'
import https from 'node:https'
import { Readable } from 'node:stream'
import type { GetObjectCommand, GetObjectCommandOutput, S3Client, S3ClientConfig } from '@aws-sdk/client-s3'
import { formatMs, guardBody } from './body-guard.js'
import { keyProblem } from './cache-key.js'
import {
  type ByteRange,
  isExactRange,
  outsideCache,
  retryTransient,
  type Upstream,
  UpstreamError,
  type UpstreamResponse,
  type UpstreamTimeouts,
} from './upstream.js'

export interface S3UpstreamOptions extends UpstreamTimeouts {
  readonly userAgent?: string | undefined
}

export type S3AddressingStyle = 'auto' | 'path' | 'virtual'

export interface S3Location {
  readonly bucket: string
  /** `region` (Nix 2.8 alias `aws-region`); default `us-east-1`. */
  readonly region: string
  /** Full endpoint URL (`http(s)://host[:port][/path]`), or undefined for AWS itself. */
  readonly endpoint: string | undefined
  /** Named profile of the shared config/credentials files; undefined = the default provider chain. */
  readonly profile: string | undefined
  readonly forcePathStyle: boolean
  /** `s3://bucket` plus the recognised (non-secret) query parameters, in the order given. */
  readonly name: string
}

const DEFAULT_REGION = 'us-east-1'
/** Query parameters that change how unnar reads the bucket; they also appear in `name`. */
const NAME_PARAMS = ['region', 'aws-region', 'endpoint', 'scheme', 'profile', 'addressing-style'] as const
/** S3 error codes that mean "this object is not there" (Nix 2.8: NO_SUCH_KEY, RESOURCE_NOT_FOUND, ACCESS_DENIED). */
const MISSING_CODES = new Set([
  'NoSuchKey',
  'NotFound',
  'AccessDenied',
  'ResourceNotFound',
  'ResourceNotFoundException',
])
/**
 * 403s that are a credentials problem, not a missing object: reported as failures so that a wrong key
 * does not look like an empty cache (Nix 2.8 also throws on these).
 */
const CREDENTIAL_CODES = new Set([
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'ExpiredToken',
  'InvalidToken',
  'TokenRefreshRequired',
  'RequestTimeTooSkewed',
  'AuthorizationHeaderMalformed',
  'InvalidClientTokenId',
])
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
  'ECONNABORTED',
  'EPROTO',
  'ERR_SSL_WRONG_VERSION_NUMBER',
])
const TIMEOUT_CODES = new Set(['ETIMEDOUT', 'ESOCKETTIMEDOUT', 'TimeoutError', 'RequestTimeout'])

/** Parses an `s3://` cache URL; throws a TypeError naming the problem. */
export function parseS3Url(input: URL | string): S3Location {
  let url: URL
  try {
    url = typeof input === 'string' ? new URL(input) : input
  } catch {
    throw new TypeError(`not a URL: "${String(input)}"`)
  }
  if (url.protocol !== 's3:') throw new TypeError(`not an s3:// URL: "${url.protocol}//${url.host}"`)
  if (url.username !== '' || url.password !== '') {
    throw new TypeError(
      `s3://${url.host}: credentials in the URL are not supported (use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws/credentials or ?profile=)`,
    )
  }
  if (url.port !== '') throw new TypeError(`s3://${url.host}: a port belongs in ?endpoint=, not in the bucket name`)
  const bucket = url.hostname
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$/.test(bucket)) {
    throw new TypeError(`s3 URL: "${bucket}" is not a bucket name (expected s3://<bucket>?region=…)`)
  }
  if (url.pathname !== '' && url.pathname !== '/') {
    throw new TypeError(
      `s3://${bucket}: a key prefix ("${url.pathname}") is not supported; the cache must be the bucket root`,
    )
  }
  const params = url.searchParams
  const single = (key: string): string | undefined => {
    const values = params.getAll(key)
    if (values.length > 1) throw new TypeError(`s3://${bucket}: "${key}" is given ${values.length} times`)
    const value = values[0]
    if (value !== undefined && value.trim() === '') throw new TypeError(`s3://${bucket}: "${key}" is empty`)
    return value?.trim()
  }

  const regionParam = single('region')
  const regionAlias = single('aws-region')
  if (regionParam !== undefined && regionAlias !== undefined && regionParam !== regionAlias) {
    throw new TypeError(`s3://${bucket}: region "${regionParam}" and aws-region "${regionAlias}" disagree`)
  }
  const region = regionParam ?? regionAlias ?? DEFAULT_REGION
  if (!/^[a-z0-9][a-z0-9-]*[a-z0-9]$/i.test(region)) throw new TypeError(`s3://${bucket}: "${region}" is not a region`)

  const scheme = single('scheme')?.toLowerCase()
  if (scheme !== undefined && scheme !== 'http' && scheme !== 'https') {
    throw new TypeError(`s3://${bucket}: scheme must be http or https, not "${scheme}"`)
  }
  const endpointParam = single('endpoint')
  let endpoint: string | undefined
  if (endpointParam !== undefined) {
    endpoint = parseEndpoint(bucket, endpointParam, scheme)
  } else if (scheme !== undefined) {
    throw new TypeError(`s3://${bucket}: scheme=${scheme} needs an endpoint= (AWS itself is always https)`)
  }

  const profile = single('profile')

  const style = single('addressing-style') ?? 'auto'
  if (style !== 'auto' && style !== 'path' && style !== 'virtual') {
    throw new TypeError(`s3://${bucket}: addressing-style must be auto, path or virtual, not "${style}"`)
  }
  // Nix: virtual-hosted for AWS, path-style for a custom endpoint or a bucket name with dots.
  const forcePathStyle = style === 'path' || (style === 'auto' && (endpoint !== undefined || bucket.includes('.')))

  // Readable (`endpoint=127.0.0.1:9000`), yet still one unambiguous URL.
  const query = [...params]
    .filter(([key]) => (NAME_PARAMS as readonly string[]).includes(key))
    .map(([key, value]) => `${key}=${encodeURIComponent(value).replace(/%3A/gi, ':').replace(/%2F/gi, '/')}`)
    .join('&')
  return { bucket, region, endpoint, profile, forcePathStyle, name: `s3://${bucket}${query === '' ? '' : '?' + query}` }
}

/** `host[:port]` (scheme from `scheme=`, default https) or a full `http(s)://` URL. */
function parseEndpoint(bucket: string, text: string, scheme: 'http' | 'https' | undefined): string {
  const hasScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(text)
  let url: URL
  try {
    url = new URL(hasScheme ? text : `${scheme ?? 'https'}://${text}`)
  } catch {
    throw new TypeError(`s3://${bucket}: endpoint "${text}" is neither host[:port] nor a URL`)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new TypeError(`s3://${bucket}: endpoint scheme must be http or https, not "${url.protocol}"`)
  }
  if (hasScheme && scheme !== undefined && url.protocol !== `${scheme}:`) {
    throw new TypeError(`s3://${bucket}: scheme=${scheme} contradicts endpoint "${url.protocol}//${url.host}"`)
  }
  if (url.username !== '' || url.password !== '') {
    throw new TypeError(`s3://${bucket}: credentials in the endpoint are not supported`)
  }
  if (url.hostname === '' || url.search !== '' || url.hash !== '' || (!hasScheme && url.pathname !== '/')) {
    throw new TypeError(`s3://${bucket}: endpoint "${text}" is neither host[:port] nor a URL`)
  }
  return url.pathname === '/' ? url.origin : url.origin + url.pathname.replace(/\/$/, '')
}

/** The parts of the SDK's HttpRequest that say where it goes. */
interface SdkRequest {
  readonly protocol: string
  readonly hostname: string
  readonly port?: number | undefined
  readonly path: string
}

function decodeSegment(segment: string): string | undefined {
  try {
    return decodeURIComponent(segment)
  } catch {
    return undefined
  }
}

interface SdkError {
  name?: string
  code?: string
  Code?: string
  message?: string
  $metadata?: { httpStatusCode?: number }
  $response?: { statusCode?: number }
}

export class S3Upstream implements Upstream {
  readonly name: string
  readonly location: S3Location
  /**
   * The SDK is loaded with the first request: importing it costs ~22 MiB of RSS, which a server
   * without S3 upstreams should not carry (bench/ "peak RSS of a fresh unnar process").
   */
  #client: Promise<{ client: S3Client; GetObjectCommand: typeof GetObjectCommand }> | undefined
  #loaded: S3Client | undefined
  readonly #config: S3ClientConfig
  readonly #timeouts: { readonly connect: number; readonly firstByte: number; readonly idle: number }

  constructor(url: URL, options: S3UpstreamOptions) {
    this.location = parseS3Url(url)
    // The SDK otherwise prints a multi-line, non-JSON deprecation warning for Node < 22 on stderr.
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'
    this.name = this.location.name
    const { region, endpoint, profile, forcePathStyle } = this.location
    this.#timeouts = {
      connect: options.connectTimeoutMs ?? options.timeoutMs,
      firstByte: options.timeoutMs,
      idle: options.idleTimeoutMs ?? options.timeoutMs,
    }
    this.#config = {
      region,
      forcePathStyle,
      ...(endpoint === undefined ? {} : { endpoint }),
      // The client's profile drives the default credential chain (ini, SSO, process, web identity)
      // for that profile only, like Nix's ProfileConfigFileAWSCredentialsProvider.
      ...(profile === undefined ? {} : { profile }),
      ...(options.userAgent === undefined ? {} : { customUserAgent: options.userAgent }),
      // unnar retries failing upstreams itself (with backoff and health tracking): one attempt here.
      maxAttempts: 1,
      requestHandler: {
        // TCP connect (the SDK does not count the TLS handshake here).
        connectionTimeout: this.#timeouts.connect,
        // From the request to the response headers; an error rather than the SDK's default warning.
        requestTimeout: this.#timeouts.firstByte,
        throwOnRequestTimeout: true,
        // No socketTimeout: the body's idle timeout is unnar's own (guardBody), which does not count
        // the time a slow reader keeps the body paused.
        httpAgent: new http.Agent({ keepAlive: true, maxSockets: 64 }),
        httpsAgent: new https.Agent({ keepAlive: true, maxSockets: 64 }),
      },
    }
  }

  #sdk(): Promise<{ client: S3Client; GetObjectCommand: typeof GetObjectCommand }> {
    this.#client ??= import('@aws-sdk/client-s3').then((sdk) => {
      this.#loaded = new sdk.S3Client(this.#config)
      // After the SDK built the request and before it is signed and sent: where it really goes.
      this.#loaded.middlewareStack.add(
        (next) => async (args) => {
          const key = (args.input as { Key?: unknown }).Key
          this.#checkRequest(args.request as SdkRequest, typeof key === 'string' ? key : '')
          return next(args)
        },
        { step: 'build', name: 'unnarConfineToBucket' },
      )
      return { client: this.#loaded, GetObjectCommand: sdk.GetObjectCommand }
    })
    return this.#client
  }

  async get(key: string, signal?: AbortSignal, range?: ByteRange): Promise<UpstreamResponse | undefined> {
    // An S3 key has no query: a `?` and all after it are part of the object's name and path.
    const problem = keyProblem(key.replaceAll('?', '%3F'))
    if (problem !== undefined) throw outsideCache(this.name, key, problem)
    return retryTransient(() => this.#getOnce(key, signal, range), signal)
  }

  /**
   * The request the SDK built for `key` must go to the bucket's endpoint (path-style: its host with
   * the bucket as first segment; virtual-hosted: `<bucket>.` before it) and name exactly the key's
   * segments; else outsideCache(), and it is never sent.
   */
  #checkRequest(request: SdkRequest, key: string): void {
    const segments = request.path.split('/').slice(1).map(decodeSegment)
    const keySegments = key.split('/')
    const endpoint = this.location.endpoint === undefined ? undefined : new URL(this.location.endpoint)
    const prefix = endpoint === undefined ? [] : endpoint.pathname.split('/').filter((s) => s !== '')
    const { bucket } = this.location
    const sameSegments = (expected: readonly string[]) =>
      segments.length === expected.length &&
      segments.every((s, i) => s === expected[i] && s !== '' && s !== '.' && s !== '..')
    const host = request.hostname.toLowerCase()
    const endpointHost = endpoint?.hostname.toLowerCase()
    const port = (protocol: string, given: string) => given || (protocol === 'https:' ? '443' : '80')
    const onEndpoint =
      endpoint === undefined
        ? request.protocol === 'https:' && /\.amazonaws\.com(\.cn)?$/.test(host)
        : request.protocol === endpoint.protocol &&
          port(request.protocol, request.port === undefined ? '' : String(request.port)) ===
            port(endpoint.protocol, endpoint.port)
    const pathStyle =
      (endpointHost === undefined ? /^s3[.-]/.test(host) : host === endpointHost) &&
      sameSegments([...prefix, bucket, ...keySegments])
    const virtual =
      (endpointHost === undefined
        ? host.startsWith(`${bucket.toLowerCase()}.s3`)
        : host === `${bucket.toLowerCase()}.${endpointHost}`) && sameSegments([...prefix, ...keySegments])
    if (!onEndpoint || !(pathStyle || virtual))
      throw outsideCache(
        this.name,
        key,
        `the S3 request would go to ${request.protocol}//${request.hostname}${request.path}`,
      )
  }

  async #getOnce(key: string, signal?: AbortSignal, range?: ByteRange): Promise<UpstreamResponse | undefined> {
    let out: GetObjectCommandOutput
    try {
      const { client, GetObjectCommand } = await this.#sdk()
      out = await client.send(
        new GetObjectCommand({
          Bucket: this.location.bucket,
          Key: key,
          ...(range === undefined ? {} : { Range: `bytes=${range.start}-${range.end}` }),
        }),
        signal === undefined ? {} : { abortSignal: signal },
      )
    } catch (err) {
      if (signal?.aborted === true || (err as Error).name === 'AbortError') throw err
      const mapped = this.#classify(err, key)
      if (mapped === undefined) return undefined
      throw mapped
    }
    const raw = out.Body
    if (raw === undefined) throw new UpstreamError(this.name, 'bad-response', `no body for ${key}`)
    return {
      body: this.#wrapBody(raw, key),
      size: typeof out.ContentLength === 'number' && out.ContentLength >= 0 ? out.ContentLength : undefined,
      contentEncoding: out.ContentEncoding?.trim().toLowerCase() || undefined,
      partial: range !== undefined && isExactRange(out.ContentRange, range),
    }
  }

  /** Releases the client's sockets. */
  destroy(): void {
    this.#loaded?.destroy()
  }

  /** A Node Readable whose failures are UpstreamErrors (a stalled body is a 'timeout'). */
  #wrapBody(raw: unknown, key: string): Readable {
    let source: Readable
    if (raw instanceof Readable) source = raw
    else if (raw !== null && typeof raw === 'object' && 'getReader' in raw)
      source = Readable.fromWeb(raw as import('node:stream/web').ReadableStream)
    else throw new UpstreamError(this.name, 'bad-response', `unexpected body type for ${key}`)
    const idle = this.#timeouts.idle
    return guardBody(source, {
      idleTimeoutMs: idle,
      onIdle: () =>
        new UpstreamError(this.name, 'timeout', `idle timeout: the body of ${key} stalled for ${formatMs(idle)}`),
      mapError: (err) => this.#bodyError(err, key),
    })
  }

  #bodyError(err: Error, key: string): UpstreamError {
    if (err instanceof UpstreamError) return err
    const e = err as Error & { code?: string }
    if (e.name === 'TimeoutError' || (e.code !== undefined && TIMEOUT_CODES.has(e.code))) {
      return new UpstreamError(this.name, 'timeout', `body of ${key} stalled: ${e.message}`, { cause: err })
    }
    if (e.name === 'InvalidChecksum' || /checksum/i.test(e.message)) {
      return new UpstreamError(this.name, 'bad-response', `body of ${key}: ${e.message}`, { cause: err })
    }
    return new UpstreamError(this.name, 'network', `reading ${key}: ${e.code ?? e.message}`, { cause: err })
  }

  /** undefined = the object is missing; otherwise the UpstreamError to throw. */
  #classify(err: unknown, key: string): UpstreamError | undefined {
    const e = (err ?? {}) as SdkError
    const code = e.name ?? e.Code ?? ''
    const status = e.$metadata?.httpStatusCode ?? e.$response?.statusCode
    if (CREDENTIAL_CODES.has(code)) {
      return new UpstreamError(
        this.name,
        'bad-status',
        `HTTP ${status ?? '?'} ${code} for ${key} (check the AWS credentials${this.location.profile === undefined ? '' : ` of profile "${this.location.profile}"`}, region and clock)`,
        { cause: err },
      )
    }
    if (code === 'NoSuchBucket') {
      return new UpstreamError(
        this.name,
        'bad-status',
        `HTTP ${status ?? 404} NoSuchBucket: bucket "${this.location.bucket}" does not exist`,
        { cause: err },
      )
    }
    if (MISSING_CODES.has(code) || status === 404 || status === 410 || status === 403) return undefined
    if (code === 'CredentialsProviderError' || code === 'ProviderError') {
      return new UpstreamError(
        this.name,
        'network',
        `no AWS credentials${this.location.profile === undefined ? '' : ` for profile "${this.location.profile}"`}: ${e.message ?? code}`,
        { cause: err },
      )
    }
    if (code === 'TimeoutError' || (e.code !== undefined && TIMEOUT_CODES.has(e.code))) {
      const message = e.message ?? ''
      const detail = /establish a connection/.test(message)
        ? `connect timeout: no connection within ${formatMs(this.#timeouts.connect)}`
        : /requestTimeout/.test(message)
          ? `first-byte timeout: no response within ${formatMs(this.#timeouts.firstByte)}`
          : message || 'timed out'
      return new UpstreamError(this.name, 'timeout', `${detail} (${key})`, { cause: err })
    }
    if (status !== undefined && status > 0) {
      const detail = code !== '' && code !== 'Error' && code !== 'UnknownError' ? ` ${code}` : ''
      const hint =
        code === 'PermanentRedirect' || code === 'AuthorizationHeaderMalformed'
          ? ` (wrong region? using ${this.location.region})`
          : ''
      // A 2xx whose body could not be parsed, or a non-S3 answer.
      const kind = status >= 200 && status < 300 ? 'bad-response' : 'bad-status'
      // 503 SlowDown, 500 InternalError and the like are S3 asking to be retried.
      const transient = status >= 500 || status === 408 || status === 429
      return new UpstreamError(this.name, kind, `HTTP ${status}${detail} for ${key}${hint}`, { cause: err, transient })
    }
    if (e.code !== undefined && NETWORK_CODES.has(e.code)) {
      return new UpstreamError(this.name, 'network', `${e.code} (${key})`, { cause: err, transient: true })
    }
    return new UpstreamError(this.name, 'network', `${e.code ?? e.message ?? String(err)} (${key})`, { cause: err })
  }
}
