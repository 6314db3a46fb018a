/** Environment (and flags) → one validated Config. Every setting is listed in src/settings.ts, the table docs/configuration.md and --help are made from. */
import { accessSync, constants } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { parsePublicKeys, type PublicKey } from './formats/signature.js'
import { LOG_LEVELS, type LogLevel } from './log.js'
import { FLAGS } from './settings.js'
import { parseTokens, readNetrcFile, readTokensFile } from './upstream/credentials.js'
import { parseS3Url } from './upstream/s3-upstream.js'
import { SUPPORTED_SCHEMES } from './upstream/schemes.js'

export const DEFAULT_UPSTREAM = 'https://cache.nixos.org'
export const DEFAULT_PORT = 8383

export type SizeSetting = { readonly bytes: number } | { readonly percent: number }

export interface Config {
  readonly port: number
  /** undefined = all interfaces. */
  readonly host: string | undefined
  readonly upstreams: readonly string[]
  readonly cacheDir: string
  readonly cacheSize: SizeSetting
  /** undefined = a quarter of the cache size. */
  readonly maxNarSize: number | undefined
  /** Memory for hot files of cached NARs; 0 = none. */
  readonly memoryCacheBytes: number
  readonly negativeTtlMs: number
  readonly upstreamTimeoutMs: number
  readonly logLevel: LogLevel
  /** Subdomain mode: `<hash>.<domain>` serves that store path as a site root. */
  readonly domain: string | undefined
  /** TRUSTED_PUBLIC_KEYS as given; undefined = unset (cache.nixos.org gets its own key). */
  readonly trustedPublicKeys: readonly PublicKey[] | undefined
  /** Ask upstreams in the configured order, ignoring their nix-cache-info Priority. */
  readonly pinUpstreamOrder: boolean
  /** Listen on this unix socket path instead of TCP. */
  readonly socket: string | undefined
  /** Where /metrics is served: 'main' (the main listener), 'off', or a separate `host:port`. */
  readonly metrics:
    | { readonly kind: 'main' }
    | { readonly kind: 'off' }
    | { readonly kind: 'separate'; readonly port: number; readonly host: string | undefined }
  /** Concurrent upstream NAR downloads; more wait in a queue. */
  readonly maxDownloads: number
  readonly maxConnections: number
  /** Time a client gets to send its request headers (slowloris). */
  readonly headerTimeoutMs: number
  readonly keepAliveTimeoutMs: number
  readonly maxUrlLength: number
  /** How long in-flight responses may run on after SIGTERM. */
  readonly shutdownTimeoutMs: number
  /** Nix's netrc format; credentials for HTTP upstreams by host. */
  readonly netrcFile: string | undefined
  /** Bearer tokens by upstream host (`host` or `host:port`) at start, the file's and the environment's; never logged. */
  readonly upstreamTokens: ReadonlyMap<string, string>
  /** Read again when it changes (rotated tokens); UNNAR_UPSTREAM_TOKENS' entries win over it. */
  readonly upstreamTokensFile: string | undefined
  /** UNNAR_UPSTREAM_TOKENS' own entries. */
  readonly upstreamTokensFromEnv: ReadonlyMap<string, string>
  readonly upstreamConnectTimeoutMs: number
  /** Longest silence between two chunks of an upstream body. */
  readonly upstreamIdleTimeoutMs: number
  /** 'parallel' asks every upstream at once and takes the best-priority hit. */
  readonly lookup: 'sequential' | 'parallel'
  /** Store directories served; undefined = /nix/store plus every StoreDir an upstream declares. */
  readonly storeDirs: readonly string[] | undefined
  /**
   * `strict`: no response completes before its bytes are verified against NarHash; `stream`: a
   * response may complete with bytes its NAR has not yet (or never) proved.
   */
  readonly verify: 'strict' | 'stream'
}

/** A bad setting: the message names the setting and the value, in one line. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError'
}

type Env = Readonly<Record<string, string | undefined>>

/** Flags (`--port 80`, `--port=80`) override environment variables of the same setting (src/settings.ts). */
export { FLAGS } from './settings.js'

