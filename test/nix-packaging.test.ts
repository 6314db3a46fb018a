/**
 * The Nix packaging (flake.nix, nix/): every .nix file parses, nix/settings.nix (the table the NixOS
 * module builds its options from) covers every flag of src/config.ts, the module's environment is
 * accepted by loadConfig, its systemd settings follow the options, and nix/npm-lock.nix gives every
 * dependency its registry URL.
 *
 * Only pure Nix is evaluated here: these machines cannot fetch nixpkgs, so nothing is built and the
 * module runs against test/nix/eval-module.nix's stand-in for nixpkgs' lib. Needs nix-instantiate
 * (Debian's nix-bin, installed by .ci/run).
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { FLAGS, loadConfig, SECRET_SETTINGS } from '../src/config.js'
import { LOG_LEVELS } from '../src/log.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const HAVE_NIX = spawnSync('nix-instantiate', ['--version'], { stdio: 'ignore' }).status === 0
const skip = HAVE_NIX ? false : 'nix-instantiate is not installed (Debian: apt-get install nix-bin); Nix packaging not checked'

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
}

function loadSettings(): Record<string, Setting> {
  return nixEval<Record<string, Setting>>([
    '-E',
    'builtins.mapAttrs (_: s: { inherit (s) flag env kind; option = s.option or true; viaOption = s.viaOption or null; values = s.values or null; }) (import ./nix/settings.nix).settings',
  ])
}

interface ModuleEval {
  readonly options: Record<string, { readonly type: string; readonly default: unknown }>
  readonly environment: Record<string, string>
  readonly serviceConfig: Record<string, unknown>
  readonly assertions: ReadonlyArray<{ readonly assertion: boolean; readonly message: string }>
  readonly warnings: readonly string[]
  readonly firewallPorts: readonly number[]
}

function evalModule(config: Record<string, unknown>): ModuleEval {
  return nixEval<ModuleEval>(['test/nix/eval-module.nix', '--argstr', 'configJson', JSON.stringify({ enable: true, ...config })])
}

function failedAssertions(result: ModuleEval): string[] {
  return result.assertions.filter((a) => !a.assertion).map((a) => a.message)
}

/** What systemd makes of an Environment= value: `%%` is `%`, `%d` the credentials directory. */
function expandSpecifiers(value: string, credentialsDir: string): string {
  return value.replace(/%(.)/g, (_, c: string) => {
    if (c === '%') return '%'
    if (c === 'd') return credentialsDir
    throw new Error(`unexpected systemd specifier %${c} in "${value}"`)
  })
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
    const files = nixFiles(ROOT).map((f) => path.relative(ROOT, f)).sort()
    for (const expected of ['flake.nix', 'nix/module.nix', 'nix/npm-lock.nix', 'nix/package.nix', 'nix/settings.nix', 'nix/vm-test.nix']) {
      assert.ok(files.includes(expected), `${expected} is missing (found ${files.join(', ')})`)
    }
    for (const file of files) {
      const result = nixInstantiate(['--parse', file])
      assert.equal(result.status, 0, `${file} does not parse:\n${result.stderr}`)
    }
  })

  it('flake.nix wires up the package, module and VM test from nix/', () => {
    const flake = readFileSync(path.join(ROOT, 'flake.nix'), 'utf8')
    for (const needle of ['./nix/package.nix', './nix/module.nix', './nix/vm-test.nix', 'overlays.default', 'nixosModules.default', 'devShells', 'checks']) {
      assert.ok(flake.includes(needle), `flake.nix does not mention ${needle}`)
    }
  })

  it("nix/package.nix's source holds the tsconfig files `npm run build` reads", () => {
    const build = (JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts['build']!
    const project = /-p (\S+)/.exec(build)?.[1]
    assert.ok(project !== undefined, `no -p in the build script: ${build}`)
    const extended = (JSON.parse(readFileSync(path.join(ROOT, project), 'utf8')) as { extends?: string }).extends
    const packageNix = readFileSync(path.join(ROOT, 'nix/package.nix'), 'utf8')
    for (const file of [project, ...(extended === undefined ? [] : [extended])]) {
      assert.ok(packageNix.includes(`../${path.normalize(file)}\n`), `nix/package.nix does not put ${file} in the build's source`)
    }
  })

  it('nix/settings.nix has every flag of src/config.ts, with the same variable', (t) => {
    const settings = loadSettings()
    const byEnv = new Map(Object.entries(settings).map(([name, s]) => [s.env, { name, ...s }]))
    for (const [flag, env] of Object.entries(FLAGS)) {
      const setting = byEnv.get(env)
      assert.ok(setting !== undefined, `${flag} (${env}) is not in nix/settings.nix: add it, and the NixOS module gets an option for it`)
      assert.equal(setting.flag, flag, `nix/settings.nix: ${setting.name} names ${setting.flag} for ${env}, src/config.ts ${flag}`)
    }
    const pending = Object.values(settings).filter((s) => FLAGS[s.flag] === undefined)
    if (pending.length > 0) t.diagnostic(`in nix/settings.nix, not (yet) in FLAGS: ${pending.map((s) => `${s.flag} ${s.env}`).join(', ')}`)
    assert.equal(new Set(Object.values(settings).map((s) => s.env)).size, Object.keys(settings).length, 'two settings share a variable')
    assert.deepEqual(settings.logLevel?.values, LOG_LEVELS, 'logLevel values differ from src/log.ts LOG_LEVELS')
  })

  it('the module has an option for every setting, and takes secrets only as files', () => {
    const settings = loadSettings()
    const { options } = evalModule({})
    for (const [name, setting] of Object.entries(settings)) {
      if (setting.option) {
        assert.ok(options[name] !== undefined, `services.unnar.${name} (${setting.env}) is missing`)
      } else {
        assert.equal(options[name], undefined, `${name} carries a secret and must not be an option`)
        assert.ok(setting.viaOption !== null && settings[setting.viaOption]?.kind === 'credential', `${name}: viaOption must name a file option`)
      }
    }
    const secrets = Object.values(settings).filter((s) => s.kind === 'secret').map((s) => s.env)
    assert.deepEqual(secrets.sort(), [...SECRET_SETTINGS].sort(), 'the secret settings differ from src/config.ts SECRET_SETTINGS')
    assert.equal(settings.upstreamTokens?.option, false, '--upstream-tokens is only exposed as a file (upstreamTokensFile)')
    for (const name of ['enable', 'package', 'openFirewall', 'extraEnvironment', 'environmentFile']) assert.ok(options[name] !== undefined, `services.unnar.${name} is missing`)
    for (const name of ['netrcFile', 'upstreamTokensFile']) assert.equal(settings[name]?.kind, 'credential')

    const unknown = nixInstantiate(['--eval', '--strict', '--json', 'test/nix/eval-module.nix', '--argstr', 'configJson', JSON.stringify({ enable: true, upstreamTokens: 'secret' })])
    assert.notEqual(unknown.status, 0)
    assert.match(unknown.stderr, /unknown options: \["upstreamTokens"\]/)
    const inExtra = evalModule({ extraEnvironment: { UNNAR_UPSTREAM_TOKENS: 'secret' } })
    assert.match(failedAssertions(inExtra).join('\n'), /extraEnvironment must not carry secrets/)
  })

  it("the module's environment is accepted by loadConfig", () => {
    const credentialsDir = mkdtempSync(path.join(os.tmpdir(), 'unnar-credentials-'))
    try {
      writeFileSync(path.join(credentialsDir, 'netrc'), 'machine cache.example.org login unnar password secret\n')
      writeFileSync(path.join(credentialsDir, 'upstream-tokens'), '# tokens\ncache.example.org=t0ken\n')
      const key = readFileSync(path.join(ROOT, 'test/fixtures/nix-caches/test-key.pub'), 'utf8').trim()
      const result = evalModule({
        port: 9001,
        host: '127.0.0.1',
        upstreams: ['https://cache.example.org', 'file:///srv/nix-cache'],
        upstreamOrder: 'configured',
        lookup: 'parallel',
        trustedPublicKeys: [key],
        storeDirs: ['/nix/store'],
        cacheDir: '/var/cache/unnar',
        cacheSize: '20%',
        maxNarSize: '1G',
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
      assert.deepEqual(failedAssertions(result), [])
      assert.deepEqual(result.warnings, [])
      assert.equal(result.environment.NETRC, '%d/netrc')
      assert.equal(result.environment.UNNAR_CACHE_SIZE, '20%%', '% must be doubled for systemd')

      const env = Object.fromEntries(Object.entries(result.environment).map(([k, v]) => [k, expandSpecifiers(v, credentialsDir)]))
      const config = loadConfig(env)
      assert.equal(config.port, 9001)
      assert.deepEqual(config.upstreams, ['https://cache.example.org', 'file:///srv/nix-cache'])
      assert.equal(config.pinUpstreamOrder, true)
      assert.equal(config.trustedPublicKeys?.length, 1)
      assert.equal(config.cacheDir, '/var/cache/unnar')
      assert.deepEqual(config.cacheSize, { percent: 20 })
      assert.equal(config.maxNarSize, 1024 ** 3)
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

      const socket = evalModule({ socket: '/run/unnar/unnar.sock', metricsListen: 'off' })
      const socketConfig = loadConfig(socket.environment)
      assert.equal(socketConfig.socket, '/run/unnar/unnar.sock')
      assert.deepEqual(socketConfig.metrics, { kind: 'off' })

      // An empty key list is set (checking off), not left out (cache.nixos.org's key).
      const keysOff = evalModule({ trustedPublicKeys: [] })
      assert.equal(keysOff.environment.TRUSTED_PUBLIC_KEYS, '')
      assert.deepEqual(loadConfig(keysOff.environment).trustedPublicKeys, [])
      assert.equal(evalModule({}).environment.TRUSTED_PUBLIC_KEYS, undefined)
    } finally {
      rmSync(credentialsDir, { recursive: true, force: true })
    }
  })

  it('the systemd unit follows the options', () => {
    const plain = evalModule({})
    assert.deepEqual(Object.keys(plain.environment).sort(), ['NIX_CACHE_URL', 'PORT', 'UNNAR_CACHE_DIR', 'UNNAR_SHUTDOWN_TIMEOUT'])
    const s = plain.serviceConfig
    assert.equal(s.DynamicUser, true)
    assert.deepEqual(s.CacheDirectory, ['unnar'])
    assert.equal(s.CapabilityBoundingSet, '')
    assert.deepEqual(s.AmbientCapabilities, [])
    assert.equal(s.MemoryDenyWriteExecute, false)
    assert.equal(s.ProtectSystem, 'strict')
    assert.equal(s.Restart, 'on-failure')
    assert.equal(s.KillSignal, 'SIGTERM')
    assert.ok((s.TimeoutStopSec as number) > 30, 'TimeoutStopSec must exceed the shutdown timeout')
    assert.deepEqual(s.RestrictAddressFamilies, ['AF_INET', 'AF_INET6', 'AF_UNIX'])
    assert.deepEqual(s.LoadCredential, [])
    assert.deepEqual(plain.firewallPorts, [])

    const low = evalModule({ port: 80, openFirewall: true, shutdownTimeout: 12.5 })
    assert.deepEqual(low.serviceConfig.CapabilityBoundingSet, ['CAP_NET_BIND_SERVICE'])
    assert.deepEqual(low.serviceConfig.AmbientCapabilities, ['CAP_NET_BIND_SERVICE'])
    assert.equal(low.serviceConfig.TimeoutStopSec, 28)
    assert.deepEqual(low.firewallPorts, [80])
    assert.deepEqual(evalModule({ listen: '[::1]:443', openFirewall: true }).firewallPorts, [443])
    assert.deepEqual(evalModule({ metricsListen: ':99' }).serviceConfig.AmbientCapabilities, ['CAP_NET_BIND_SERVICE'])

    const files = evalModule({ netrcFile: '/run/secrets/netrc', upstreamTokensFile: '/run/secrets/tokens', environmentFile: '/run/secrets/env', cacheDir: '/srv/unnar' })
    assert.deepEqual(files.serviceConfig.LoadCredential, ['netrc:/run/secrets/netrc', 'upstream-tokens:/run/secrets/tokens'])
    assert.equal(files.environment.UNNAR_UPSTREAM_TOKENS_FILE, '%d/upstream-tokens')
    assert.deepEqual(files.serviceConfig.EnvironmentFile, ['/run/secrets/env'])
    assert.deepEqual(files.serviceConfig.CacheDirectory, [])
    assert.deepEqual(files.serviceConfig.ReadWritePaths, ['/srv/unnar'])

    const socket = evalModule({ socket: '/run/unnar/unnar.sock', port: 80, openFirewall: true })
    assert.equal(socket.serviceConfig.UMask, '0000')
    assert.deepEqual(socket.firewallPorts, [], 'with a socket there is no TCP port to open')
    assert.equal(socket.serviceConfig.CapabilityBoundingSet, '')
    assert.match(failedAssertions(evalModule({ socket: '/tmp/unnar.sock' })).join('\n'), /socket must be in \/run\/unnar\//)
    assert.match(failedAssertions(evalModule({ host: '::1', listen: ':80' })).join('\n'), /either `host`/)
    assert.equal(evalModule({ upstreams: ['https://user:pw@cache.example.org'] }).warnings.length, 1)
    assert.equal(evalModule({ extraEnvironment: { AWS_PROFILE: '50%' } }).environment.AWS_PROFILE, '50%%')
  })

  it('nix/npm-lock.nix gives every registry package its tarball URL, for this platform only', () => {
    const lock = JSON.parse(readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, Record<string, unknown>> }
    type Entry = { resolved?: string; version?: string; integrity?: string; os?: string[]; cpu?: string[]; libc?: string[] }
    const filled = nixEval<{ packages: Record<string, Entry> }>(['-E', 'import ./nix/npm-lock.nix { os = "linux"; cpu = "x64"; libc = "glibc"; }']).packages
    const all = nixEval<{ packages: Record<string, Entry> }>(['-E', 'import ./nix/npm-lock.nix { }']).packages
    assert.deepEqual(Object.keys(filled).sort(), Object.keys(lock.packages).sort())
    const allows = (value: string, list: readonly string[] | undefined) =>
      list === undefined || (!list.includes(`!${value}`) && (list.every((v) => v.startsWith('!')) || list.includes(value)))
    let fetched = 0
    for (const [key, entry] of Object.entries(filled)) {
      const original = lock.packages[key] as Entry
      if (key === '' || original.integrity === undefined) {
        assert.equal(entry.resolved, original.resolved, key)
        continue
      }
      const name = key.slice(key.lastIndexOf('node_modules/') + 'node_modules/'.length)
      const url = original.resolved ?? `https://registry.npmjs.org/${name}/-/${name.split('/').pop()}-${original.version}.tgz`
      assert.equal(all[key]?.resolved, url, key)
      const here = allows('linux', original.os) && allows('x64', original.cpu) && allows('glibc', original.libc)
      assert.equal(entry.resolved, here ? url : original.resolved, key)
      if (entry.resolved !== undefined) fetched++
    }
    assert.ok(filled['node_modules/@typescript/typescript-linux-x64']?.resolved, 'the compiler binary for linux-x64 must be fetched')
    assert.equal(filled['node_modules/@typescript/typescript-win32-x64']?.resolved, undefined)
    assert.ok(fetched > 100 && fetched < Object.keys(lock.packages).length, `fetched ${fetched}`)
  })
})
