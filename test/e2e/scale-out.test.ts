/**
 * examples/nginx-scale-out.conf, run for real: nginx (consistent hash on the store path's hash) in
 * front of two unnar processes sharing one upstream cache.
 */
import assert from 'node:assert/strict'
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { after, before, describe, it } from 'node:test'
import { cacheDir, fixturePath, loadFixturePaths, type FixturePath } from '../helpers/fixtures.js'
import { startTestUpstream, type TestUpstream } from '../helpers/test-upstream.js'
import { encodeRel, sha256Hex } from '../helpers/unnar.js'
import { spawnUnnar, type UnnarProcess } from '../helpers/unnar-process.js'
import { eventually, WAIT_MS } from '../helpers/wait.js'

const EXAMPLE = fileURLToPath(new URL('../../examples/nginx-scale-out.conf', import.meta.url))
const NGINX = ['/usr/sbin/nginx', '/usr/local/sbin/nginx', '/usr/bin/nginx'].find((p) => existsSync(p)) ?? whichNginx()
const NIX32 = '0123456789abcdfghijklmnpqrsvwxyz'

function whichNginx(): string | undefined {
  try {
    return execFileSync('sh', ['-c', 'command -v nginx'], { encoding: 'utf8' }).trim() || undefined
  } catch {
    return undefined
  }
}

interface Nginx {
  readonly url: string
  readonly prefix: string
  stop(): Promise<void>
}