/** Settings whose values are secrets: redacted wherever the configuration is shown. */
export const SECRET_SETTINGS: ReadonlySet<string> = new Set(['UNNAR_UPSTREAM_TOKENS'])

/** The settings that together make the listen address: a flag for any of them overrides all three from the environment. */
const LISTEN_SETTINGS = ['PORT', 'HTTP_ADDR', 'UNNAR_HOST']

/** Applies command-line flags on top of the environment. */
export function applyFlags(env: Env, argv: readonly string[]): Env {
  const out: Record<string, string | undefined> = { ...env }
  let listenFromFlags = false
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    const eq = arg.indexOf('=')
    const flag = eq < 0 ? arg : arg.slice(0, eq)
    const name = FLAGS[flag]
    if (name === undefined) throw new ConfigError(`unknown option "${arg}" (see --help)`)
    const value = eq < 0 ? argv[++i] : arg.slice(eq + 1)
    if (value === undefined) throw new ConfigError(`${flag} needs a value`)
    if (LISTEN_SETTINGS.includes(name) && !listenFromFlags) {
      // `HTTP_ADDR=:9000 unnar --port 8000` listens on 8000: flags win, also over their neighbours.
      for (const setting of LISTEN_SETTINGS) delete out[setting]
      listenFromFlags = true
    }
    out[name] = value
  }
  return out
}

export function loadConfig(env: Env): Config {
  const addr = parseListen(env.HTTP_ADDR, env.PORT)
  if (env.UNNAR_HOST !== undefined && env.UNNAR_HOST !== '') addr.host = parseHost('UNNAR_HOST', env.UNNAR_HOST)
  const upstreamText = env.NIX_CACHE_URL ?? env.NAR_CACHE_URL ?? DEFAULT_UPSTREAM
  const upstreams = upstreamText.split(/[\s,]+/).filter((u) => u !== '')
  if (upstreams.length === 0) throw new ConfigError('NIX_CACHE_URL is empty: give at least one cache URL')
  for (const url of upstreams) checkUpstreamUrl(url)
  const cacheHome = env.XDG_CACHE_HOME || path.join(env.HOME || os.homedir(), '.cache')
  const cacheSize = parseSizeSetting('UNNAR_CACHE_SIZE', env.UNNAR_CACHE_SIZE ?? '10G')
  const tokensFile = env.UNNAR_UPSTREAM_TOKENS_FILE === '' ? undefined : env.UNNAR_UPSTREAM_TOKENS_FILE
  const tokensFromEnv = tokensSetting('UNNAR_UPSTREAM_TOKENS', () =>
    parseTokens(env.UNNAR_UPSTREAM_TOKENS ?? '', 'entry'),
  )
  return {
    ...addr,
    upstreams,
    cacheDir: path.resolve(env.UNNAR_CACHE_DIR || path.join(cacheHome, 'unnar')),
    cacheSize,
    maxNarSize:
      env.UNNAR_MAX_NAR_SIZE === undefined ? undefined : parseBytes('UNNAR_MAX_NAR_SIZE', env.UNNAR_MAX_NAR_SIZE),
    memoryCacheBytes: parseBytes('UNNAR_MEMORY_CACHE_SIZE', env.UNNAR_MEMORY_CACHE_SIZE ?? '128M'),
    negativeTtlMs: parseSeconds('UNNAR_NEGATIVE_TTL', env.UNNAR_NEGATIVE_TTL ?? '60'),
    upstreamTimeoutMs: parseSeconds('UNNAR_UPSTREAM_TIMEOUT', env.UNNAR_UPSTREAM_TIMEOUT ?? '30'),
    logLevel: parseLogLevel(env.LOG_LEVEL ?? 'info'),
    domain: parseDomain(env.DOMAIN),
    trustedPublicKeys: parseTrustedKeys(env.TRUSTED_PUBLIC_KEYS),
    pinUpstreamOrder: parseUpstreamOrder(env.UNNAR_UPSTREAM_ORDER),
    socket: env.UNNAR_SOCKET === '' ? undefined : env.UNNAR_SOCKET,
    metrics: parseMetricsAddr(env.UNNAR_METRICS_ADDR),
    maxDownloads: parseCount('UNNAR_MAX_DOWNLOADS', env.UNNAR_MAX_DOWNLOADS ?? '8'),
    maxConnections: parseCount('UNNAR_MAX_CONNECTIONS', env.UNNAR_MAX_CONNECTIONS ?? '10000'),
    headerTimeoutMs: parseSeconds('UNNAR_HEADER_TIMEOUT', env.UNNAR_HEADER_TIMEOUT ?? '20'),
    keepAliveTimeoutMs: parseSeconds('UNNAR_KEEP_ALIVE_TIMEOUT', env.UNNAR_KEEP_ALIVE_TIMEOUT ?? '5'),
    maxUrlLength: parseCount('UNNAR_MAX_URL_LENGTH', env.UNNAR_MAX_URL_LENGTH ?? '8192'),
    shutdownTimeoutMs: parseSeconds('UNNAR_SHUTDOWN_TIMEOUT', env.UNNAR_SHUTDOWN_TIMEOUT ?? '30'),
    netrcFile: env.NETRC === undefined ? defaultNetrcFile(env.NIX_CONF_DIR) : checkNetrcFile(env.NETRC),
    upstreamTokens: new Map([
      ...(tokensFile === undefined
        ? []
        : tokensSetting('UNNAR_UPSTREAM_TOKENS_FILE', () => readTokensFile(tokensFile))),
      ...tokensFromEnv,
    ]),
    upstreamTokensFile: tokensFile,
    upstreamTokensFromEnv: tokensFromEnv,
    upstreamConnectTimeoutMs: parseSeconds(
      'UNNAR_UPSTREAM_CONNECT_TIMEOUT',
      env.UNNAR_UPSTREAM_CONNECT_TIMEOUT ?? '10',
    ),
    upstreamIdleTimeoutMs: parseSeconds('UNNAR_UPSTREAM_IDLE_TIMEOUT', env.UNNAR_UPSTREAM_IDLE_TIMEOUT ?? '30'),
    lookup: parseLookup(env.UNNAR_LOOKUP),
    storeDirs: parseStoreDirs(env.UNNAR_STORE_DIRS),
    verify: parseVerify(env.UNNAR_VERIFY),
  }
}

