/** Upstreams behind authentication: URL credentials, netrc, bearer tokens; never leaked, never sent elsewhere. */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { after, before, describe, it } from 'node:test'
import { ConfigError, loadConfig } from '../../src/config.js'
import { FAILURES_BEFORE_SKIP } from '../../src/upstream/path-info-lookup.js'
import { cacheDir, fixturePath } from '../helpers/fixtures.js'
import { startTestUpstream, type TestUpstream } from '../helpers/test-upstream.js'
import { sha256Hex, startUnnar, type TestUnnar } from '../helpers/unnar.js'
import { elapse } from '../helpers/wait.js'

const basic = fixturePath('basic')
const file = `${basic.hash}-${basic.name}/bin/hello`
const USER = 'alice'
const PASSWORD = 'pa55-w0rd-XYZ'
const TOKEN = 'tok-abcdef-123456'
const basicAuth = (user: string, password: string) => 'Basic ' + Buffer.from(`${user}:${password}`).toString('base64')

async function narUrlOf(hash: string): Promise<string> {
  const text = await readFile(path.join(cacheDir('xz'), `${hash}.narinfo`), 'utf8')
  return /^URL: (.*)$/m.exec(text)![1]!
}

/** No secret in the log lines, the error page, /api/upstreams or /metrics. */
async function assertNoSecret(unnar: TestUnnar, page: string, ...secrets: string[]): Promise<void> {
  const upstreams = await (await fetch(`${unnar.url}/api/upstreams`)).text()
  const metrics = await fetch(`${unnar.url}/metrics`)
  const metricsText = metrics.status === 200 ? await metrics.text() : ''
  const logs = JSON.stringify(unnar.logs)
  for (const secret of secrets) {
    for (const [where, text] of [
      ['page', page],
      ['logs', logs],
      ['/api/upstreams', upstreams],
      ['/metrics', metricsText],
    ] as const) {
      assert.ok(!text.includes(secret), `${where} shows a secret`)
    }
  }
}

