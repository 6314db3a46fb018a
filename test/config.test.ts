/** Settings from the environment and flags, and the one-line errors for bad ones. */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { describe, it } from 'node:test'
import { applyFlags, ConfigError, describeConfig, FLAGS, loadConfig, parseBytes } from '../src/config.js'

describe('loadConfig', () => {
  it('uses the documented defaults', () => {
    const config = loadConfig({ HOME: '/home/u' })
    assert.equal(config.port, 8383)
    assert.equal(config.host, undefined)
    assert.deepEqual(config.upstreams, ['https://cache.nixos.org'])
    assert.equal(config.cacheDir, '/home/u/.cache/unnar')
    assert.deepEqual(config.cacheSize, { bytes: 10 * 1024 ** 3 })
    assert.equal(config.maxNarSize, undefined)
    assert.equal(config.negativeTtlMs, 60_000)
    assert.equal(config.logLevel, 'info')
  })

  it('takes XDG_CACHE_HOME, nar-serve names and several upstreams in priority order', () => {
    const config = loadConfig({
      XDG_CACHE_HOME: '/x',
      NAR_CACHE_URL: 'https://a.example, file:///b  https://c.example',
      HTTP_ADDR: '127.0.0.1:9000',
    })
    assert.equal(config.cacheDir, '/x/unnar')
    assert.deepEqual(config.upstreams, ['https://a.example', 'file:///b', 'https://c.example'])
    assert.equal(config.host, '127.0.0.1')
    assert.equal(config.port, 9000)
    assert.equal(loadConfig({ NIX_CACHE_URL: 'https://n', NAR_CACHE_URL: 'https://m' }).upstreams[0], 'https://n')
    assert.deepEqual(
      [loadConfig({ HTTP_ADDR: '[::1]:81' }).host, loadConfig({ HTTP_ADDR: ':82', PORT: '1' }).port],
      ['::1', 82],
    )
  })

  it('parses sizes and percentages', () => {
    assert.equal(parseBytes('X', '500M'), 500 * 1024 ** 2)
    assert.equal(parseBytes('X', '1.5G'), 1.5 * 1024 ** 3)
    assert.equal(parseBytes('X', '123'), 123)
    assert.equal(parseBytes('X', '2GiB'), 2 * 1024 ** 3)
    assert.deepEqual(loadConfig({ UNNAR_CACHE_SIZE: '20%' }).cacheSize, { percent: 20 })
  })

  const bad: Array<[Record<string, string>, RegExp]> = [
    [{ UNNAR_CACHE_SIZE: '10X' }, /^UNNAR_CACHE_SIZE: "10X" is not a size/],
    [{ UNNAR_CACHE_SIZE: '150%' }, /^UNNAR_CACHE_SIZE: "150%" must be a percentage/],
    [{ PORT: 'eighty' }, /^PORT: "eighty" is not a port number/],
    [{ NIX_CACHE_URL: 'ftp://x' }, /^NIX_CACHE_URL: unsupported scheme "ftp:"/],
    [{ NIX_CACHE_URL: 'not a url' }, /^NIX_CACHE_URL: "not" is not a URL/],
    [{ NIX_CACHE_URL: ' ' }, /^NIX_CACHE_URL is empty/],
    // An s3:// URL's own parameters are settings too: refused here (exit 2), not when the server starts.
    [{ NIX_CACHE_URL: 's3://my-cache?scheme=ftp' }, /^NIX_CACHE_URL: .*scheme/],
    [{ NIX_CACHE_URL: 's3://key:secret@my-cache' }, /^NIX_CACHE_URL: .*credentials in the URL are not supported/],
    [{ LOG_LEVEL: 'loud' }, /^LOG_LEVEL: "loud" is not one of/],
    [{ UNNAR_NEGATIVE_TTL: '-1' }, /^UNNAR_NEGATIVE_TTL: "-1" is not a number of seconds/],
    [{ TRUSTED_PUBLIC_KEYS: 'cache.nixos.org-1:short' }, /^TRUSTED_PUBLIC_KEYS: not a public key/],
    [{ DOMAIN: 'bad domain' }, /^DOMAIN: "bad domain" is not a domain name/],
    [{ UNNAR_MAX_DOWNLOADS: '0' }, /^UNNAR_MAX_DOWNLOADS: "0" is not a positive whole number/],
    [{ UNNAR_METRICS_ADDR: 'nowhere' }, /^UNNAR_METRICS_ADDR: "nowhere" is not "off", "main" or host:port/],
    [{ UNNAR_LOOKUP: 'random' }, /^UNNAR_LOOKUP: "random" is not "sequential" or "parallel"/],
    [{ UNNAR_STORE_DIRS: 'relative/store' }, /^UNNAR_STORE_DIRS: "relative\/store" is not an absolute store directory/],
    [{ UNNAR_UPSTREAM_TOKENS: 'justatoken' }, /^UNNAR_UPSTREAM_TOKENS: entry 1 is not host=token/],
    [
      { UNNAR_UPSTREAM_TOKENS_FILE: '/nonexistent/tokens' },
      /^UNNAR_UPSTREAM_TOKENS_FILE: cannot read "\/nonexistent\/tokens": ENOENT/,
    ],
    [{ UNNAR_HOST: 'bad host!' }, /^UNNAR_HOST: "bad host!" is not a host name/],
    [{ UNNAR_METRICS_ADDR: 'bad host!:9383' }, /^UNNAR_METRICS_ADDR: "bad host!" is not a host name/],
    // 0 would turn a limit off (or make it fire at once); Node's timers stop at 2^31 - 1 ms.
    [{ UNNAR_NEGATIVE_TTL: '0' }, /^UNNAR_NEGATIVE_TTL: "0" is out of range \(from 0\.001 to 2147483 seconds\)/],
    [{ UNNAR_HEADER_TIMEOUT: '0' }, /^UNNAR_HEADER_TIMEOUT: "0" is out of range/],
    [{ UNNAR_UPSTREAM_TIMEOUT: '0.0001' }, /^UNNAR_UPSTREAM_TIMEOUT: "0\.0001" is out of range/],
    [{ UNNAR_SHUTDOWN_TIMEOUT: '2147484' }, /^UNNAR_SHUTDOWN_TIMEOUT: "2147484" is out of range/],
  ]
  for (const [env, message] of bad) {
    it(`rejects ${JSON.stringify(env)} with one line naming the setting`, () => {
      assert.throws(
        () => loadConfig(env),
        (err: Error) => err instanceof ConfigError && message.test(err.message) && !err.message.includes('\n'),
      )
    })
  }
})