/** The configuration as a startup log shows it: secrets and URL passwords redacted. */
export function describeConfig(config: Config): Record<string, unknown> {
  return {
    ...config,
    upstreams: config.upstreams.map(redactUrl),
    upstreamTokens: [...config.upstreamTokens.keys()].map((host) => `${host}=<redacted>`),
    upstreamTokensFromEnv: undefined, // already among upstreamTokens
    trustedPublicKeys: config.trustedPublicKeys?.map((k) => k.name),
  }
}

/**
 * A ConfigError's message as the user wrote the setting: a value given as a flag is named by the
 * flag (`--cache-size: "banana" is not a size`), not by the variable the flag sets.
 */
export function describeConfigError(error: ConfigError, argv: readonly string[]): string {
  for (const arg of argv) {
    const flag = arg.split('=', 1)[0]!
    const env = FLAGS[flag]
    if (env !== undefined && (error.message.startsWith(`${env}:`) || error.message.startsWith(`${env} `)))
      return flag + error.message.slice(env.length)
  }
  return error.message
}

/** `https://user:secret@host/` → `https://user:<redacted>@host/`. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url)
    if (parsed.password === '') return url
    parsed.password = 'redacted'
    return parsed.toString().replace(':redacted@', ':<redacted>@')
  } catch {
    return url
  }
}

function checkUpstreamUrl(url: string): void {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    throw new ConfigError(`NIX_CACHE_URL: "${url}" is not a URL`)
  }
  if (!(SUPPORTED_SCHEMES as readonly string[]).includes(parsed.protocol)) {
    throw new ConfigError(
      `NIX_CACHE_URL: unsupported scheme "${parsed.protocol}" in "${parsed.protocol}//${parsed.host}" (supported: http, https, file, s3)`,
    )
  }
  // Its parameters too (?scheme=, ?endpoint=, …): a bad one is a bad setting, not a failed start.
  if (parsed.protocol === 's3:') {
    try {
      parseS3Url(parsed)
    } catch (err) {
      throw new ConfigError(`NIX_CACHE_URL: ${(err as Error).message}`)
    }
  }
}

/** nar-serve's HTTP_ADDR: `host:port`, `:port`, `[v6]:port` or a bare host; PORT fills in the port. */
function parseListen(
  httpAddr: string | undefined,
  portText: string | undefined,
): { port: number; host: string | undefined } {
  let port = portText === undefined ? DEFAULT_PORT : parsePort('PORT', portText)
  if (httpAddr === undefined || httpAddr === '') return { port, host: undefined }
  const match = /^(?:\[([^\]]+)\]|([^:]*))(?::(\d+))?$/.exec(httpAddr)
  if (match === null)
    throw new ConfigError(`HTTP_ADDR: cannot parse "${httpAddr}" (expected host:port, :port or [v6]:port)`)
  if (match[3] !== undefined) port = parsePort('HTTP_ADDR', match[3])
  const host = match[1] ?? match[2]
  return { port, host: host === '' ? undefined : host }
}

