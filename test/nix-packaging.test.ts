/**
 * The Nix packaging (flake.nix, nix/): every .nix file parses, nix/settings.nix (the table the NixOS
 * module builds its options from) covers every setting of src/settings.ts, the module evaluated by
 * nixpkgs' real module system gives a unit whose environment unnar's loadConfig accepts, its option
 * types refuse what unnar would refuse, and nix/npm-lock.nix gives every dependency its registry URL.
 *
 * These machines cannot fetch nixpkgs, so nothing is built: the module is evaluated by
 * test/nix/eval-module.nix with nixpkgs' lib/ vendored in test/fixtures/nixpkgs-lib (lib.evalModules and
 * lib.types, release 26.11; see README.unnar.md there), the few NixOS options it sets declared
 * there as NixOS declares them. Needs nix-instantiate (Debian's nix-bin, installed by .ci/run); the
 * whole suite is skipped without it.
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { ConfigError, FLAGS, loadConfig, SECRET_SETTINGS, type Config } from '../src/config.js'
import { LOG_LEVELS } from '../src/log.js'
import { SETTINGS } from '../src/settings.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const HAVE_NIX = spawnSync('nix-instantiate', ['--version'], { stdio: 'ignore' }).status === 0
const skip = HAVE_NIX
  ? false
  : 'nix-instantiate is not installed (Debian: apt-get install nix-bin); Nix packaging not checked'
/** nixpkgs' lib/, next to this checkout (CI has ../shared too). */
const NIXPKGS_LIB = path.resolve(ROOT, 'test/fixtures/nixpkgs-lib/lib')

function nixInstantiate(args: readonly string[]): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync('nix-instantiate', args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
  return { status: result.status, stdout: result.stdout, stderr: result.stderr }
}

function nixEval<T>(args: readonly string[]): T {
  const result = nixInstantiate(['--eval', '--strict', '--json', ...args])
  assert.equal(result.status, 0, `nix-instantiate ${args.join(' ')} failed:\n${result.stderr}`)
  return JSON.parse(result.stdout) as T
}

interface Setting {
  readonly flag: string
  readonly env: string
  readonly kind: string
  readonly option: boolean
  readonly viaOption: string | null
  readonly values: readonly string[] | null
  readonly nullable: boolean
  readonly default: unknown
}

function loadSettings(): Record<string, Setting> {
  return nixEval<Record<string, Setting>>([
    '-E',
    'builtins.mapAttrs (_: s: { inherit (s) flag env kind; option = s.option or true; viaOption = s.viaOption or null; values = s.values or null; nullable = s.nullable or true; default = s.default or null; }) (import ./nix/settings.nix).settings',
  ])
}

/**
 * `--eval --strict --json test/nix/eval-module.nix -A <attr> --argstr nixpkgsLib <lib> [--argstr configJson <json>] [--arg extraModule <nix>]`
 * (without `--eval --strict --json`, which nixEval adds).
 */
function moduleArgs(attr: string, config: Record<string, unknown> | null, extraModule?: string): string[] {
  assert.ok(
    existsSync(path.join(NIXPKGS_LIB, 'default.nix')),
    `nixpkgs' lib is not at ${NIXPKGS_LIB}: the module is evaluated with the copy vendored in test/fixtures/nixpkgs-lib`,
  )
  return [
    'test/nix/eval-module.nix',
    '-A',
    attr,
    '--argstr',
    'nixpkgsLib',
    NIXPKGS_LIB,
    ...(config === null ? [] : ['--argstr', 'configJson', JSON.stringify({ enable: true, ...config })]),
    ...(extraModule === undefined ? [] : ['--arg', 'extraModule', extraModule]),
  ]
}

interface Service {
  readonly services: readonly string[]
  readonly firewallPorts: readonly number[]
  readonly warnings: readonly string[]
  readonly environment: Record<string, string>
  readonly serviceConfig: Record<string, unknown>
  readonly wantedBy: readonly string[]
  readonly after: readonly string[]
  /** The unit file as NixOS writes it. */
  readonly unit: string
}

/** services.unnar set to `config` (plus `enable = true`) and evaluated; fails the test on an evaluation error. */
function evalModule(config: Record<string, unknown>, extraModule?: string): Service {
  const result = nixInstantiate(['--eval', '--strict', '--json', ...moduleArgs('service', config, extraModule)])
  assert.equal(result.status, 0, `services.unnar = ${JSON.stringify(config)} does not evaluate:\n${result.stderr}`)
  return JSON.parse(result.stdout) as Service
}

/** The evaluation error (stderr) for `config`, which must not evaluate. */
function evalError(config: Record<string, unknown>, extraModule?: string): string {
  const result = nixInstantiate(['--eval', '--strict', '--json', ...moduleArgs('service', config, extraModule)])
  assert.notEqual(
    result.status,
    0,
    `services.unnar = ${JSON.stringify(config)}${extraModule === undefined ? '' : ` with ${extraModule}`} evaluates, but must not`,
  )
  return result.stderr
}

/** Many configurations in one nix-instantiate: whether each evaluates (type errors and assertions fail it) and its environment. */
function evalCases(
  configs: ReadonlyArray<Record<string, unknown>>,
): Array<{ ok: boolean; environment: Record<string, string> | null }> {
  return nixEval([
    ...moduleArgs('cases', null),
    '--argstr',
    'casesJson',
    JSON.stringify(configs.map((c) => ({ enable: true, ...c }))),
  ])
}

