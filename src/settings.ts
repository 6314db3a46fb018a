/**
 * Every setting once: its flag, environment variable, group, value placeholder, default and
 * meaning. `unnar --help` and docs/configuration.md's table are rendered from it (a test keeps the
 * document in step, and another nix/settings.nix), and config.ts reads the flags with it.
 */

export type SettingGroup = 'listening' | 'upstreams' | 'trust' | 'cache' | 'limits' | 'logging'

export interface Setting {
  readonly flag: `--${string}`
  readonly env: string
  /** Other variables read for it (nar-serve's names). */
  readonly aliases?: readonly string[]
  readonly group: SettingGroup
  /** What the value looks like, for --help: `PORT`, `SECONDS`, `SIZE`… */
  readonly value: string
  /** The default as a user reads it. */
  readonly default: string
  /** One line of meaning (--help shows it whole: keep it short). */
  readonly help: string
}

export const GROUP_TITLES: Readonly<Record<SettingGroup, string>> = {
  listening: 'Listening',
  upstreams: 'Upstreams',
  trust: 'Trust',
  cache: 'Cache',
  limits: 'Limits and timeouts',
  logging: 'Logging and metrics',
}

export const SETTINGS: readonly Setting[] = [
  { flag: '--port', env: 'PORT', group: 'listening', value: 'PORT', default: '8383', help: 'TCP port to listen on' },
  {
    flag: '--host',
    env: 'UNNAR_HOST',
    group: 'listening',
    value: 'ADDR',
    default: 'all interfaces',
    help: 'address to listen on (127.0.0.1, ::1, [::]…); wins over the host of --listen',
  },
  {
    flag: '--listen',
    env: 'HTTP_ADDR',
    group: 'listening',
    value: 'HOST:PORT',
    default: 'all interfaces',
    help: "nar-serve's form: host:port, :port, [v6]:port or a host",
  },
  {
    flag: '--socket',
    env: 'UNNAR_SOCKET',
    group: 'listening',
    value: 'PATH',
    default: 'off',
    help: 'listen on this unix socket instead of TCP',
  },
  {
    flag: '--domain',
    env: 'DOMAIN',
    group: 'listening',
    value: 'DOMAIN',
    default: 'off',
    help: "serve <hash>.<domain> as that store path's own site",
  },
  {
    flag: '--upstream',
    env: 'NIX_CACHE_URL',
    aliases: ['NAR_CACHE_URL'],
    group: 'upstreams',
    value: 'URL…',
    default: 'https://cache.nixos.org',
    help: 'caches, highest priority first: http(s)://, file:///dir, s3://bucket?…',
  },
  {
    flag: '--upstream-order',
    env: 'UNNAR_UPSTREAM_ORDER',
    group: 'upstreams',
    value: 'ORDER',
    default: 'priority',
    help: "priority (by the caches' Priority, as Nix does) or configured",
  },
  {
    flag: '--lookup',
    env: 'UNNAR_LOOKUP',
    group: 'upstreams',
    value: 'MODE',
    default: 'sequential',
    help: 'ask the caches one after another (sequential) or all at once (parallel)',
  },
  {
    flag: '--store-dirs',
    env: 'UNNAR_STORE_DIRS',
    group: 'upstreams',
    value: 'DIR…',
    default: 'auto',
    help: "store dirs served: auto (/nix/store and each cache's StoreDir) or a list",
  },
  {
    flag: '--netrc-file',
    env: 'NETRC',
    group: 'upstreams',
    value: 'FILE',
    default: '/etc/nix/netrc if readable',
    help: "Basic auth for http(s) caches, in Nix's netrc format; empty: none",
  },
  {
    flag: '--upstream-tokens',
    env: 'UNNAR_UPSTREAM_TOKENS',
    group: 'upstreams',
    value: 'HOST=TOKEN…',
    default: 'none',
    help: 'bearer tokens by cache host (host or host:port)',
  },
  {
    flag: '--upstream-tokens-file',
    env: 'UNNAR_UPSTREAM_TOKENS_FILE',
    group: 'upstreams',
    value: 'FILE',
    default: 'none',
    help: 'the same, one per line, read again when it changes',
  },
  {
    flag: '--trusted-public-keys',
    env: 'TRUSTED_PUBLIC_KEYS',
    group: 'trust',
    value: 'KEY…',
    default: 'cache.nixos.org-1 for cache.nixos.org',
    help: 'name:base64 keys narinfos must be signed with; empty: no check',
  },
  {
    flag: '--verify',
    env: 'UNNAR_VERIFY',
    group: 'trust',
    value: 'MODE',
    default: 'strict',
    help: 'strict: no answer completes before its NAR matched NarHash; stream: may',
  },
  {
    flag: '--cache-dir',
    env: 'UNNAR_CACHE_DIR',
    group: 'cache',
    value: 'DIR',
    default: '$XDG_CACHE_HOME/unnar',
    help: 'where decompressed NARs are kept',
  },
  {
    flag: '--cache-size',
    env: 'UNNAR_CACHE_SIZE',
    group: 'cache',
    value: 'SIZE',
    default: '10G',
    help: 'bound on the kept NARs: bytes (K/M/G/T, powers of 1024) or N% of the disk',
  },
  {
    flag: '--max-nar-size',
    env: 'UNNAR_MAX_NAR_SIZE',
    group: 'cache',
    value: 'SIZE',
    default: 'cache size / 4',
    help: 'bigger NARs are streamed through a temp file, not kept',
  },
  {
    flag: '--memory-cache-size',
    env: 'UNNAR_MEMORY_CACHE_SIZE',
    group: 'cache',
    value: 'SIZE',
    default: '128M',
    help: 'memory for hot files of verified NARs; 0: none',
  },
  {
    flag: '--negative-ttl',
    env: 'UNNAR_NEGATIVE_TTL',
    group: 'cache',
    value: 'SECONDS',
    default: '60',
    help: 'how long "no cache has this path" is remembered',
  },
  {
    flag: '--max-downloads',
    env: 'UNNAR_MAX_DOWNLOADS',
    group: 'limits',
    value: 'N',
    default: '8',
    help: 'concurrent NAR downloads; more wait in a queue',
  },
  {
    flag: '--max-connections',
    env: 'UNNAR_MAX_CONNECTIONS',
    group: 'limits',
    value: 'N',
    default: '10000',
    help: 'client connections; more are closed at once',
  },
  {
    flag: '--max-url-length',
    env: 'UNNAR_MAX_URL_LENGTH',
    group: 'limits',
    value: 'N',
    default: '8192',
    help: 'longer request targets get 414',
  },
  {
    flag: '--upstream-timeout',
    env: 'UNNAR_UPSTREAM_TIMEOUT',
    group: 'limits',
    value: 'SECONDS',
    default: '30',
    help: 'from a request to a cache to its response headers',
  },
  {
    flag: '--upstream-connect-timeout',
    env: 'UNNAR_UPSTREAM_CONNECT_TIMEOUT',
    group: 'limits',
    value: 'SECONDS',
    default: '10',
    help: 'to connect to a cache (DNS, TCP, TLS)',
  },
  {
    flag: '--upstream-idle-timeout',
    env: 'UNNAR_UPSTREAM_IDLE_TIMEOUT',
    group: 'limits',
    value: 'SECONDS',
    default: '30',
    help: "silence between two chunks of a cache's body",
  },
  {
    flag: '--header-timeout',
    env: 'UNNAR_HEADER_TIMEOUT',
    group: 'limits',
    value: 'SECONDS',
    default: '20',
    help: 'for a client to send its request headers',
  },
  {
    flag: '--keep-alive-timeout',
    env: 'UNNAR_KEEP_ALIVE_TIMEOUT',
    group: 'limits',
    value: 'SECONDS',
    default: '5',
    help: 'an idle keep-alive connection is kept this long',
  },
  {
    flag: '--shutdown-timeout',
    env: 'UNNAR_SHUTDOWN_TIMEOUT',
    group: 'limits',
    value: 'SECONDS',
    default: '30',
    help: 'in-flight answers may run on this long after SIGTERM',
  },
  {
    flag: '--log-level',
    env: 'LOG_LEVEL',
    group: 'logging',
    value: 'LEVEL',
    default: 'info',
    help: 'debug, info, warn, error or silent',
  },
  {
    flag: '--metrics-listen',
    env: 'UNNAR_METRICS_ADDR',
    group: 'logging',
    value: 'WHERE',
    default: 'main',
    help: '/metrics on the main listener (main), on HOST:PORT only, or off',
  },
]