describe('operational settings', () => {
  it('has safe defaults for limits, timeouts and the metrics listener', () => {
    const c = loadConfig({})
    assert.deepEqual(
      [
        c.maxDownloads,
        c.maxConnections,
        c.headerTimeoutMs,
        c.keepAliveTimeoutMs,
        c.maxUrlLength,
        c.shutdownTimeoutMs,
        c.upstreamConnectTimeoutMs,
        c.upstreamIdleTimeoutMs,
      ],
      [8, 10000, 20_000, 5_000, 8192, 30_000, 10_000, 30_000],
    )
    assert.deepEqual(
      [c.metrics, c.lookup, c.storeDirs, c.socket, c.netrcFile, c.upstreamTokens.size],
      [{ kind: 'main' }, 'sequential', undefined, undefined, undefined, 0],
    )
  })

  it("reads Nix's default netrc ($NIX_CONF_DIR/netrc) when NETRC is unset, and none when NETRC is empty", () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'unnar-nix-conf-'))
    try {
      assert.equal(loadConfig({ NIX_CONF_DIR: dir }).netrcFile, undefined, 'no file, no netrc, no error')
      const file = path.join(dir, 'netrc')
      writeFileSync(file, 'machine cache.example login u password p\n')
      assert.equal(loadConfig({ NIX_CONF_DIR: dir }).netrcFile, file)
      assert.equal(loadConfig({ NIX_CONF_DIR: dir, NETRC: '' }).netrcFile, undefined)
      writeFileSync(file, 'machine cache.example login "u password p\n')
      assert.throws(
        () => loadConfig({ NIX_CONF_DIR: dir }),
        (err: Error) => err instanceof ConfigError && err.message.startsWith('NETRC: ') && err.message.includes(file),
      )
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('parses the metrics address, host override, store dirs and socket', () => {
    assert.deepEqual(loadConfig({ UNNAR_METRICS_ADDR: '127.0.0.1:9100' }).metrics, {
      kind: 'separate',
      port: 9100,
      host: '127.0.0.1',
    })
    assert.deepEqual(loadConfig({ UNNAR_METRICS_ADDR: '[::1]:9100' }).metrics, {
      kind: 'separate',
      port: 9100,
      host: '::1',
    })
    assert.deepEqual(loadConfig({ UNNAR_METRICS_ADDR: 'off' }).metrics, { kind: 'off' })
    assert.equal(loadConfig({ HTTP_ADDR: '127.0.0.1:90', UNNAR_HOST: '[::]' }).host, '::')
    assert.deepEqual(loadConfig({ UNNAR_STORE_DIRS: '/nix/store, /opt/store' }).storeDirs, ['/nix/store', '/opt/store'])
    assert.equal(loadConfig({ UNNAR_SOCKET: '/run/unnar.sock' }).socket, '/run/unnar.sock')
  })

  it('keeps a # inside a token, and reads only whole-line or trailing comments in the tokens file', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'unnar-tokens-'))
    try {
      writeFileSync(path.join(dir, 'tokens'), '# comment\nfile.example=a#b # trailing comment\n')
      const config = loadConfig({
        UNNAR_UPSTREAM_TOKENS: 'env.example=c#d',
        UNNAR_UPSTREAM_TOKENS_FILE: path.join(dir, 'tokens'),
      })
      assert.deepEqual(
        [...config.upstreamTokens],
        [
          ['file.example', 'a#b'],
          ['env.example', 'c#d'],
        ],
      )
    } finally {
      rmSync(dir, { recursive: true })
    }
  })

  it('keeps durations in whole milliseconds', () => {
    assert.equal(loadConfig({ UNNAR_HEADER_TIMEOUT: '1.0005' }).headerTimeoutMs, 1001)
  })

  it('reads bearer tokens from the setting and the file, and never shows them', async () => {
    const { mkdtemp, writeFile } = await import('node:fs/promises')
    const { tmpdir } = await import('node:os')
    const dir = await mkdtemp(`${tmpdir()}/unnar-tokens-`)
    await writeFile(`${dir}/tokens`, '# Attic\nattic.lan:8080=file-secret\n')
    const config = loadConfig({
      UNNAR_UPSTREAM_TOKENS: 'Cache.Example.org=env-secret',
      UNNAR_UPSTREAM_TOKENS_FILE: `${dir}/tokens`,
      NIX_CACHE_URL: 'https://u:pw-secret@cache.example.org',
    })
    assert.deepEqual(
      [...config.upstreamTokens],
      [
        ['attic.lan:8080', 'file-secret'],
        ['cache.example.org', 'env-secret'],
      ],
    )
    const shown = JSON.stringify(describeConfig(config))
    for (const secret of ['file-secret', 'env-secret', 'pw-secret'])
      assert.ok(!shown.includes(secret), `${secret} in ${shown}`)
    assert.match(shown, /cache\.example\.org=<redacted>/)
    assert.throws(() => loadConfig({ UNNAR_UPSTREAM_TOKENS: 'host=' }), /entry 1 is not host=token/)
    // A bad entry is named by its place: its text may be a token (base64 padding looks like `=`).
    for (const bad of ['ho!st=tok-secret', 'c2VjcmV0LXRva2VuK/zz==']) {
      assert.throws(
        () => loadConfig({ UNNAR_UPSTREAM_TOKENS: `a.example=ok ${bad}` }),
        (err: Error) => /entry 2 is not host=token/.test(err.message) && !err.message.includes(bad.slice(0, 8)),
      )
    }
    await writeFile(`${dir}/bad-tokens`, '# comment\na.example=ok\nc2VjcmV0LXRva2VuK/zz==\n')
    assert.throws(
      () => loadConfig({ UNNAR_UPSTREAM_TOKENS_FILE: `${dir}/bad-tokens` }),
      (err: Error) =>
        /^UNNAR_UPSTREAM_TOKENS_FILE: line 3 is not host=token/.test(err.message) && !err.message.includes('c2VjcmV0'),
    )
  })

  it('exposes every setting as a flag', () => {
    for (const name of [
      'UNNAR_HOST',
      'UNNAR_SOCKET',
      'UNNAR_METRICS_ADDR',
      'UNNAR_MAX_DOWNLOADS',
      'UNNAR_HEADER_TIMEOUT',
      'UNNAR_SHUTDOWN_TIMEOUT',
      'NETRC',
      'UNNAR_LOOKUP',
      'UNNAR_STORE_DIRS',
    ]) {
      assert.ok(Object.values(FLAGS).includes(name), name)
    }
  })
})

describe('applyFlags', () => {
  it('lets flags override the environment, in both --flag value and --flag=value forms', () => {
    const env = applyFlags({ PORT: '1', LOG_LEVEL: 'warn' }, [
      '--port',
      '2',
      '--log-level=debug',
      '--upstream',
      'file:///c',
    ])
    assert.deepEqual([env.PORT, env.LOG_LEVEL, env.NIX_CACHE_URL], ['2', 'debug', 'file:///c'])
  })

  it('lets a listen flag override all of the listen address from the environment', () => {
    assert.equal(loadConfig(applyFlags({ HTTP_ADDR: ':9000' }, ['--port', '8000'])).port, 8000)
    const listen = loadConfig(applyFlags({ UNNAR_HOST: '::1' }, ['--listen', '127.0.0.1:9000']))
    assert.deepEqual([listen.host, listen.port], ['127.0.0.1', 9000])
  })

  it('rejects unknown flags and flags without a value', () => {
    assert.throws(() => applyFlags({}, ['--bogus']), /unknown option "--bogus"/)
    assert.throws(() => applyFlags({}, ['--port']), /--port needs a value/)
  })
})