/** `[Section]` → its `Key=value` lines, in order. */
function parseUnit(text: string): Record<string, Array<[string, string]>> {
  const sections: Record<string, Array<[string, string]>> = {}
  let current: Array<[string, string]> | undefined
  for (const line of text.split('\n')) {
    if (line === '') continue
    const section = /^\[(.+)\]$/.exec(line)
    if (section !== null) {
      current = sections[section[1]!] = []
      continue
    }
    const eq = line.indexOf('=')
    assert.ok(current !== undefined && eq > 0, `unexpected unit line: ${line}`)
    current.push([line.slice(0, eq), line.slice(eq + 1)])
  }
  return sections
}

function unitValues(unit: Record<string, Array<[string, string]>>, section: string, key: string): string[] {
  return (unit[section] ?? []).filter(([k]) => k === key).map(([, v]) => v)
}

/** The unit's Environment= lines (NixOS writes each as one JSON-quoted `NAME=value`), as systemd unquotes them. */
function unitEnvironment(unitText: string): Record<string, string> {
  return Object.fromEntries(
    unitValues(parseUnit(unitText), 'Service', 'Environment').map((quoted) => {
      const assignment = JSON.parse(quoted) as string
      const eq = assignment.indexOf('=')
      return [assignment.slice(0, eq), assignment.slice(eq + 1)]
    }),
  )
}

/** What systemd makes of an Environment= value: `%%` is `%`, `%d` the credentials directory. */
function expandSpecifiers(value: string, credentialsDir: string): string {
  return value.replace(/%(.)/g, (_, c: string) => {
    if (c === '%') return '%'
    if (c === 'd') return credentialsDir
    throw new Error(`unexpected systemd specifier %${c} in "${value}"`)
  })
}

/** The process environment systemd gives unnar for `unitText`: read from the unit file, specifiers expanded. */
function processEnvironment(unitText: string, credentialsDir: string): Record<string, string> {
  return Object.fromEntries(
    Object.entries(unitEnvironment(unitText)).map(([k, v]) => [k, expandSpecifiers(v, credentialsDir)]),
  )
}

/** A credentials directory with the files systemd's LoadCredential= would put there. */
function withCredentials<T>(run: (dir: string) => T): T {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'unnar-credentials-'))
  try {
    writeFileSync(path.join(dir, 'netrc'), 'machine cache.example.org login unnar password secret\n')
    writeFileSync(path.join(dir, 'upstream-tokens'), '# tokens\ncache.example.org=t0ken\n')
    return run(dir)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

/** The module system's message for a value of the wrong type. */
function typeError(option: string): RegExp {
  return new RegExp(`A definition for option \`services\\.unnar\\.${option}' is not of type`)
}

/** The .nix files of the repository, skipping installed and generated trees. */
function nixFiles(dir: string): string[] {
  const skipDirs = new Set(['node_modules', '.git', 'dist', 'test-artifacts', '.work'])
  const found: string[] = []
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name)
    if (entry.isDirectory()) {
      if (!skipDirs.has(entry.name)) found.push(...nixFiles(full))
    } else if (entry.isFile() && entry.name.endsWith('.nix')) {
      found.push(full)
    }
  }
  return found
}