function parseHost(name: string, text: string): string {
  const host = text.startsWith('[') && text.endsWith(']') ? text.slice(1, -1) : text
  if (!/^[\w.:%-]+$/.test(host)) throw new ConfigError(`${name}: "${text}" is not a host name or IP address`)
  return host
}

function parsePort(name: string, text: string): number {
  const port = Number(text)
  if (!/^\d+$/.test(text) || port > 65535) throw new ConfigError(`${name}: "${text}" is not a port number`)
  return port
}

const UNITS: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 }

/** `10G`, `500M`, `123456`, `1.5T` (binary units; an optional `B`/`iB` suffix is accepted). */
export function parseBytes(name: string, text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$/i.exec(text)
  if (match === null) throw new ConfigError(`${name}: "${text}" is not a size (examples: 10G, 500M, 1048576)`)
  return Math.floor(Number(match[1]) * UNITS[match[2]!.toUpperCase()]!)
}

export function parseSizeSetting(name: string, text: string): SizeSetting {
  const percent = /^\s*(\d+(?:\.\d+)?)\s*%\s*$/.exec(text)
  if (percent !== null) {
    const value = Number(percent[1])
    if (value <= 0 || value > 100) throw new ConfigError(`${name}: "${text}" must be a percentage between 0 and 100`)
    return { percent: value }
  }
  return { bytes: parseBytes(name, text) }
}

/** Node's timers hold at most 2^31 - 1 ms (longer ones fire at once). */
const MAX_SECONDS = Math.floor((2 ** 31 - 1) / 1000)

/** A duration in seconds, returned in whole milliseconds: at least 1 ms, at most MAX_SECONDS (0 would turn limits off or on at once). */
function parseSeconds(name: string, text: string): number {
  const value = Number(text)
  if (!/^\d+(\.\d+)?$/.test(text.trim()) || !Number.isFinite(value))
    throw new ConfigError(`${name}: "${text}" is not a number of seconds`)
  const ms = Math.round(value * 1000)
  if (ms < 1 || value > MAX_SECONDS)
    throw new ConfigError(`${name}: "${text}" is out of range (from 0.001 to ${MAX_SECONDS} seconds)`)
  return ms
}

function parseCount(name: string, text: string): number {
  const value = Number(text)
  if (!/^\d+$/.test(text.trim()) || value < 1 || !Number.isSafeInteger(value))
    throw new ConfigError(`${name}: "${text}" is not a positive whole number`)
  return value
}

