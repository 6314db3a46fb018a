/** Environment (and flags) → one validated Config. Every setting name here is documented in the README. */
import os from 'node:os'
import path from 'node:path'
import { parsePublicKeys, type PublicKey } from './formats/signature.js'
import { LOG_LEVELS, type LogLevel } from './log.js'
import { SUPPORTED_SCHEMES } from './upstream/create-upstream.js'

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
  readonly negativeTtlMs: number
  readonly upstreamTimeoutMs: number
  readonly logLevel: LogLevel
  /** Subdomain mode: `<hash>.<domain>` serves that store path as a site root. */
  readonly domain: string | undefined
  /** TRUSTED_PUBLIC_KEYS as given; undefined = unset (cache.nixos.org gets its own key). */
  readonly trustedPublicKeys: readonly PublicKey[] | undefined
  /** Ask upstreams in the configured order, ignoring their nix-cache-info Priority. */
  readonly pinUpstreamOrder: boolean
}

/** A bad setting: the message names the setting and the value, in one line. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError'
}

type Env = Readonly<Record<string, string | undefined>>

/** Flags (`--port 80`, `--port=80`) override environment variables of the same setting. */
export const FLAGS: Record<string, string> = {
  '--port': 'PORT',
  '--listen': 'HTTP_ADDR',
  '--upstream': 'NIX_CACHE_URL',
  '--cache-dir': 'UNNAR_CACHE_DIR',
  '--cache-size': 'UNNAR_CACHE_SIZE',
  '--max-nar-size': 'UNNAR_MAX_NAR_SIZE',
  '--negative-ttl': 'UNNAR_NEGATIVE_TTL',
  '--upstream-timeout': 'UNNAR_UPSTREAM_TIMEOUT',
  '--log-level': 'LOG_LEVEL',
  '--domain': 'DOMAIN',
  '--trusted-public-keys': 'TRUSTED_PUBLIC_KEYS',
  '--upstream-order': 'UNNAR_UPSTREAM_ORDER',
}

/** Applies command-line flags on top of the environment. */
export function applyFlags(env: Env, argv: readonly string[]): Env {
  const out: Record<string, string | undefined> = { ...env }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    const eq = arg.indexOf('=')
    const flag = eq < 0 ? arg : arg.slice(0, eq)
    const name = FLAGS[flag]
    if (name === undefined) throw new ConfigError(`unknown option "${arg}" (see --help)`)
    const value = eq < 0 ? argv[++i] : arg.slice(eq + 1)
    if (value === undefined) throw new ConfigError(`${flag} needs a value`)
    out[name] = value
  }
  return out
}

export function loadConfig(env: Env): Config {
  const addr = parseListen(env.HTTP_ADDR, env.PORT)
  const upstreamText = env.NIX_CACHE_URL ?? env.NAR_CACHE_URL ?? DEFAULT_UPSTREAM
  const upstreams = upstreamText.split(/[\s,]+/).filter((u) => u !== '')
  if (upstreams.length === 0) throw new ConfigError('NIX_CACHE_URL is empty: give at least one cache URL')
  for (const url of upstreams) checkUpstreamUrl(url)
  const cacheHome = env.XDG_CACHE_HOME || path.join(env.HOME || os.homedir(), '.cache')
  const cacheSize = parseSizeSetting('UNNAR_CACHE_SIZE', env.UNNAR_CACHE_SIZE ?? '10G')
  return {
    ...addr,
    upstreams,
    cacheDir: path.resolve(env.UNNAR_CACHE_DIR || path.join(cacheHome, 'unnar')),
    cacheSize,
    maxNarSize: env.UNNAR_MAX_NAR_SIZE === undefined ? undefined : parseBytes('UNNAR_MAX_NAR_SIZE', env.UNNAR_MAX_NAR_SIZE),
    negativeTtlMs: parseSeconds('UNNAR_NEGATIVE_TTL', env.UNNAR_NEGATIVE_TTL ?? '60') * 1000,
    upstreamTimeoutMs: parseSeconds('UNNAR_UPSTREAM_TIMEOUT', env.UNNAR_UPSTREAM_TIMEOUT ?? '30') * 1000,
    logLevel: parseLogLevel(env.LOG_LEVEL ?? 'info'),
    domain: parseDomain(env.DOMAIN),
    trustedPublicKeys: parseTrustedKeys(env.TRUSTED_PUBLIC_KEYS),
    pinUpstreamOrder: parseUpstreamOrder(env.UNNAR_UPSTREAM_ORDER),
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
    throw new ConfigError(`NIX_CACHE_URL: unsupported scheme "${parsed.protocol}" in "${parsed.protocol}//${parsed.host}" (supported: http, https, file, s3)`)
  }
}

/** nar-serve's HTTP_ADDR: `host:port`, `:port`, `[v6]:port` or a bare host; PORT fills in the port. */
function parseListen(httpAddr: string | undefined, portText: string | undefined): { port: number; host: string | undefined } {
  let port = portText === undefined ? DEFAULT_PORT : parsePort('PORT', portText)
  if (httpAddr === undefined || httpAddr === '') return { port, host: undefined }
  const match = /^(?:\[([^\]]+)\]|([^:]*))(?::(\d+))?$/.exec(httpAddr)
  if (match === null) throw new ConfigError(`HTTP_ADDR: cannot parse "${httpAddr}" (expected host:port, :port or [v6]:port)`)
  if (match[3] !== undefined) port = parsePort('HTTP_ADDR', match[3])
  const host = match[1] ?? match[2]
  return { port, host: host === '' ? undefined : host }
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

function parseSeconds(name: string, text: string): number {
  const value = Number(text)
  if (!/^\d+(\.\d+)?$/.test(text.trim()) || !Number.isFinite(value)) throw new ConfigError(`${name}: "${text}" is not a number of seconds`)
  return value
}

function parseLogLevel(text: string): LogLevel {
  if (!(LOG_LEVELS as string[]).includes(text)) throw new ConfigError(`LOG_LEVEL: "${text}" is not one of ${LOG_LEVELS.join(', ')}`)
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
