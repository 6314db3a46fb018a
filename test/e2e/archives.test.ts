/**
 * `?archive=` and `?nar` downloads (issue 23) of Nix-made store paths (odd names: spaces, #, ?, %,
 * a newline, a tab, quotes, UTF-8; symlinks, executables, empty files and directories), unpacked
 * with Debian's tar and unzip and restored with `nix-store --restore`, then compared with the store
 * path as Nix itself restores it: the same files with the same bytes and executable bits, the same
 * symlinks with the same targets, the same directories. The same request gives the same bytes.
 */
import assert from 'node:assert/strict'
import { execFile, execFileSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { lstat, mkdir, mkdtemp, readdir, readFile, readlink, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { promisify } from 'node:util'
import { formatHashNix32 } from '../../src/formats/hash.js'
import { encodeNix32 } from '../../src/formats/nixbase32.js'
import { buildNar, directory, regular } from '../formats/nar-builder.js'
import { cacheDir, fixturePath } from '../helpers/fixtures.js'
import { assertSameEntries, type FixtureServer, missingCommands, serveFixtures } from '../helpers/nix-tools.js'
import { startTestUpstream } from '../helpers/test-upstream.js'
import { startUnnar } from '../helpers/unnar.js'

const run = promisify(execFile)
const MIRROR_CACHE = path.resolve('test/fixtures/mirror-cache')
const MIRROR_TREE = 'rxmzg881g7n6jhp7w3zs4pbxsrqcpvgf-mirror-tree'
const basic = fixturePath('basic')
const tricky = fixturePath('tricky')
const BASIC = `${basic.hash}-${basic.name}`
const TRICKY = `${tricky.hash}-${tricky.name}`

const missing = missingCommands(['tar', 'unzip', 'zstd', 'xz', 'nix-store'])

/** Every node below `dir` by relative path: `d`, `l <target>`, or `f`/`x` (executable) and a sha256. */
async function snapshot(dir: string): Promise<Map<string, string>> {
  const nodes = new Map<string, string>()
  async function visit(rel: string): Promise<void> {
    const full = path.join(dir, rel)
    const stat = await lstat(full)
    if (stat.isSymbolicLink()) nodes.set(rel, `l ${await readlink(full)}`)
    else if (stat.isDirectory()) {
      nodes.set(rel, 'd')
      for (const name of await readdir(full)) await visit(rel === '' ? name : `${rel}/${name}`)
    } else {
      const sha = createHash('sha256')
        .update(await readFile(full))
        .digest('hex')
      nodes.set(rel, `${stat.mode & 0o100 ? 'x' : 'f'} ${sha}`)
    }
  }
  await visit('')
  return nodes
}

describe('archive and NAR downloads, unpacked by tar, unzip and nix-store', {
  skip: missing.length > 0 ? `not installed: ${missing.join(', ')}` : false,
  timeout: 300_000,
}, () => {
  /** unnar, and each store path restored from its NAR by Nix itself with that NAR. */
  let fx: FixtureServer
  const PATHS = [MIRROR_TREE, TRICKY, BASIC].map(
    (base) => [base, base === MIRROR_TREE ? MIRROR_CACHE : cacheDir('xz')] as const,
  )
  before(async () => {
    fx = await serveFixtures([MIRROR_CACHE, cacheDir('xz')], PATHS)
  })
  after(async () => fx?.stop())

  const urlOf = (base: string, sub: readonly string[], query: string) =>
    fx.unnar.store([base, ...sub].map(encodeURIComponent).join('/') + query)

  /** The body of a 200, checked to be the same bytes when asked for again. */
  async function download(url: string, what: string): Promise<{ res: Response; body: Buffer }> {
    const res = await fetch(url)
    const body = Buffer.from(await res.arrayBuffer())
    assert.equal(res.status, 200, `${what}: ${body.subarray(0, 300).toString()}`)
    const again = Buffer.from(await (await fetch(url)).arrayBuffer())
    assert.ok(again.equals(body), `${what}: the same request gave different bytes`)
    return { res, body }
  }

  /** The directories archived: whole store paths, and directories below them. */
  const TARGETS = [
    { base: TRICKY, sub: [] as string[], name: tricky.name },
    { base: TRICKY, sub: ['names'], name: 'names' },
    { base: TRICKY, sub: ['unicode'], name: 'unicode' },
    { base: BASIC, sub: [], name: basic.name },
    { base: BASIC, sub: ['share'], name: 'share' },
    // A backslash in a name: zip has no way to keep it (see docs/http.md), tar does.
    { base: MIRROR_TREE, sub: [], name: 'mirror-tree', tarOnly: true },
    { base: MIRROR_TREE, sub: ['sub dir'], name: 'sub dir' },
  ]
  const FORMATS = [
    { format: 'tar', type: 'application/x-tar', unpack: ['tar', '-xf'] },
    { format: 'tar.gz', type: 'application/gzip', unpack: ['tar', '-xzf'] },
    { format: 'tar.zst', type: 'application/zstd', unpack: ['tar', '--zstd', '-xf'] },
    { format: 'zip', type: 'application/zip', unpack: ['unzip', '-q'] },
  ]

  for (const { base, sub, name, tarOnly } of TARGETS) {
    for (const { format, type, unpack } of FORMATS) {
      if (tarOnly === true && format === 'zip') continue
      const what = `${[base.slice(33), ...sub].join('/')}?archive=${format}`
      it(`${what} unpacks to the store path's files, modes and symlinks`, async () => {
        const { res, body } = await download(urlOf(base, sub, `/?archive=${format}`), what)
        assert.equal(res.headers.get('content-type'), type)
        const fileName = `${name}.${format}`
        assert.match(res.headers.get('content-disposition') ?? '', /^attachment; filename="/)
        assert.ok(res.headers.get('content-disposition')?.includes(`"${fileName.replace(' ', ' ')}"`), fileName)
        const out = await mkdtemp(path.join(fx.work, 'unpack-'))
        const file = path.join(out, fileName)
        await writeFile(file, body)
        const [command, ...args] = unpack as [string, ...string[]]
        await run(command, [...args, file], { cwd: out })
        await rm(file)
        assert.deepEqual(await readdir(out), [name], 'everything is under one directory named like the one asked for')
        assertSameEntries(
          await snapshot(path.join(out, name)),
          await snapshot(path.join(fx.restored.get(base)!.dir, ...sub)),
          what,
        )
      })
    }
  }

  it('?nar of a store path is its NAR, verbatim', async () => {
    for (const base of [BASIC, TRICKY, MIRROR_TREE]) {
      const { res, body } = await download(urlOf(base, [], '?nar'), base)
      assert.equal(res.headers.get('content-type'), 'application/x-nix-nar')
      assert.equal(res.headers.get('content-disposition'), `attachment; filename="${base.slice(33)}.nar"`)
      assert.equal(res.headers.get('content-length'), String(body.length))
      assert.ok(body.equals(fx.restored.get(base)!.nar), base)
    }
  })

  const NODES = [
    { base: BASIC, sub: ['share'] },
    { base: BASIC, sub: ['bin', 'hello'] },
    { base: TRICKY, sub: ['names'] },
    { base: TRICKY, sub: ['unicode', 'über café.txt'] },
    { base: TRICKY, sub: ['exec', 'run.sh'] },
    { base: MIRROR_TREE, sub: ['names'] },
    { base: MIRROR_TREE, sub: ['empty-dir'] },
    { base: MIRROR_TREE, sub: ['empty.txt'] },
  ]
  for (const { base, sub } of NODES) {
    const what = `${[base.slice(33), ...sub].join('/')}?nar`
    it(`${what} is nix-store --dump of it, and restores to it`, async () => {
      const { res, body } = await download(urlOf(base, sub, '?nar'), what)
      assert.equal(res.headers.get('content-length'), String(body.length))
      const original = path.join(fx.restored.get(base)!.dir, ...sub)
      assert.ok(
        body.equals(execFileSync('nix-store', ['--dump', original], { maxBuffer: 64 << 20 })),
        'nix-store --dump',
      )
      const out = path.join(await mkdtemp(path.join(fx.work, 'nar-')), 'out')
      execFileSync('nix-store', ['--restore', out], { input: body })
      assertSameEntries(await snapshot(out), await snapshot(original), what)
    })
  }

  it('names the download safely for any name (RFC 6266, RFC 8187)', async () => {
    const res = await fetch(urlOf(TRICKY, ['unicode', 'über café.txt'], '?nar'), { method: 'HEAD' })
    assert.equal(res.status, 200)
    assert.equal(
      res.headers.get('content-disposition'),
      `attachment; filename="_ber caf_.txt.nar"; filename*=UTF-8''%C3%BCber%20caf%C3%A9.txt.nar`,
    )
    const newline = await fetch(urlOf(MIRROR_TREE, ['names'], '/?archive=zip'), { method: 'HEAD' })
    assert.equal(newline.headers.get('content-disposition'), 'attachment; filename="names.zip"')
  })

  it('answers ?nar and ?archive= without a redirect for a missing or extra slash', async () => {
    const dir = await fetch(urlOf(BASIC, ['share'], '?archive=tar'), { redirect: 'manual' })
    assert.equal(dir.status, 200)
    await dir.body?.cancel()
    const file = await fetch(urlOf(BASIC, ['bin', 'hello'], '/?nar'), { redirect: 'manual' })
    assert.equal(file.status, 200)
    await file.body?.cancel()
  })

  it('follows a symlink to a directory like any request, the query kept', async () => {
    const res = await fetch(urlOf(TRICKY, ['via', 'chaindir'], '/?archive=zip'), { redirect: 'manual' })
    assert.equal(res.status, 301)
    assert.match(res.headers.get('location') ?? '', /\/chain\/\?archive=zip$/)
  })

  const BAD = [
    {
      query: '/?archive=rar',
      status: 400,
      says: /unknown archive format "rar": use one of tar, tar\.gz, tar\.zst, zip/,
    },
    { query: '/?archive=', status: 400, says: /use one of tar, tar\.gz, tar\.zst, zip/ },
    { query: '/?archive=tar&nar', status: 400, says: /not both/ },
    { query: '/bin/hello?archive=tar', status: 400, says: /\?archive= is for directories.*\?nar/ },
    { query: '/nowhere?nar', status: 404, says: /./ },
  ]
  for (const { query, status, says } of BAD) {
    it(`answers ${query} with ${status} and a reason`, async () => {
      const res = await fetch(fx.unnar.store(`${BASIC}${query}`))
      assert.equal(res.status, status)
      assert.match(await res.text(), says)
      await fx.unnar.waitForLog((l) => l.msg === 'request failed' && l.status === status, `a ${status} logged`)
    })
  }

  it('offers every download on the listing page through a form', async () => {
    const res = await fetch(urlOf(BASIC, [], '/'), { headers: { accept: 'text/html' } })
    const html = await res.text()
    for (const format of ['tar', 'tar.gz', 'tar.zst', 'zip'])
      assert.ok(html.includes(`name="archive" value="${format}"`), format)
    assert.ok(html.includes('name="nar"'))
    assert.ok(!/href="[^"]*\?(archive|nar)/.test(html), 'no link a mirroring tool would follow')
  })
})

describe('archive and NAR downloads of a NAR that fails verification', () => {
  it('answers 502 without a byte of the archive or NAR, and keeps nothing', async () => {
    const root = await mkdtemp(path.join(os.tmpdir(), 'unnar-archives-corrupt-'))
    const nar = buildNar(directory({ 'a.txt': regular('hello\n'), sub: directory({ 'b.txt': regular('world\n') }) }))
    const narHash = formatHashNix32({ algorithm: 'sha256', digest: createHash('sha256').update(nar).digest() })
    const narFile = `nar/${narHash.slice('sha256:'.length)}.nar`
    const hash = encodeNix32(randomBytes(20))
    await mkdir(path.join(root, 'nar'))
    await writeFile(path.join(root, narFile), nar)
    await writeFile(path.join(root, 'nix-cache-info'), 'StoreDir: /nix/store\n')
    await writeFile(
      path.join(root, `${hash}.narinfo`),
      `StorePath: /nix/store/${hash}-corrupt\nURL: ${narFile}\nCompression: none\nNarHash: ${narHash}\nNarSize: ${nar.length}\nReferences: \n`,
    )
    const upstream = await startTestUpstream({ root })
    const corrupt = Buffer.from(nar)
    corrupt[corrupt.indexOf('world')]! ^= 0x20 // `World`: still a well-formed NAR, of other bytes
    upstream.setFault(`/${narFile}`, { kind: 'replace', body: corrupt })
    const unnar = await startUnnar([upstream.url], { TRUSTED_PUBLIC_KEYS: '' })
    try {
      for (const query of ['/?archive=tar', '/?nar', '/sub/?archive=zip', '/sub/b.txt?nar']) {
        const res = await fetch(unnar.store(`${hash}-corrupt${query}`))
        assert.equal(res.status, 502, query)
        assert.match(await res.text(), /NarHash|bad NAR/, query)
      }
      assert.deepEqual(
        (await readdir(path.join(unnar.cacheDir, 'nar')).catch(() => [])).filter((f) => f.endsWith('.nar')),
        [],
      )
    } finally {
      await unnar.stop()
      await upstream.close()
      await rm(root, { recursive: true, force: true })
    }
  })
})