describe('authenticated upstreams', { timeout: 60_000 }, () => {
  let tmp: string
  const cleanups: Array<() => Promise<void>> = []
  before(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'unnar-auth-'))
  })
  after(async () => {
    for (const c of cleanups.reverse()) await c()
    await rm(tmp, { recursive: true, force: true })
  })
  const upstream = async (auth?: string): Promise<TestUpstream> => {
    const u = await startTestUpstream({ root: cacheDir('xz'), ...(auth === undefined ? {} : { auth }) })
    cleanups.push(() => u.close())
    return u
  }
  const unnarFor = async (urls: string[], env: Record<string, string> = {}): Promise<TestUnnar> => {
    const unnar = await startUnnar(urls, env)
    cleanups.push(() => unnar.stop())
    return unnar
  }
  const netrc = async (text: string): Promise<string> => {
    const file = path.join(tmp, `netrc-${Math.random().toString(36).slice(2)}`)
    await writeFile(file, text, { mode: 0o600 })
    return file
  }
  const withCredentials = (url: string, user: string, password: string) =>
    url.replace('http://', `http://${user}:${encodeURIComponent(password)}@`)
  const serves = async (unnar: TestUnnar) => {
    const res = await fetch(unnar.store(file))
    assert.equal(res.status, 200, await res.clone().text())
    assert.equal(await sha256Hex(await res.arrayBuffer()), basic.entries['bin/hello']!.sha256)
  }

  it('sends Basic credentials from the URL, and shows the upstream without them', async () => {
    const u = await upstream(basicAuth(USER, PASSWORD))
    const unnar = await unnarFor([withCredentials(u.url, USER, PASSWORD)])
    await serves(unnar)
    assert.ok(u.requests.length >= 2 && u.requests.every((r) => r.authorization === basicAuth(USER, PASSWORD)))
    const health = (await (await fetch(`${unnar.url}/api/upstreams`)).json()) as Array<{ name: string }>
    assert.deepEqual(
      health.map((h) => h.name),
      [u.url],
    )
    await assertNoSecret(unnar, '', PASSWORD, basicAuth(USER, PASSWORD).slice(6))
  })

  it('uses the netrc entry for the host when the URL has no credentials', async () => {
    const u = await upstream(basicAuth(USER, PASSWORD))
    const file = await netrc(
      `# test\nmachine example.org login bob password nope\nmachine 127.0.0.1\n  login ${USER}\n  password ${PASSWORD}\n`,
    )
    const unnar = await unnarFor([u.url], { NETRC: file })
    await serves(unnar)
    assert.ok(u.requests.every((r) => r.authorization === basicAuth(USER, PASSWORD)))
    await assertNoSecret(unnar, '', PASSWORD)
  })

  it('answers 502 naming the upstream when it wants credentials unnar does not have', async () => {
    const u = await upstream(basicAuth(USER, PASSWORD))
    const unnar = await unnarFor([u.url])
    const res = await fetch(unnar.store(file))
    const text = await res.text()
    assert.equal(res.status, 502)
    assert.ok(text.includes(u.url), text)
    assert.match(text, /HTTP 401 for \S+\.narinfo \(no credentials for this host/)
  })

  it('answers 502 for refused credentials without showing them anywhere', async () => {
    const wrong = 'wr0ng-Secret-42'
    const u = await upstream(basicAuth(USER, PASSWORD))
    const tokenFile = path.join(tmp, 'tokens-wrong')
    await writeFile(tokenFile, `127.0.0.1=${wrong}-token\n`)
    const viaUrl = await unnarFor([withCredentials(u.url, USER, wrong)])
    const viaToken = await unnarFor([u.url], { UNNAR_UPSTREAM_TOKENS_FILE: tokenFile })
    for (const [unnar, source] of [
      [viaUrl, 'the URL'],
      [viaToken, 'UNNAR_UPSTREAM_TOKENS'],
    ] as const) {
      const res = await fetch(unnar.store(file), { headers: { accept: 'text/html' } })
      const page = await res.text()
      assert.equal(res.status, 502)
      assert.ok(page.includes(u.url), page)
      assert.ok(page.includes(`the credentials from ${source} were refused`), page)
      await assertNoSecret(unnar, page, wrong, basicAuth(USER, wrong).slice(6))
    }
  })

  it('sends a bearer token from UNNAR_UPSTREAM_TOKENS (host:port) and from the tokens file (host)', async () => {
    const u = await upstream(`Bearer ${TOKEN}`)
    const port = new URL(u.url).port
    const fromEnv = await unnarFor([u.url], { UNNAR_UPSTREAM_TOKENS: `example.org=other 127.0.0.1:${port}=${TOKEN}` })
    await serves(fromEnv)
    const tokenFile = path.join(tmp, 'tokens')
    await writeFile(tokenFile, `# tokens\n127.0.0.1=${TOKEN}\n`)
    const fromFile = await unnarFor([u.url], { UNNAR_UPSTREAM_TOKENS_FILE: tokenFile })
    await serves(fromFile)
    assert.ok(u.requests.every((r) => r.authorization === `Bearer ${TOKEN}`))
    await assertNoSecret(fromEnv, '', TOKEN)
    await assertNoSecret(fromFile, '', TOKEN)
  })

  it('takes a rotated tokens file or netrc without a restart', async () => {
    const u = await upstream(`Bearer ${TOKEN}`)
    const tokenFile = path.join(tmp, 'tokens-rotated')
    await writeFile(tokenFile, `127.0.0.1=expired-${TOKEN}\n`)
    const byToken = await unnarFor([u.url], { UNNAR_UPSTREAM_TOKENS_FILE: tokenFile })
    for (let i = 0; i < FAILURES_BEFORE_SKIP; i++)
      assert.equal((await fetch(byToken.store(file))).status, 502, 'the old token is refused')
    assert.match(
      await (await fetch(byToken.store(file))).text(),
      /skipped until/,
      'the breaker leaves the upstream out',
    )
    // Secrets are usually rotated by writing a new file and renaming it over the old one.
    await writeFile(`${tokenFile}.new`, `127.0.0.1=${TOKEN}\n`)
    await rename(`${tokenFile}.new`, tokenFile)
    await elapse(1100) // kept: files are looked at once a second at most (the subject)
    await serves(byToken) // new credentials: asked again at once, not after the breaker's minute
    assert.ok(
      byToken.logs.some((l) => l.msg === 'upstream credentials file changed: read again' && l.file === tokenFile),
    )
    await assertNoSecret(byToken, '', TOKEN)

    const b = await upstream(basicAuth(USER, PASSWORD))
    const netrcFile = await netrc(`machine 127.0.0.1 login ${USER} password old-password\n`)
    const byNetrc = await unnarFor([b.url], { NETRC: netrcFile })
    assert.equal((await fetch(byNetrc.store(file))).status, 502)
    await writeFile(netrcFile, `machine 127.0.0.1 login ${USER} password ${PASSWORD}\n`)
    await elapse(1100)
    await serves(byNetrc)
  })

  it('prefers URL credentials to a token, and a token to netrc', async () => {
    const file = await netrc(`machine 127.0.0.1 login ${USER} password netrc-pass\n`)
    const tokenWanted = await upstream(`Bearer ${TOKEN}`)
    const tokenPort = new URL(tokenWanted.url).port
    const unnar = await unnarFor([tokenWanted.url], {
      NETRC: file,
      UNNAR_UPSTREAM_TOKENS: `127.0.0.1:${tokenPort}=${TOKEN}`,
    })
    await serves(unnar)
    const urlWanted = await upstream(basicAuth(USER, PASSWORD))
    const urlPort = new URL(urlWanted.url).port
    const both = await unnarFor([withCredentials(urlWanted.url, USER, PASSWORD)], {
      NETRC: file,
      UNNAR_UPSTREAM_TOKENS: `127.0.0.1:${urlPort}=${TOKEN}`,
    })
    await serves(both)
  })

  for (const via of ['url', 'netrc', 'token'] as const) {
    it(`never sends the credentials (${via}) to another host it redirects to`, async () => {
      const auth = via === 'token' ? `Bearer ${TOKEN}` : basicAuth(USER, PASSWORD)
      const protectedUpstream = await upstream(auth)
      const mirror = await upstream()
      const narPath = `/${await narUrlOf(basic.hash)}`
      // A redirect to another port of the same host is another origin too.
      protectedUpstream.setFault(narPath, { kind: 'redirect', location: `${mirror.url}${narPath}` })
      const port = new URL(protectedUpstream.url).port
      const env: Record<string, string> =
        via === 'netrc'
          ? { NETRC: await netrc(`machine 127.0.0.1 login ${USER} password ${PASSWORD}`) }
          : via === 'token'
            ? { UNNAR_UPSTREAM_TOKENS: `127.0.0.1:${port}=${TOKEN}` }
            : {}
      const unnar = await unnarFor(
        [via === 'url' ? withCredentials(protectedUpstream.url, USER, PASSWORD) : protectedUpstream.url],
        env,
      )
      await serves(unnar)
      assert.equal(mirror.count(narPath), 1, 'the NAR came from the mirror')
      assert.deepEqual(
        mirror.requests.map((r) => r.authorization),
        [undefined],
      )
      assert.ok(protectedUpstream.requests.every((r) => r.authorization === auth))
    })
  }

  it('refuses an unreadable netrc file at start with one line naming NETRC, or the flag given (exit status 2)', async () => {
    const missing = path.join(tmp, 'no-such-netrc')
    assert.throws(
      () => loadConfig({ NETRC: missing }),
      (err: unknown) => err instanceof ConfigError && err.message === `NETRC: cannot read "${missing}": ENOENT`,
    )
    const badQuote = await netrc(`machine a login x password "${PASSWORD}`)
    assert.throws(
      () => loadConfig({ NETRC: badQuote }),
      (err: unknown) =>
        err instanceof ConfigError &&
        /^NETRC: ".*" line 1: a quoted token is not closed$/.test(err.message) &&
        !err.message.includes(PASSWORD),
    )
    const main = fileURLToPath(new URL('../../src/main.ts', import.meta.url))
    const run = spawnSync(process.execPath, ['--import', 'tsx', main, '--netrc-file', missing], {
      encoding: 'utf8',
      env: { ...process.env, PORT: '0' },
      timeout: 30_000,
    })
    assert.equal(run.status, 2, run.stderr)
    assert.equal(run.stderr, `unnar: --netrc-file: cannot read "${missing}": ENOENT\n`)
  })
})