function parseMetricsAddr(text: string | undefined): Config['metrics'] {
  if (text === undefined || text === '' || text === 'main') return { kind: 'main' }
  if (text === 'off') return { kind: 'off' }
  const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(text)
  if (match === null) throw new ConfigError(`UNNAR_METRICS_ADDR: "${text}" is not "off", "main" or host:port`)
  const host = match[1] ?? match[2]
  return {
    kind: 'separate',
    port: parsePort('UNNAR_METRICS_ADDR', match[3]!),
    host: host === '' || host === undefined ? undefined : parseHost('UNNAR_METRICS_ADDR', host),
  }
}

/** Token parsing lives with the other credentials; here its errors become this setting's. */
function tokensSetting<T>(name: string, parse: () => T): T {
  try {
    return parse()
  } catch (err) {
    throw new ConfigError(`${name}: ${(err as Error).message}`)
  }
}

/**
 * Unset NETRC means Nix's own default, `$NIX_CONF_DIR/netrc` (`/etc/nix/netrc`), when it exists and
 * this user may read it: like Nix, a missing file is no error (a malformed one is).
 */
function defaultNetrcFile(confDir: string | undefined): string | undefined {
  const file = path.join(confDir === undefined || confDir === '' ? '/etc/nix' : confDir, 'netrc')
  try {
    accessSync(file, constants.R_OK)
  } catch {
    return undefined
  }
  return checkNetrcFile(file)
}

/** NETRC must name a readable netrc file (its content is never shown); empty means none. */
function checkNetrcFile(file: string | undefined): string | undefined {
  if (file === undefined || file === '') return undefined
  try {
    readNetrcFile(file)
  } catch (err) {
    throw new ConfigError(`NETRC: ${(err as Error).message}`)
  }
  return file
}

function parseLookup(text: string | undefined): Config['lookup'] {
  if (text === undefined || text === '' || text === 'sequential') return 'sequential'
  if (text === 'parallel') return 'parallel'
  throw new ConfigError(`UNNAR_LOOKUP: "${text}" is not "sequential" or "parallel"`)
}

function parseVerify(text: string | undefined): Config['verify'] {
  if (text === undefined || text === '' || text === 'strict') return 'strict'
  if (text === 'stream') return 'stream'
  throw new ConfigError(`UNNAR_VERIFY: "${text}" is not "strict" or "stream"`)
}

function parseStoreDirs(text: string | undefined): readonly string[] | undefined {
  if (text === undefined || text === '' || text === 'auto') return undefined
  const dirs = text.split(/[\s,]+/).filter((d) => d !== '')
  for (const dir of dirs) {
    if (!/^(\/[A-Za-z0-9+_.=-]+)+$/.test(dir) || dir.split('/').some((s) => s === '.' || s === '..')) {
      throw new ConfigError(`UNNAR_STORE_DIRS: "${dir}" is not an absolute store directory like /nix/store`)
    }
  }
  return dirs
}

function parseLogLevel(text: string): LogLevel {
  if (!(LOG_LEVELS as string[]).includes(text))
    throw new ConfigError(`LOG_LEVEL: "${text}" is not one of ${LOG_LEVELS.join(', ')}`)
  return text as LogLevel
}

function parseDomain(text: string | undefined): string | undefined {
  if (text === undefined || text === '') return undefined
  if (!/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/i.test(text)) {
    throw new ConfigError(`DOMAIN: "${text}" is not a domain name (example: nix.example.org)`)
  }
  return text.toLowerCase()
}

function parseTrustedKeys(text: string | undefined): readonly PublicKey[] | undefined {
  if (text === undefined) return undefined
  try {
    return parsePublicKeys(text)
  } catch (err) {
    throw new ConfigError(`TRUSTED_PUBLIC_KEYS: ${(err as Error).message}`)
  }
}

function parseUpstreamOrder(text: string | undefined): boolean {
  if (text === undefined || text === 'priority') return false
  if (text === 'configured') return true
  throw new ConfigError(`UNNAR_UPSTREAM_ORDER: "${text}" is not "priority" or "configured"`)
}