describe('Nix packaging', { skip }, () => {
  it('every .nix file parses', () => {
    const files = nixFiles(ROOT)
      .map((f) => path.relative(ROOT, f))
      .sort()
    for (const expected of [
      'flake.nix',
      'nix/module.nix',
      'nix/npm-lock.nix',
      'nix/package.nix',
      'nix/settings.nix',
      'nix/vm-test.nix',
    ]) {
      assert.ok(files.includes(expected), `${expected} is missing (found ${files.join(', ')})`)
    }
    for (const file of files) {
      const result = nixInstantiate(['--parse', file])
      assert.equal(result.status, 0, `${file} does not parse:\n${result.stderr}`)
    }
  })

  it('flake.nix wires up the package, module and VM test from nix/', () => {
    const flake = readFileSync(path.join(ROOT, 'flake.nix'), 'utf8')
    for (const needle of [
      './nix/package.nix',
      './nix/module.nix',
      './nix/vm-test.nix',
      'overlays.default',
      'nixosModules.default',
      'devShells',
      'checks',
    ]) {
      assert.ok(flake.includes(needle), `flake.nix does not mention ${needle}`)
    }
  })

  it("nix/package.nix's source holds the tsconfig files `npm run build` reads", () => {
    const build = (
      JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }
    ).scripts['build']!
    const project = /-p (\S+)/.exec(build)?.[1]
    assert.ok(project !== undefined, `no -p in the build script: ${build}`)
    const extended = (JSON.parse(readFileSync(path.join(ROOT, project), 'utf8')) as { extends?: string }).extends
    const packageNix = readFileSync(path.join(ROOT, 'nix/package.nix'), 'utf8')
    for (const file of [project, ...(extended === undefined ? [] : [extended])]) {
      assert.ok(
        packageNix.includes(`../${path.normalize(file)}\n`),
        `nix/package.nix does not put ${file} in the build's source`,
      )
    }
  })

  it('nix/settings.nix has every setting of src/settings.ts, with the same flag and variable', () => {
    const settings = loadSettings()
    const pairs = (list: ReadonlyArray<{ flag: string; env: string }>) => list.map((s) => `${s.flag} ${s.env}`).sort()
    assert.deepEqual(
      pairs(Object.values(settings)),
      pairs(SETTINGS),
      'nix/settings.nix and src/settings.ts SETTINGS differ: a setting of unnar is an option of the NixOS module',
    )
    assert.deepEqual(
      pairs(Object.values(settings)),
      pairs(Object.entries(FLAGS).map(([flag, env]) => ({ flag, env }))),
      'differs from src/config.ts FLAGS',
    )
    assert.equal(
      new Set(Object.values(settings).map((s) => s.env)).size,
      Object.keys(settings).length,
      'two settings share a variable',
    )
    assert.deepEqual(settings.logLevel?.values, LOG_LEVELS, 'logLevel values differ from src/log.ts LOG_LEVELS')

    // An enum option offers exactly what unnar accepts, and null (unset) means unnar's default, one of them.
    for (const [name, s] of Object.entries(settings).filter(([, s]) => s.kind === 'enum')) {
      for (const value of s.values ?? [])
        assert.doesNotThrow(() => loadConfig({ [s.env]: value }), `${name}: unnar refuses "${value}"`)
      assert.throws(() => loadConfig({ [s.env]: 'bogus' }), ConfigError, `${name}: unnar takes "bogus"`)
      // unnar's error names what it takes (`"bogus" is not "strict" or "stream"`): all of them are offered.
      let message = ''
      try {
        loadConfig({ [s.env]: 'bogus' })
      } catch (err) {
        message = (err as Error).message
      }
      const named = [...message.slice(message.indexOf(' is not ')).matchAll(/"([^"]+)"/g)].map((m) => m[1])
      if (named.length > 0)
        assert.deepEqual(
          [...(s.values ?? [])].sort(),
          named.sort(),
          `${name}: the module offers ${JSON.stringify(s.values)}, unnar takes ${JSON.stringify(named)}`,
        )
      const unnarDefault = SETTINGS.find((t) => t.env === s.env)?.default
      assert.ok(
        s.values?.includes(unnarDefault ?? ''),
        `${name}: unnar's default "${unnarDefault}" is not among ${JSON.stringify(s.values)}`,
      )
    }
    // The module's own defaults are unnar's, except the cache directory (the service's, under /var/cache).
    for (const [name, s] of Object.entries(settings).filter(([n, s]) => !s.nullable && n !== 'cacheDir')) {
      const unnarDefault = SETTINGS.find((t) => t.env === s.env)?.default
      assert.equal(
        Array.isArray(s.default) ? s.default.join(' ') : String(s.default),
        unnarDefault,
        `${name}: the module's default differs from unnar's`,
      )
    }
  })

  it('the module is evaluated with the real nixpkgs lib', (t) => {
    const version = nixEval<string>(['-E', `(import ${NIXPKGS_LIB}).version`])
    t.diagnostic(`nixpkgs lib ${version} from ${NIXPKGS_LIB}`)
    assert.match(version, /^26\.11/)
    // Nothing else answers for the lib: the file takes no stand-in.
    assert.doesNotMatch(
      readFileSync(path.join(ROOT, 'test/nix/eval-module.nix'), 'utf8'),
      /mkOption\s*=|evalModules\s*=/,
    )
  })

  it('the module has an option for every setting, and takes secrets only as files', () => {
    const settings = loadSettings()
    const options = nixEval<Record<string, { type: string; default: unknown }>>(moduleArgs('options', null))
    for (const [name, setting] of Object.entries(settings)) {
      if (setting.option) {
        assert.ok(options[name] !== undefined, `services.unnar.${name} (${setting.env}) is missing`)
      } else {
        assert.equal(options[name], undefined, `${name} carries a secret and must not be an option`)
        assert.ok(
          setting.viaOption !== null && settings[setting.viaOption]?.kind === 'credential',
          `${name}: viaOption must name a file option`,
        )
      }
    }
    const secrets = Object.values(settings)
      .filter((s) => s.kind === 'secret')
      .map((s) => s.env)
    assert.deepEqual(
      secrets.sort(),
      [...SECRET_SETTINGS].sort(),
      'the secret settings differ from src/config.ts SECRET_SETTINGS',
    )
    assert.equal(
      settings.upstreamTokens?.option,
      false,
      '--upstream-tokens is only exposed as a file (upstreamTokensFile)',
    )
    for (const name of ['enable', 'package', 'openFirewall', 'extraEnvironment', 'environmentFile'])
      assert.ok(options[name] !== undefined, `services.unnar.${name} is missing`)
    assert.deepEqual(
      Object.keys(options).sort(),
      [
        ...Object.entries(settings)
          .filter(([, s]) => s.option)
          .map(([n]) => n),
        'enable',
        'package',
        'openFirewall',
        'extraEnvironment',
        'environmentFile',
      ].sort(),
    )
    for (const name of ['netrcFile', 'upstreamTokensFile']) assert.equal(settings[name]?.kind, 'credential')

    assert.match(evalError({ upstreamTokens: 'secret' }), /The option `services\.unnar\.upstreamTokens' does not exist/)
    // A Nix path would be copied into the world-readable store: the file options take strings only.
    for (const name of ['netrcFile', 'upstreamTokensFile', 'environmentFile']) {
      assert.match(evalError({}, `{ services.unnar.${name} = /run/secrets/unnar; }`), typeError(name))
    }
    // Nor may a secret reach the unit's environment, through extraEnvironment or from another module.
    for (const env of ['UNNAR_UPSTREAM_TOKENS', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN']) {
      assert.match(
        evalError({ extraEnvironment: { [env]: 'secret' } }),
        /Failed assertions:\n\s*- services\.unnar\.extraEnvironment must not carry secrets/,
      )
    }
    assert.match(
      evalError({}, '{ systemd.services.unnar.environment.UNNAR_UPSTREAM_TOKENS = "secret"; }'),
      /must not carry secrets .*nor may systemd\.services\.unnar\.environment/,
    )
  })

  it("the option types refuse bad values with the module system's message", () => {
    assert.match(
      evalError({ verify: 'lazy' }),
      /`services\.unnar\.verify' is not of type `null or one of "strict", "stream"'/,
    )
    assert.match(evalError({ logLevel: 'verbose' }), typeError('logLevel'))
    assert.match(
      evalError({ port: 70000 }),
      /`services\.unnar\.port' is not of type `16 bit unsigned integer; between 0 and 65535/,
    )
    assert.match(evalError({ port: '8383' }), typeError('port'))
    assert.match(evalError({ maxDownloads: 0 }), typeError('maxDownloads'))
    assert.match(
      evalError({ negativeTtl: 0 }),
      /`services\.unnar\.negativeTtl' is not of type `null or integer or floating point number between 0\.001 and 2147483 \(both inclusive\)'/,
    )
    assert.match(
      evalError({ cacheDir: 'var/cache/unnar' }),
      /`services\.unnar\.cacheDir' is not of type `string matching the pattern \/\.\*'/,
    )
    assert.match(
      evalError({ upstreams: [] }),
      /`services\.unnar\.upstreams' is not of type `non-empty \(list of string\)'/,
    )
    assert.match(evalError({ openFirewall: 'yes' }), typeError('openFirewall'))
    // …and the assertions theirs, the way nixos-rebuild shows them.
    assert.match(
      evalError({ socket: '/tmp/unnar.sock' }),
      /Failed assertions:\n\s*- services\.unnar\.socket must be in \/run\/unnar\//,
    )
    assert.match(
      evalError({ host: '::1', listen: ':80' }),
      /Failed assertions:\n\s*- services\.unnar: set either `host` \(with `port`\) or `listen`, not both/,
    )
    assert.match(
      evalError({ listen: ':70000', openFirewall: true }),
      /Failed assertions:\n\s*- services\.unnar: the port in `listen` or `metricsListen` is not a port number/,
    )
    assert.match(
      evalError({ metricsListen: '127.0.0.1:99999999999999999999' }),
      /the port in `listen` or `metricsListen` is not a port number/,
    )
  })

  it('what the option types accept, unnar accepts; what they refuse, it would refuse too', () => {
    const settings = loadSettings()
    const ofKind = (kind: string) =>
      Object.entries(settings)
        .filter(([, s]) => s.kind === kind && s.option)
        .map(([name]) => name)
    type Case = { config: Record<string, unknown>; ok: boolean; check?: (config: Config) => void }
    const cases: Case[] = [
      { config: {}, ok: true },
      // port
      { config: { port: 0 }, ok: true, check: (c) => assert.equal(c.port, 0) },
      { config: { port: 65535 }, ok: true, check: (c) => assert.equal(c.port, 65535) },
      ...[65536, -1, 80.5, '80', null].map((port) => ({ config: { port }, ok: false })),
      // the port in listen / metricsListen, read as unnar reads it (leading zeros too)
      { config: { listen: ':080', openFirewall: true }, ok: true, check: (c) => assert.equal(c.port, 80) },
      { config: { listen: '[::1]:8080' }, ok: true, check: (c) => assert.deepEqual([c.host, c.port], ['::1', 8080]) },
      {
        config: { metricsListen: '127.0.0.1:0099' },
        ok: true,
        check: (c) => assert.deepEqual(c.metrics, { kind: 'separate', host: '127.0.0.1', port: 99 }),
      },
      { config: { listen: ':65536' }, ok: false },
      // enums: every value, and no other
      ...ofKind('enum').flatMap((name) => [
        ...(settings[name]!.values ?? []).map((value) => ({ config: { [name]: value }, ok: true })),
        { config: { [name]: 'bogus' }, ok: false },
        { config: { [name]: '' }, ok: false },
      ]),
      // counts
      ...ofKind('count').flatMap((name) => [
        { config: { [name]: 1 }, ok: true },
        { config: { [name]: 2 ** 31 }, ok: true },
        ...[0, -3, 1.5, '8'].map((value) => ({ config: { [name]: value }, ok: false })),
      ]),
      // seconds: unnar takes 1 ms to 2^31 - 1 ms
      ...ofKind('seconds').flatMap((name) => [
        ...[0.001, 0.5, 60, 2147483].map((value) => ({ config: { [name]: value }, ok: true })),
        ...[0, 0.0004, -1, 2147484, '60'].map((value) => ({ config: { [name]: value }, ok: false })),
      ]),
      { config: { negativeTtl: 0.001 }, ok: true, check: (c) => assert.equal(c.negativeTtlMs, 1) },
      { config: { shutdownTimeout: 2147483 }, ok: true, check: (c) => assert.equal(c.shutdownTimeoutMs, 2147483000) },
      // sizes
      {
        config: { cacheSize: '20%', maxNarSize: '1.5G', memoryCacheSize: 0 },
        ok: true,
        check: (c) =>
          assert.deepEqual([c.cacheSize, c.maxNarSize, c.memoryCacheBytes], [{ percent: 20 }, 1.5 * 1024 ** 3, 0]),
      },
      { config: { cacheSize: 1048576 }, ok: true, check: (c) => assert.deepEqual(c.cacheSize, { bytes: 1048576 }) },
      { config: { cacheSize: -1 }, ok: false },
      // paths
      { config: { cacheDir: '/srv/unnar' }, ok: true },
      { config: { socket: '/run/unnar/unnar.sock' }, ok: true },
      ...[{ cacheDir: 'srv' }, { cacheDir: '' }, { socket: 'unnar.sock' }, { socket: '/tmp/unnar.sock' }].map(
        (config) => ({ config, ok: false }),
      ),
      // lists
      { config: { trustedPublicKeys: [] }, ok: true, check: (c) => assert.deepEqual(c.trustedPublicKeys, []) },
      {
        config: { storeDirs: ['/nix/store', '/gnu/store'] },
        ok: true,
        check: (c) => assert.deepEqual(c.storeDirs, ['/nix/store', '/gnu/store']),
      },
      ...[
        { upstreams: [] },
        { storeDirs: [] },
        { upstreams: 'https://cache.nixos.org' },
        { upstreams: ['https://a.example', 1] },
      ].map((config) => ({ config, ok: false })),
      // credentials
      {
        config: { netrcFile: '/run/secrets/netrc', upstreamTokensFile: '/run/secrets/tokens' },
        ok: true,
        check: (c) => assert.equal(c.upstreamTokens.get('cache.example.org'), 't0ken'),
      },
      { config: { netrcFile: 'netrc' }, ok: false },
      // the rest
      { config: { extraEnvironment: { AWS_PROFILE: 'cache' } }, ok: true },
      ...[{ extraEnvironment: { AWS_MAX_ATTEMPTS: 3 } }, { environmentFile: 'env' }, { enable: 'yes' }].map(
        (config) => ({ config, ok: false }),
      ),
    ]
    const results = evalCases(cases.map((c) => c.config))
    withCredentials((dir) => {
      cases.forEach((c, i) => {
        const result = results[i]!
        assert.equal(
          result.ok,
          c.ok,
          `services.unnar = ${JSON.stringify(c.config)} ${c.ok ? 'must evaluate' : 'must not evaluate'}`,
        )
        if (!result.ok) return
        const env = Object.fromEntries(
          Object.entries(result.environment!).map(([k, v]) => [k, expandSpecifiers(v, dir)]),
        )
        let config: Config
        try {
          config = loadConfig(env)
        } catch (err) {
          assert.fail(
            `services.unnar = ${JSON.stringify(c.config)} evaluates, but unnar refuses its environment ${JSON.stringify(env)}: ${(err as Error).message}`,
          )
        }
        c.check?.(config)
      })
    })
    // The one kind left to unnar: sizes are text the type does not parse. unnar refuses a bad one at
    // start, naming it, with exit status 2, which the unit does not restart on.
    const [percent] = evalCases([{ maxNarSize: '20%' }])
    assert.equal(percent?.ok, true)
    const percentEnv = Object.fromEntries(
      Object.entries(percent!.environment!).map(([k, v]) => [k, expandSpecifiers(v, '/nonexistent')]),
    )
    assert.throws(() => loadConfig(percentEnv), /UNNAR_MAX_NAR_SIZE: "20%" is not a size/)
  })

  it("the unit's environment is accepted by loadConfig", () => {
    const key = readFileSync(path.join(ROOT, 'test/fixtures/nix-caches/test-key.pub'), 'utf8').trim()
    const result = evalModule({
      port: 9001,
      host: '127.0.0.1',
      upstreams: ['https://cache.example.org', 'file:///srv/nix-cache'],
      upstreamOrder: 'configured',
      lookup: 'parallel',
      trustedPublicKeys: [key],
      storeDirs: ['/nix/store'],
      verify: 'stream',
      cacheDir: '/var/cache/unnar',
      cacheSize: '20%',
      maxNarSize: '1G',
      memoryCacheSize: '64M',
      maxDownloads: 8,
      maxConnections: 1000,
      maxUrlLength: 8192,
      negativeTtl: 1.5,
      upstreamTimeout: 20,
      upstreamConnectTimeout: 5,
      upstreamIdleTimeout: 15,
      headerTimeout: 10,
      keepAliveTimeout: 5,
      shutdownTimeout: 12,
      logLevel: 'warn',
      metricsListen: '127.0.0.1:9383',
      domain: 'nix.example.org',
      netrcFile: '/run/secrets/unnar-netrc',
      upstreamTokensFile: '/run/secrets/unnar-tokens',
    })
    assert.deepEqual(result.warnings, [])
    assert.equal(result.environment.NETRC, '%d/netrc')
    assert.equal(result.environment.UNNAR_CACHE_SIZE, '20%%', '% must be doubled for systemd')
    // Every option set is in the environment, and the unit file carries exactly that environment.
    const settings = loadSettings()
    for (const [name, s] of Object.entries(settings).filter(
      ([n, s]) => s.option && !['socket', 'listen'].includes(n),
    )) {
      assert.ok(result.environment[s.env] !== undefined, `${name} (${s.env}) is not in the environment`)
    }
    assert.deepEqual(unitEnvironment(result.unit), result.environment)
    assert.deepEqual(unitValues(parseUnit(result.unit), 'Service', 'LoadCredential'), [
      'netrc:/run/secrets/unnar-netrc',
      'upstream-tokens:/run/secrets/unnar-tokens',
    ])

    withCredentials((credentialsDir) => {
      const config = loadConfig(processEnvironment(result.unit, credentialsDir))
      assert.equal(config.port, 9001)
      assert.deepEqual(config.upstreams, ['https://cache.example.org', 'file:///srv/nix-cache'])
      assert.equal(config.pinUpstreamOrder, true)
      assert.equal(config.trustedPublicKeys?.length, 1)
      assert.equal(config.verify, 'stream')
      assert.equal(config.cacheDir, '/var/cache/unnar')
      assert.deepEqual(config.cacheSize, { percent: 20 })
      assert.equal(config.maxNarSize, 1024 ** 3)
      assert.equal(config.memoryCacheBytes, 64 * 1024 ** 2)
      assert.equal(config.negativeTtlMs, 1500)
      assert.equal(config.upstreamTimeoutMs, 20_000)
      assert.equal(config.logLevel, 'warn')
      assert.equal(config.domain, 'nix.example.org')
      assert.equal(config.host, '127.0.0.1')
      assert.equal(config.socket, undefined)
      assert.deepEqual(config.metrics, { kind: 'separate', port: 9383, host: '127.0.0.1' })
      assert.equal(config.maxDownloads, 8)
      assert.equal(config.maxConnections, 1000)
      assert.equal(config.maxUrlLength, 8192)
      assert.equal(config.headerTimeoutMs, 10_000)
      assert.equal(config.keepAliveTimeoutMs, 5000)
      assert.equal(config.shutdownTimeoutMs, 12_000)
      assert.equal(config.upstreamConnectTimeoutMs, 5000)
      assert.equal(config.upstreamIdleTimeoutMs, 15_000)
      assert.equal(config.lookup, 'parallel')
      assert.deepEqual(config.storeDirs, ['/nix/store'])
      assert.equal(config.netrcFile, path.join(credentialsDir, 'netrc'))
      assert.equal(config.upstreamTokens.get('cache.example.org'), 't0ken')
    })

    const socket = evalModule({ socket: '/run/unnar/unnar.sock', metricsListen: 'off' })
    const socketConfig = loadConfig(processEnvironment(socket.unit, '/nonexistent'))
    assert.equal(socketConfig.socket, '/run/unnar/unnar.sock')
    assert.deepEqual(socketConfig.metrics, { kind: 'off' })

    // An empty key list is set (checking off), not left out (cache.nixos.org's key).
    const keysOff = evalModule({ trustedPublicKeys: [] })
    assert.equal(keysOff.environment.TRUSTED_PUBLIC_KEYS, '')
    assert.deepEqual(loadConfig(processEnvironment(keysOff.unit, '/nonexistent')).trustedPublicKeys, [])
    assert.equal(evalModule({}).environment.TRUSTED_PUBLIC_KEYS, undefined)

    // Quotes, backslashes and % survive NixOS' quoting and systemd's specifiers.
    const odd = 'a "quoted" \\ 50% value'
    const quoted = evalModule({ extraEnvironment: { AWS_PROFILE: odd } })
    assert.equal(processEnvironment(quoted.unit, '/nonexistent').AWS_PROFILE, odd)
  })

  it('the systemd unit follows the options', () => {
    const plain = evalModule({})
    assert.deepEqual(plain.services, ['unnar'])
    assert.deepEqual(Object.keys(plain.environment).sort(), [
      'NIX_CACHE_URL',
      'PORT',
      'UNNAR_CACHE_DIR',
      'UNNAR_SHUTDOWN_TIMEOUT',
    ])
    assert.deepEqual(plain.wantedBy, ['multi-user.target'])
    assert.deepEqual(plain.after, ['network.target'])
    const s = plain.serviceConfig
    assert.equal(s.Type, 'exec')
    assert.equal(
      s.ExecStart,
      '/nix/store/00000000000000000000000000000000-unnar-0.0.0/bin/unnar',
      'lib.getExe of the package',
    )
    assert.equal(s.DynamicUser, true)
    assert.deepEqual(s.CacheDirectory, ['unnar'])
    assert.equal(s.CacheDirectoryMode, '0700')
    assert.equal(s.CapabilityBoundingSet, '')
    assert.deepEqual(s.AmbientCapabilities, [])
    assert.equal(s.PrivateUsers, true)
    assert.equal(s.UMask, '0077')
    assert.equal(s.Restart, 'on-failure')
    assert.equal(s.RestartPreventExitStatus, 2)
    assert.equal(s.KillSignal, 'SIGTERM')
    assert.equal(s.KillMode, 'mixed')
    assert.equal(s.TimeoutStopSec, 45, 'TimeoutStopSec must exceed the shutdown timeout')
    assert.deepEqual(s.LoadCredential, [])
    assert.deepEqual(plain.firewallPorts, [])
    const hardening: Record<string, unknown> = {
      NoNewPrivileges: true,
      ProtectSystem: 'strict',
      ProtectHome: true,
      PrivateTmp: true,
      PrivateDevices: true,
      DevicePolicy: 'closed',
      ProtectHostname: true,
      ProtectClock: true,
      ProtectKernelTunables: true,
      ProtectKernelModules: true,
      ProtectKernelLogs: true,
      ProtectControlGroups: true,
      ProtectProc: 'invisible',
      RestrictAddressFamilies: ['AF_INET', 'AF_INET6', 'AF_UNIX'],
      RestrictNamespaces: true,
      RestrictRealtime: true,
      RestrictSUIDSGID: true,
      LockPersonality: true,
      RemoveIPC: true,
      MemoryDenyWriteExecute: false, // V8's JIT
      SystemCallArchitectures: 'native',
      SystemCallFilter: ['@system-service', '~@privileged'],
      SystemCallErrorNumber: 'EPERM',
    }
    for (const [key, value] of Object.entries(hardening)) assert.deepEqual(s[key], value, key)
    assert.equal(s.ProcSubset, undefined, 'node reads /proc/meminfo and /proc/cpuinfo')

    // The unit file, as NixOS renders it: a list is one line per item, [ ] none, "" an empty value (a reset).
    const unit = parseUnit(plain.unit)
    assert.deepEqual(unitValues(unit, 'Service', 'CapabilityBoundingSet'), [''])
    assert.deepEqual(unitValues(unit, 'Service', 'AmbientCapabilities'), [])
    assert.deepEqual(unitValues(unit, 'Service', 'SystemCallFilter'), ['@system-service', '~@privileged'])
    assert.deepEqual(unitValues(unit, 'Service', 'MemoryDenyWriteExecute'), ['false'])
    assert.deepEqual(unitValues(unit, 'Service', 'ExecStart'), [s.ExecStart])
    assert.deepEqual(unitValues(unit, 'Unit', 'After'), ['network.target'])
    assert.deepEqual(unitValues(unit, 'Install', 'WantedBy'), ['multi-user.target'])

    const low = evalModule({ port: 80, openFirewall: true, shutdownTimeout: 12.5 })
    assert.deepEqual(low.serviceConfig.CapabilityBoundingSet, ['CAP_NET_BIND_SERVICE'])
    assert.deepEqual(low.serviceConfig.AmbientCapabilities, ['CAP_NET_BIND_SERVICE'])
    assert.equal(
      low.serviceConfig.PrivateUsers,
      false,
      "a capability in a user namespace does not bind the host's ports",
    )
    assert.deepEqual(unitValues(parseUnit(low.unit), 'Service', 'AmbientCapabilities'), ['CAP_NET_BIND_SERVICE'])
    assert.equal(low.serviceConfig.TimeoutStopSec, 28)
    assert.deepEqual(low.firewallPorts, [80])
    assert.deepEqual(evalModule({ listen: '[::1]:443', openFirewall: true }).firewallPorts, [443])
    assert.deepEqual(evalModule({ listen: '[::]:0080', openFirewall: true }).firewallPorts, [80])
    assert.deepEqual(evalModule({ metricsListen: ':99' }).serviceConfig.AmbientCapabilities, ['CAP_NET_BIND_SERVICE'])
    assert.deepEqual(
      evalModule({ metricsListen: ':9383', openFirewall: true }).firewallPorts,
      [8383],
      'a separate metrics port is not opened',
    )

    const files = evalModule({
      netrcFile: '/run/secrets/netrc',
      upstreamTokensFile: '/run/secrets/tokens',
      environmentFile: '/run/secrets/env',
      cacheDir: '/srv/unnar',
    })
    assert.deepEqual(files.serviceConfig.LoadCredential, [
      'netrc:/run/secrets/netrc',
      'upstream-tokens:/run/secrets/tokens',
    ])
    assert.equal(files.environment.UNNAR_UPSTREAM_TOKENS_FILE, '%d/upstream-tokens')
    assert.deepEqual(files.serviceConfig.EnvironmentFile, ['/run/secrets/env'])
    assert.deepEqual(files.serviceConfig.CacheDirectory, [])
    assert.deepEqual(files.serviceConfig.ReadWritePaths, ['/srv/unnar'])

    const socket = evalModule({ socket: '/run/unnar/unnar.sock', port: 80, openFirewall: true })
    assert.equal(socket.serviceConfig.UMask, '0000')
    assert.deepEqual(socket.firewallPorts, [], 'with a socket there is no TCP port to open')
    assert.equal(socket.serviceConfig.CapabilityBoundingSet, '')
    assert.equal(socket.serviceConfig.RuntimeDirectory, 'unnar')
    assert.deepEqual(
      evalModule({ upstreams: ['https://user:pw@cache.example.org'] }).warnings.map((w) => w.split('\n')[0]),
      ['services.unnar.upstreams: a URL contains credentials, which end up world-readable in the Nix'],
    )
    assert.equal(evalModule({ extraEnvironment: { AWS_PROFILE: '50%' } }).environment.AWS_PROFILE, '50%%')

    // Disabled, the module defines nothing (and checks nothing).
    const off = nixEval<Service>(
      moduleArgs('service', null, '{ services.unnar = { openFirewall = true; socket = "/tmp/unnar.sock"; }; }'),
    )
    assert.deepEqual([off.services, off.firewallPorts, off.warnings], [[], [], []])
  })

  it('definitions from other modules merge as NixOS merges them', () => {
    // Lists and attribute sets add up; a higher priority replaces.
    const merged = evalModule(
      { upstreams: ['https://a.example'], extraEnvironment: { AWS_PROFILE: 'cache' } },
      '{ lib, ... }: { services.unnar.upstreams = lib.mkAfter [ "https://b.example" ]; services.unnar.extraEnvironment.AWS_REGION = "eu-west-1"; services.unnar.port = lib.mkForce 9000; }',
    )
    assert.equal(merged.environment.NIX_CACHE_URL, 'https://a.example https://b.example')
    assert.deepEqual(
      [merged.environment.AWS_PROFILE, merged.environment.AWS_REGION, merged.environment.PORT],
      ['cache', 'eu-west-1', '9000'],
    )
    // The unit's settings are ordinary definitions: another value conflicts, lib.mkForce replaces.
    assert.match(
      evalError({}, '{ systemd.services.unnar.serviceConfig.MemoryDenyWriteExecute = true; }'),
      /`systemd\.services\.unnar\.serviceConfig\.MemoryDenyWriteExecute' has conflicting definition values/,
    )
    assert.equal(
      evalModule(
        {},
        '{ lib, ... }: { systemd.services.unnar.serviceConfig.MemoryDenyWriteExecute = lib.mkForce true; }',
      ).serviceConfig.MemoryDenyWriteExecute,
      true,
    )
    // Repeatable settings add up like NixOS' unit options do.
    assert.deepEqual(
      evalModule({}, '{ systemd.services.unnar.serviceConfig.ReadWritePaths = [ "/srv/extra" ]; }').serviceConfig
        .ReadWritePaths,
      ['/srv/extra'],
    )
  })

  it('the options document themselves as the NixOS manual lists them', () => {
    const settings = loadSettings()
    type Doc = {
      name: string
      description: string
      type: string
      default: { _type: string; text: string } | null
      example: { _type: string; text: string } | null
    }
    const docs = nixEval<Doc[]>(moduleArgs('docs', null))
    const options = nixEval<Record<string, unknown>>(moduleArgs('options', null))
    assert.deepEqual(
      docs.map((d) => d.name).sort(),
      Object.keys(options)
        .map((n) => `services.unnar.${n}`)
        .sort(),
    )
    for (const doc of docs) {
      assert.ok(doc.description.trim() !== '', `${doc.name} has no description`)
      assert.ok(doc.default !== null, `${doc.name} has no default`)
      assert.doesNotMatch(
        doc.default.text,
        /\/nix\/store\//,
        `${doc.name}: its default shows a store path (give defaultText)`,
      )
      const setting = settings[doc.name.slice('services.unnar.'.length)]
      if (setting !== undefined)
        assert.match(doc.description, new RegExp(`Sets \`${setting.env}\` \\(unnar's \`${setting.flag}\`\\)`), doc.name)
    }
    assert.deepEqual(docs.find((d) => d.name === 'services.unnar.package')?.default, {
      _type: 'literalMD',
      text: 'unnar built from this repository (`nix/package.nix`)',
    })
    assert.equal(docs.find((d) => d.name === 'services.unnar.verify')?.type, 'null or one of "strict", "stream"')
  })

  it('nix/npm-lock.nix gives every registry package its tarball URL, for this platform only', () => {
    const lock = JSON.parse(readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8')) as {
      packages: Record<string, Record<string, unknown>>
    }
    type Entry = {
      resolved?: string
      version?: string
      integrity?: string
      os?: string[]
      cpu?: string[]
      libc?: string[]
    }
    const filled = nixEval<{ packages: Record<string, Entry> }>([
      '-E',
      'import ./nix/npm-lock.nix { os = "linux"; cpu = "x64"; libc = "glibc"; }',
    ]).packages
    const all = nixEval<{ packages: Record<string, Entry> }>(['-E', 'import ./nix/npm-lock.nix { }']).packages
    assert.deepEqual(Object.keys(filled).sort(), Object.keys(lock.packages).sort())
    const allows = (value: string, list: readonly string[] | undefined) =>
      list === undefined ||
      (!list.includes(`!${value}`) && (list.every((v) => v.startsWith('!')) || list.includes(value)))
    let fetched = 0
    for (const [key, entry] of Object.entries(filled)) {
      const original = lock.packages[key] as Entry
      if (key === '' || original.integrity === undefined) {
        assert.equal(entry.resolved, original.resolved, key)
        continue
      }
      const name = key.slice(key.lastIndexOf('node_modules/') + 'node_modules/'.length)
      const url =
        original.resolved ?? `https://registry.npmjs.org/${name}/-/${name.split('/').pop()}-${original.version}.tgz`
      assert.equal(all[key]?.resolved, url, key)
      const here = allows('linux', original.os) && allows('x64', original.cpu) && allows('glibc', original.libc)
      assert.equal(entry.resolved, here ? url : original.resolved, key)
      if (entry.resolved !== undefined) fetched++
    }
    assert.ok(
      filled['node_modules/@typescript/typescript-linux-x64']?.resolved,
      'the compiler binary for linux-x64 must be fetched',
    )
    assert.equal(filled['node_modules/@typescript/typescript-win32-x64']?.resolved, undefined)
    assert.ok(fetched > 100 && fetched < Object.keys(lock.packages).length, `fetched ${fetched}`)
  })
})