/** A port nobody listens on right now (the kernel's pick; closed again before use). */
async function freePort(): Promise<number> {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as net.AddressInfo
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

/**
 * The example with its instance ports, listen port and cache path replaced; throws if the example
 * no longer has what is replaced (so the example cannot drift away from what is tested).
 * `withCache` uncomments the optional `#cache` lines.
 */
async function configFromExample(
  ports: { listen: number; instances: readonly number[] },
  prefix: string,
  withCache: boolean,
): Promise<string> {
  let text = await readFile(EXAMPLE, 'utf8')
  const replace = (pattern: RegExp, by: string) => {
    assert.match(text, pattern, `examples/nginx-scale-out.conf no longer contains ${pattern}`)
    text = text.replace(pattern, by)
  }
  replace(/^(\s*)listen 80;$/m, `$1listen 127.0.0.1:${ports.listen};`)
  replace(/^(\s*)server 127\.0\.0\.1:8381 /m, `$1server 127.0.0.1:${ports.instances[0]} `)
  replace(/^(\s*)server 127\.0\.0\.1:8382 /m, `$1server 127.0.0.1:${ports.instances[1]} `)
  replace(/\/var\/cache\/nginx\/unnar\b/, path.join(prefix, 'proxy-cache'))
  if (withCache) {
    // As the example says: uncomment the "#cache" lines and delete "proxy_buffering off;".
    replace(/^(\s*)#cache /gm, '$1')
    replace(/^\s*proxy_buffering off;\n/m, '')
  }
  return text
}

/** nginx as the current user, everything (pid, logs, temp files) under a fresh prefix directory. */
async function startNginx(site: (prefix: string) => Promise<string>, listen: number): Promise<Nginx> {
  const prefix = await mkdtemp(path.join(os.tmpdir(), 'unnar-nginx-'))
  await mkdir(path.join(prefix, 'temp'))
  const conf = path.join(prefix, 'nginx.conf')
  const root = process.getuid?.() === 0
  await writeFile(
    conf,
    `# written by test/e2e/scale-out.test.ts around examples/nginx-scale-out.conf
daemon off;
${root ? 'user root root;  # the workers must reach the prefix directory (mode 0700)' : ''}
worker_processes 1;
pid ${prefix}/nginx.pid;
error_log ${prefix}/error.log info;
events { worker_connections 1024; }
http {
  log_format upstreams '$request_uri $status $upstream_addr $upstream_status';
  access_log ${prefix}/access.log upstreams;
  client_body_temp_path ${prefix}/temp/body;
  proxy_temp_path ${prefix}/temp/proxy;
  fastcgi_temp_path ${prefix}/temp/fastcgi;
  uwsgi_temp_path ${prefix}/temp/uwsgi;
  scgi_temp_path ${prefix}/temp/scgi;

${await site(prefix)}
}
`,
  )
  let output = ''
  const proc: ChildProcess = spawn(NGINX!, ['-p', prefix, '-e', path.join(prefix, 'error.log'), '-c', conf], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  proc.stdout!.on('data', (d: Buffer) => (output += d.toString()))
  proc.stderr!.on('data', (d: Buffer) => (output += d.toString()))
  let exited = false
  const exit = new Promise<void>((resolve) => proc.once('exit', () => resolve()))
  void exit.then(() => (exited = true))
  const errorLog = async () => `${output}${await readFile(path.join(prefix, 'error.log'), 'utf8').catch(() => '')}`
  const deadline = Date.now() + WAIT_MS
  for (;;) {
    if (exited) assert.fail(`nginx exited at start:\n${await errorLog()}`)
    const up = await new Promise<boolean>((resolve) => {
      const socket = net.connect(listen, '127.0.0.1', () => {
        socket.destroy()
        resolve(true)
      })
      socket.on('error', () => resolve(false))
    })
    if (up) break
    if (Date.now() > deadline) {
      proc.kill('SIGKILL')
      assert.fail(`nginx did not listen within ${WAIT_MS} ms:\n${await errorLog()}`)
    }
    await sleep(25)
  }
  return {
    url: `http://127.0.0.1:${listen}`,
    prefix,
    stop: async () => {
      if (!exited) proc.kill('SIGQUIT')
      const killer = setTimeout(() => proc.kill('SIGKILL'), 5_000)
      await exit
      clearTimeout(killer)
      // UNNAR_TEST_KEEP_NGINX=1 keeps nginx.conf and its logs for a look after a failure.
      if (process.env.UNNAR_TEST_KEEP_NGINX === undefined) await rm(prefix, { recursive: true, force: true })
    },
  }
}

async function narKeyOf(hash: string): Promise<string> {
  const text = await readFile(path.join(cacheDir('xz'), `${hash}.narinfo`), 'utf8')
  return '/' + /^URL: (.*)$/m.exec(text)![1]!
}

async function cachedNars(dir: string): Promise<string[]> {
  return (await readdir(path.join(dir, 'nar')).catch(() => [] as string[])).filter((n) => n.endsWith('.nar'))
}

function regularFiles(p: FixturePath): Array<[string, string]> {
  return Object.entries(p.entries).flatMap(([rel, e]) =>
    e.type === 'regular' ? [[rel, e.sha256!] as [string, string]] : [],
  )
}

async function fetchSha(url: string): Promise<string> {
  const res = await fetch(url)
  assert.equal(res.status, 200, url)
  return sha256Hex(await res.arrayBuffer())
}

/** Which instances logged a request for a URL under /nix/store/<hash>. */
function servedBy(instances: readonly UnnarProcess[], hash: string): number[] {
  return instances.flatMap((u, i) =>
    u.logs.some((l) => l.msg === 'request' && String(l.path).startsWith(`/nix/store/${hash}`)) ? [i] : [],
  )
}

/** A valid nix32 store hash that no cache has, distinct per `i`. */
function absentHash(i: number): string {
  let n = i
  let tail = ''
  for (let k = 0; k < 6; k++) {
    tail = NIX32[n % 32]! + tail
    n = Math.floor(n / 32)
  }
  return 'zzzzzzzzzzzzzzzzzzzzzzzzzz' + tail
}

describe('scale-out behind nginx (examples/nginx-scale-out.conf)', {
  timeout: 90_000,
  skip: NGINX === undefined ? 'nginx is not installed (Debian: apt-get install nginx); .ci/run installs it' : false,
}, () => {
  const basic = fixturePath('basic')
  const basicBase = `${basic.hash}-${basic.name}`
  let upstream: TestUpstream
  const instances: UnnarProcess[] = []
  const dirs: string[] = []
  let nginx: Nginx
  let ports: { listen: number; instances: number[] }

  before(async () => {
    upstream = await startTestUpstream({ root: cacheDir('xz') })
    for (let i = 0; i < 2; i++) {
      const dir = await mkdtemp(path.join(os.tmpdir(), `unnar-scale-${i}-`))
      dirs.push(dir)
      instances.push(await spawnUnnar({ upstreams: [upstream.url], cacheDir: dir }))
    }
    ports = { listen: await freePort(), instances: instances.map((u) => Number(new URL(u.url).port)) }
    nginx = await startNginx((prefix) => configFromExample(ports, prefix, false), ports.listen)
  })
  after(async () => {
    await nginx?.stop()
    for (const u of instances) await u.stop('SIGKILL')
    await upstream?.close()
    for (const dir of dirs) await rm(dir, { recursive: true, force: true })
  })

  it('downloads a store path once, however many requests for its files arrive through nginx', async () => {
    const files = regularFiles(basic)
    for (const [rel, sha] of files)
      assert.equal(await fetchSha(`${nginx.url}/nix/store/${basicBase}/${encodeRel(rel)}`), sha, rel)
    for (let round = 0; round < 3; round++) {
      const shas = await Promise.all(
        files.flatMap(([rel]) =>
          [1, 2, 3].map(() => fetchSha(`${nginx.url}/nix/store/${basicBase}/${encodeRel(rel)}`)),
        ),
      )
      assert.deepEqual(
        shas,
        files.flatMap(([, sha]) => [sha, sha, sha]),
      )
    }
    assert.equal(upstream.count(await narKeyOf(basic.hash)), 1, 'one upstream NAR GET in total')
    const owners = servedBy(instances, basic.hash)
    assert.equal(owners.length, 1, `every request for one store path reaches one instance (got ${owners.join(', ')})`)
    await eventually(async () => (await cachedNars(dirs[owners[0]!]!)).length === 1, 'the owner keeps the NAR')
    assert.deepEqual(await cachedNars(dirs[1 - owners[0]!]!), [], 'the other instance has no copy')
  })

  it('spreads different store paths over both instances, each always on the same one', async () => {
    const real = loadFixturePaths()
    // Instance ports are random, so the ring is too: enough keys that both instances surely get some.
    const absent = Array.from({ length: 40 }, (_, i) => absentHash(i))
    for (let round = 0; round < 2; round++) {
      for (const p of real) {
        const [rel, sha] = regularFiles(p)[0]!
        assert.equal(await fetchSha(`${nginx.url}/nix/store/${p.hash}-${p.name}/${encodeRel(rel)}`), sha)
      }
      await Promise.all(
        absent.map(async (hash) => {
          const res = await fetch(`${nginx.url}/nix/store/${hash}-absent/file`)
          assert.equal(res.status, 404)
          await res.arrayBuffer()
        }),
      )
    }
    const load = [0, 0]
    for (const hash of [...real.map((p) => p.hash), ...absent]) {
      const owners = servedBy(instances, hash)
      assert.equal(owners.length, 1, `${hash} went to instances ${owners.join(', ')}`)
      load[owners[0]!]! += 1
    }
    assert.ok(load[0]! > 0 && load[1]! > 0, `store paths per instance: ${load.join(' / ')}`)
    for (const p of real) assert.equal(upstream.count(await narKeyOf(p.hash)), 1, `${p.kind}: one NAR download`)
    // Every NAR is on the disk of exactly one instance.
    await eventually(
      async () => (await cachedNars(dirs[0]!)).length + (await cachedNars(dirs[1]!)).length === real.length,
      'each NAR is cached by its owner only',
    )
  })

  it('serves the store paths of a stopped instance from the other one, which downloads each NAR once', async () => {
    const owner = servedBy(instances, basic.hash)[0]!
    const survivor = instances[1 - owner]!
    const narKey = await narKeyOf(basic.hash)
    const before = upstream.count(narKey)
    await instances[owner]!.stop('SIGKILL')

    const files = regularFiles(basic)
    const shas = await Promise.all(
      files.flatMap(([rel]) => [1, 2].map(() => fetchSha(`${nginx.url}/nix/store/${basicBase}/${encodeRel(rel)}`))),
    )
    assert.deepEqual(
      shas,
      files.flatMap(([, sha]) => [sha, sha]),
    )
    for (const [rel, sha] of files)
      assert.equal(await fetchSha(`${nginx.url}/nix/store/${basicBase}/${encodeRel(rel)}`), sha, rel)
    assert.equal(upstream.count(narKey), before + 1, 'the survivor downloads the NAR once')
    assert.ok(servedBy([survivor], basic.hash).length === 1, 'the survivor served them')
    const access = await readFile(path.join(nginx.prefix, 'access.log'), 'utf8')
    assert.match(
      access,
      new RegExp(
        `/nix/store/${basic.hash}\\S* 200 127\\.0\\.0\\.1:${ports.instances[owner]}, 127\\.0\\.0\\.1:${ports.instances[1 - owner]} 502, 200`,
      ),
      'nginx tried the stopped instance, then the other',
    )
  })
})

describe('the optional proxy_cache block of examples/nginx-scale-out.conf', {
  timeout: 60_000,
  skip: NGINX === undefined ? 'nginx is not installed' : false,
}, () => {
  it('lets nginx answer repeated requests without reaching unnar', async () => {
    const basic = fixturePath('basic')
    const upstream = await startTestUpstream({ root: cacheDir('xz') })
    const dirs = [
      await mkdtemp(path.join(os.tmpdir(), 'unnar-scale-c0-')),
      await mkdtemp(path.join(os.tmpdir(), 'unnar-scale-c1-')),
    ]
    const instances: UnnarProcess[] = []
    let nginx: Nginx | undefined
    try {
      for (const dir of dirs) instances.push(await spawnUnnar({ upstreams: [upstream.url], cacheDir: dir }))
      const ports = { listen: await freePort(), instances: instances.map((u) => Number(new URL(u.url).port)) }
      const front: Nginx = await startNginx((prefix) => configFromExample(ports, prefix, true), ports.listen)
      nginx = front
      for (const rel of ['lib/blob.bin', 'bin/hello']) {
        const url = `${front.url}/nix/store/${basic.hash}-${basic.name}/${rel}`
        const statuses: string[] = []
        for (let i = 0; i < 3; i++) {
          const res = await fetch(url)
          assert.equal(res.status, 200)
          assert.equal(await sha256Hex(await res.arrayBuffer()), basic.entries[rel]!.sha256, rel)
          statuses.push(res.headers.get('x-cache-status') ?? '')
        }
        assert.deepEqual(statuses, ['MISS', 'HIT', 'HIT'], rel)
        const reached = instances.reduce(
          (n, u) => n + u.logs.filter((l) => l.msg === 'request' && String(l.path).endsWith(`/${rel}`)).length,
          0,
        )
        assert.equal(reached, 1, `${rel}: only the first request reached unnar`)
      }
      // Errors say no-store: never cached.
      for (let i = 0; i < 2; i++) {
        const res = await fetch(`${front.url}/nix/store/${absentHash(1000)}-absent/x`)
        assert.equal(res.status, 404)
        assert.notEqual(res.headers.get('x-cache-status'), 'HIT')
        await res.arrayBuffer()
      }
    } finally {
      await nginx?.stop()
      for (const u of instances) await u.stop('SIGKILL')
      await upstream.close()
      for (const dir of dirs) await rm(dir, { recursive: true, force: true })
    }
  })
})