/** The setting a flag names, if any. */
export function settingByFlag(flag: string): Setting | undefined {
  return SETTINGS.find((setting) => setting.flag === flag)
}

/** The flags and their variables, as the command line reads them. */
export const FLAGS: Readonly<Record<string, string>> = Object.fromEntries(SETTINGS.map((s) => [s.flag, s.env]))

/** `unnar --help`: grouped; per flag its placeholder, variable and default, then one line of meaning. */
export function helpText(version: string): string {
  const lines = [
    `unnar ${version}: serve any file of a Nix binary cache over HTTP, unpacked on the fly`,
    '',
    'usage: unnar [--OPTION VALUE | --OPTION=VALUE]…',
    '',
  ]
  for (const group of Object.keys(GROUP_TITLES) as SettingGroup[]) {
    lines.push(`${GROUP_TITLES[group]}:`)
    for (const s of SETTINGS.filter((setting) => setting.group === group)) {
      lines.push(
        `  ${s.flag} ${s.value}  (${[s.env, ...(s.aliases ?? [])].join(' or ')}, default ${s.default})`,
        `        ${s.help}`,
      )
    }
    lines.push('')
  }
  lines.push(
    'Flags win over the environment. Sizes take K/M/G/T (powers of 1024); durations are seconds.',
    '  -h, --help      this text',
    '  --version       the version',
    '',
    'Each setting in detail: docs/configuration.md.',
    '',
  )
  return lines.join('\n')
}

/** docs/configuration.md's table of every setting (rendered from SETTINGS; test/docs.test.ts compares). */
export function settingsTable(): string {
  const rows = ['| flag | environment | default | meaning |', '|---|---|---|---|']
  for (const group of Object.keys(GROUP_TITLES) as SettingGroup[]) {
    for (const s of SETTINGS.filter((setting) => setting.group === group)) {
      const env = [s.env, ...(s.aliases ?? [])].map((name) => `\`${name}\``).join(', ')
      rows.push(`| [\`${s.flag}\`](#${s.flag}) \`${s.value}\` | ${env} | ${cell(s.default)} | ${cell(s.help)} |`)
    }
  }
  return rows.join('\n') + '\n'
}

/** Text in a markdown table cell: no column break, no HTML tag (`<hash>`). */
function cell(text: string): string {
  return text.replaceAll('|', '\\|').replaceAll('<', '&lt;').replaceAll('>', '&gt;')
}
