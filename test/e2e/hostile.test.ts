/**
 * The hostile input suite (#7), end to end: an upstream serving a cache generated here with broken
 * NARs, narinfos whose URL leaves the cache, lying and oversized `.ls` files and an xz bomb; and
 * request paths that try to leave the store path they name. Every case must give a clear 4xx/502,
 * a log line, no crash and no cache entry. Prints `hostile: N cases, M failures`.
 * The parsers themselves are fuzzed in test/fuzz/.
 */
import assert from 'node:assert/strict'
import { execFile, execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import http from 'node:http'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { promisify } from 'node:util'
import { brotliCompressSync, constants as zlibConstants, gzipSync } from 'node:zlib'
import fc from 'fast-check'
import { formatListing, listingFromEntries, type ListingNode } from '../../src/formats/listing.js'
import { formatDirectoryJson } from '../../src/http/listing-formats.js'
import { NarIndexer } from '../../src/formats/nar-indexer.js'
import { formatNarInfo } from '../../src/formats/narinfo.js'
import { encodeNix32 } from '../../src/formats/nixbase32.js'
import {
  buildNar,
  bytes,
  concat,
  directory,
  regular,
  symlink,
  tokens,
  u64,
  type NarTree,
} from '../formats/nar-builder.js'
import { hostileNarUrl, storeRequestTargets, wireSegment } from '../fuzz/arbitraries.js'
import { listen } from '../helpers/listen.js'
import { rawRequest } from '../helpers/raw-http.js'
import { startTestUpstream, type TestUpstream } from '../helpers/test-upstream.js'
import { startUnnar, type TestUnnar } from '../helpers/unnar.js'
import { eventually } from '../helpers/wait.js'

const summary = { cases: 0, failures: 0 }
const execFileAsync = promisify(execFile)

/** it() that counts itself (and any extra cases it reports) into the summary line. */
function hostileCase(name: string, fn: () => Promise<number | undefined>): void {
  it(name, async () => {
    try {
      summary.cases += (await fn()) ?? 1
    } catch (err) {
      summary.cases++
      summary.failures++
      throw err
    }
  })
}

interface StorePathSpec {
  readonly name: string
  /** The uncompressed NAR that NarHash and (unless `narSize`) NarSize describe. */
  readonly nar: Uint8Array
  /** The bytes at URL, when they are not `nar` itself (Compression: none). */
  readonly file?: Uint8Array
  readonly compression?: string
  readonly narSize?: number
  readonly url?: string
  readonly listing?: string
}

interface Published {
  readonly hash: string
  readonly base: string
}

/** Writes narinfo, NAR and `.ls` of one store path into the cache at `root`. */
async function publish(root: string, spec: StorePathSpec): Promise<Published> {
  const hash = encodeNix32(createHash('sha256').update(spec.name).digest().subarray(0, 20))
  const file = spec.file ?? spec.nar
  const url = spec.url ?? `nar/${hash}.nar${spec.compression === 'xz' ? '.xz' : ''}`
  if (spec.url === undefined) await writeFile(path.join(root, url), file)
  const narInfo = formatNarInfo({
    storePath: `/nix/store/${hash}-${spec.name}`,
    url,
    compression: spec.compression ?? 'none',
    fileSize: file.length,
    narHash: { algorithm: 'sha256', digest: new Uint8Array(createHash('sha256').update(spec.nar).digest()) },
    narSize: spec.narSize ?? spec.nar.length,
    references: [],
    sigs: [],
    quirks: [],
  })
  await writeFile(path.join(root, `${hash}.narinfo`), narInfo)
  if (spec.listing !== undefined) await writeFile(path.join(root, `${hash}.ls`), spec.listing)
  return { hash, base: `${hash}-${spec.name}` }
}

/**
 * A cache directory of hand-made store paths served by a test upstream, for the describe() it is
 * called in (created before its tests, removed after).
 */
function hostileCache(prefix: string): { readonly root: string; readonly upstream: TestUpstream } {
  let root: string | undefined
  let upstream: TestUpstream | undefined
  before(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), prefix))
    await mkdir(path.join(root, 'nar'))
    await writeFile(path.join(root, 'nix-cache-info'), 'StoreDir: /nix/store\n')
    upstream = await startTestUpstream({ root })
  })
  after(async () => {
    await upstream?.close()
    if (root !== undefined) await rm(root, { recursive: true, force: true })
  })
  return {
    get root() {
      return root!
    },
    get upstream() {
      return upstream!
    },
  }
}

/** Everything under the store's `nar/` and `tmp/`: a failed download must leave neither. */
async function storeFiles(unnar: TestUnnar): Promise<string[]> {
  const list = (dir: string) => readdir(path.join(unnar.cacheDir, dir)).catch(() => [] as string[])
  return [...(await list('nar')), ...(await list('tmp'))]
}

function nested(depth: number): NarTree {
  let tree = regular('x')
  for (let i = 0; i < depth; i++) tree = directory({ d: tree })
  return tree
}

/** A directory with one entry `f` whose regular-file node is given as raw bytes after `contents`. */
function narWithFileBody(body: Uint8Array): Uint8Array {
  return concat([
    tokens(
      'nix-archive-1',
      '(',
      'type',
      'directory',
      'entry',
      '(',
      'name',
      'f',
      'node',
      '(',
      'type',
      'regular',
      'contents',
    ),
    body,
    tokens(')', ')', ')'),
  ])
}

const file = regular('x')

const BAD_NARS: ReadonlyArray<readonly [what: string, nar: Uint8Array, problem: RegExp]> = [
  [
    'unsorted entries',
    buildNar({
      type: 'directory',
      entries: [
        ['b', file],
        ['a', file],
      ],
    }),
    /unsorted entry name "a" after "b"/,
  ],
  [
    'duplicate entries',
    buildNar({
      type: 'directory',
      entries: [
        ['a', file],
        ['a', file],
      ],
    }),
    /duplicate entry name "a"/,
  ],
  ['an entry named ..', buildNar({ type: 'directory', entries: [['..', file]] }), /invalid entry name "\.\."/],
  ['an entry named .', buildNar({ type: 'directory', entries: [['.', file]] }), /invalid entry name "\."/],
  ['a slash in an entry name', buildNar({ type: 'directory', entries: [['a/b', file]] }), /invalid entry name "a\/b"/],
  ['an empty entry name', buildNar({ type: 'directory', entries: [['', file]] }), /invalid entry name ""/],
  [
    'non-zero padding',
    narWithFileBody(concat([u64(3), bytes('abc'), new Uint8Array([0, 0, 0, 0, 1])])),
    /non-zero padding byte 0x01/,
  ],
  ['directories nested 1000 deep', buildNar(nested(1000)), /nesting exceeds the maximum depth of 64/],
  [
    'a file size of 2^63',
    narWithFileBody(concat([u64(2n ** 63n), new Uint8Array(64)])),
    /file size 9223372036854775808 of "f" is too large/,
  ],
]

describe('hostile upstream data', { timeout: 120_000 }, () => {
  const cache = hostileCache('unnar-hostile-')
  const unnars: TestUnnar[] = []
  after(async () => {
    for (const unnar of unnars) await unnar.stop()
  })
  // One unnar per case: failed narinfo lookups trip the upstream's circuit breaker, and the cache
  // directory of each must be checked on its own.
  const fresh = async (): Promise<TestUnnar> => {
    const unnar = await startUnnar([cache.upstream.url], { TRUSTED_PUBLIC_KEYS: '' })
    unnars.push(unnar)
    return unnar
  }

  /** The listing needs the whole NAR, so it must fail with the indexer's own words. */
  async function expectBadNar(unnar: TestUnnar, base: string, problem: RegExp): Promise<void> {
    const res = await fetch(unnar.store(`${base}/`))
    const text = await res.text()
    assert.equal(res.status, 502, text)
    assert.match(text, /^502 Bad Gateway: upstream sent a bad NAR: /)
    assert.match(text, problem)
    await eventually(
      () => unnar.logs.some((l) => l.msg === 'NAR download failed' && problem.test(String(l.error))),
      'a log line naming the problem',
    )
    assert.ok(unnar.logs.some((l) => l.msg === 'request failed' && l.status === 502))
    await eventually(async () => (await storeFiles(unnar)).length === 0, 'no partial cache entry')
  }

  for (const [what, nar, problem] of BAD_NARS) {
    hostileCase(`answers 502 for a NAR with ${what}, logs it and keeps nothing`, async () => {
      const published = await publish(cache.root, { name: `bad-nar-${what.replace(/[^a-z0-9]+/gi, '-')}`, nar })
      await expectBadNar(await fresh(), published.base, problem)
    })
  }

  hostileCase('stops an xz bomb at its NarSize: 502, the decoder killed, nothing kept', async () => {
    const GiB = 2 ** 30
    const header = concat([
      tokens(
        'nix-archive-1',
        '(',
        'type',
        'directory',
        'entry',
        '(',
        'name',
        'big',
        'node',
        '(',
        'type',
        'regular',
        'contents',
      ),
      u64(GiB),
    ])
    // xz decodes concatenated streams: 64 copies of 16 MiB of zeros is 1 GiB out of ~160 KB in.
    const zeros = xz(new Uint8Array(16 * 2 ** 20))
    const bomb = concat([xz(header), ...Array.from({ length: 64 }, () => zeros)])
    assert.ok(bomb.length < 200_000)
    const published = await publish(cache.root, {
      name: 'xz-bomb',
      nar: header,
      file: bomb,
      compression: 'xz',
      narSize: 4096,
    })
    const unnar = await fresh()
    await expectBadNar(unnar, published.base, /NAR is larger than its NarSize 4096/)
    await eventually(() => childProcesses('xz') === 0, 'no xz decoder left running')
  })

  hostileCase('stops a bomb of every compression at its NarSize, through the cache and without it', async () => {
    const header = concat([
      tokens(
        'nix-archive-1',
        '(',
        'type',
        'directory',
        'entry',
        '(',
        'name',
        'big',
        'node',
        '(',
        'type',
        'regular',
        'contents',
      ),
      u64(2 ** 30),
    ])
    const zeros = new Uint8Array(16 * 2 ** 20)
    const program = (name: string) => (data: Uint8Array) =>
      new Uint8Array(execFileSync(name, ['--compress', '--stdout', '-1'], { input: data, maxBuffer: 64 * 2 ** 20 }))
    // Formats that decode concatenated streams: a header, then 16 copies of 16 MiB of zeros.
    const concatenated = (compress: (data: Uint8Array) => Uint8Array) => {
      const chunk = compress(zeros)
      return concat([compress(header), ...Array.from({ length: 16 }, () => chunk)])
    }
    const bombs: Record<string, () => Uint8Array> = {
      xz: () => concatenated(program('xz')),
      zstd: () => concatenated(program('zstd')),
      bzip2: () => concatenated(program('bzip2')),
      gzip: () => concatenated((data) => new Uint8Array(gzipSync(data, { level: 1 }))),
      br: () =>
        new Uint8Array(
          brotliCompressSync(concat([header, ...Array.from({ length: 16 }, () => zeros)]), {
            params: { [zlibConstants.BROTLI_PARAM_QUALITY]: 1 },
          }),
        ),
    }
    const narSizes = fc.sample(fc.integer({ min: 200, max: 2 ** 20 }), { numRuns: Object.keys(bombs).length, seed: 5 })
    let cases = 0
    for (const [i, [compression, make]] of Object.entries(bombs).entries()) {
      const narSize = narSizes[i]!
      const published = await publish(cache.root, {
        name: `bomb-${compression}`,
        nar: header,
        file: make(),
        compression,
        narSize,
      })
      for (const disk of [true, false]) {
        const unnar = await fresh()
        if (!disk) {
          await rm(path.join(unnar.cacheDir, 'tmp'), { recursive: true })
          await writeFile(path.join(unnar.cacheDir, 'tmp'), 'not a directory')
        }
        // The file's first bytes may be out before the bomb shows: then the answer is cut.
        const got = await receive(unnar.store(`${published.base}/big`))
        const what = `${compression}, ${disk ? 'cache' : 'no disk'}`
        assert.ok(!got.complete || got.status === 502, `${what}: ${got.status}, ${got.body.length} bytes`)
        assert.ok(got.body.length <= narSize + 2 ** 20, `${what}: ${got.body.length} bytes sent`)
        if (got.status === 502)
          assert.match(got.body.toString(), new RegExp(`larger than its NarSize ${narSize}`), what)
        await eventually(
          () => unnar.logs.some((l) => new RegExp(`larger than its NarSize ${narSize}`).test(String(l.error))),
          `${what}: the bomb logged`,
        )
        await eventually(async () => (await storeFiles(unnar)).length === 0, 'nothing kept')
        cases++
      }
    }
    return cases
  })

  describe('narinfo URLs that leave the cache', () => {
    let decoy: net.Server
    let decoyConnections = 0
    let decoyHost: string
    before(async () => {
      decoy = net.createServer((socket) => {
        decoyConnections++
        socket.destroy()
      })
      // Another loopback address where the system has one (Linux: all of 127/8), else another port.
      decoyHost = await listen(decoy, '127.0.0.2').then(
        () => '127.0.0.2',
        () => listen(decoy, '127.0.0.1').then(() => '127.0.0.1'),
      )
    })
    after(() => new Promise<void>((resolve) => decoy.close(() => resolve())))

    const urls = (): string[] => {
      const port = (decoy.address() as net.AddressInfo).port
      return [
        `http://${decoyHost}:${port}/nar/x.nar`,
        `HTTP://${decoyHost}:${port}/nar/x.nar`,
        `//${decoyHost}:${port}/nar/x.nar`,
        `\\\\${decoyHost}:${port}\\nar\\x.nar`,
        'http://169.254.169.254/latest/meta-data/iam/security-credentials/',
        'file:///etc/passwd',
        '../../x',
        'nar/../../x.nar',
        'nar/%2e%2e/%2e%2e/x.nar',
        '/etc/passwd',
      ]
    }

    hostileCase('answers 502 and fetches nothing but the narinfo and its `.ls`, from no other host', async () => {
      const list = urls()
      for (const [i, url] of list.entries()) {
        const published = await publish(cache.root, { name: `bad-url-${i}`, nar: buildNar(file), url })
        const unnar = await fresh()
        const before = cache.upstream.requests.length
        const res = await fetch(unnar.store(`${published.base}/`))
        const text = await res.text()
        assert.equal(res.status, 502, `${url}: ${text}`)
        assert.match(text, /URL outside the cache/)
        const asked = cache.upstream.requests
          .slice(before)
          .map((r) => r.path)
          .filter((p) => p !== '/nix-cache-info')
        // The `.ls` is asked for beside the narinfo; the NAR never is.
        assert.deepEqual(asked.sort(), [`/${published.hash}.ls`, `/${published.hash}.narinfo`], url)
        assert.ok(
          unnar.logs.some((l) => l.msg === 'upstream failed' && /URL outside the cache/.test(String(l.error))),
          url,
        )
        assert.deepEqual(await storeFiles(unnar), [])
      }
      assert.equal(decoyConnections, 0, 'the other host was never contacted')
      return list.length
    })

    hostileCase('fetches generated hostile URLs only from the cache itself, or not at all', async () => {
      const port = (decoy.address() as net.AddressInfo).port
      const self = new URL(cache.upstream.url).host
      const good = buildNar(directory({ 'hello.txt': regular('hello\n') }))
      await writeFile(path.join(cache.root, 'nar', 'good.nar'), good)
      const urls = fc.sample(
        hostileNarUrl({
          decoyHosts: [`${decoyHost}:${port}`],
          selfHosts: [self, self.replace('127.0.0.1', 'localhost')],
          goodKeys: ['nar/good.nar'],
        }).filter((url) => !/[\r\n]/.test(url)),
        { numRuns: 60, seed: 1919 },
      )
      let fetched = 0
      // (A line break ends the narinfo's line: the fuzz suite writes such narinfos raw.)
      for (const [i, url] of urls.entries()) {
        const published = await publish(cache.root, { name: `generated-url-${i}`, nar: good, url })
        const unnar = await fresh()
        const before = cache.upstream.requests.length
        const res = await fetch(`${unnar.store(`${published.base}/`)}?json`)
        const text = await res.text()
        assert.ok([200, 404, 502].includes(res.status), `${JSON.stringify(url)}: ${res.status} ${text}`)
        if (res.status === 200) fetched++
        for (const request of cache.upstream.requests.slice(before)) {
          const decoded = request.path.split('/').map((segment) => segment.replace(/%2e/gi, '.'))
          assert.ok(
            request.path.startsWith('/') &&
              !decoded.slice(1).some((segment) => segment === '' || segment === '.' || segment === '..'),
            `${JSON.stringify(url)} asked for ${request.path}`,
          )
        }
      }
      assert.equal(decoyConnections, 0, 'the other host was never contacted')
      assert.ok(fetched > 0, 'some generated URLs were plain enough to be fetched')
      return urls.length
    })
  })

  hostileCase(
    'answers a link that climbs out of its store path with 404, like one to /etc/passwd, and never a redirect there',
    async () => {
      const other = '1'.repeat(32)
      const targets = [
        ...fc.sample(
          fc
            .array(
              fc.constantFrom('..', '.', 'x', 'build-essential', 'list', other, `${other}-y`, '/nix/store', '/etc'),
              { minLength: 1, maxLength: 6 },
            )
            .map((parts) => parts.join('/')),
          { numRuns: 40, seed: 6 },
        ),
        '../../build-essential/list',
        '../../../../etc/passwd',
      ]
      const unique = [...new Set(targets)].filter((t) => t !== '' && !t.includes('\0'))
      const nar = buildNar(
        directory({
          share: directory({
            doc: directory(Object.fromEntries(unique.map((target, i) => [`l${i}`, symlink(target)]))),
          }),
        }),
      )
      const published = await publish(cache.root, { name: 'climbing-links', nar })
      const unnar = await fresh()
      for (const [i, target] of unique.entries()) {
        const res = await fetch(unnar.store(`${published.base}/share/doc/l${i}`), { redirect: 'manual' })
        const text = await res.text()
        const resolved = path.posix
          .normalize(target.startsWith('/') ? target : `/nix/store/${published.base}/share/doc/${target}`)
          .replace(/\/+$/, '')
        const intoStorePath = /^\/nix\/store\/([0-9a-z]{32}-[^/]+)/.exec(resolved)
        if (res.status === 301) {
          const location = decodeURIComponent(res.headers.get('location')!)
          assert.ok(intoStorePath !== null, `${target}: redirected to ${location}`)
          assert.ok(location.startsWith(`/nix/store/${intoStorePath[1]}`), `${target}: ${location}`)
        } else if (intoStorePath === null || intoStorePath[1]!.startsWith(published.hash)) {
          assert.equal(res.status, 404, `${target}: ${res.status} ${text}`)
          if (intoStorePath === null) assert.match(text, /points outside the Nix store/, target)
        }
      }
      return unique.length
    },
  )

  hostileCase('keeps the plain-text listing one line per entry for names with newlines and controls', async () => {
    const names = [
      'a\n-r-xr-xr-x           99 forged',
      'tab\tname',
      'esc\x1b[2J',
      'nel\u0085x',
      'ls\u2028x',
      'back\\slash',
      'plain',
    ]
    const nar = buildNar(directory(Object.fromEntries(names.map((name) => [name, regular('x')]))))
    const published = await publish(cache.root, { name: 'newline-names', nar })
    const unnar = await fresh()
    const text = await (await fetch(unnar.store(`${published.base}/`), { headers: { accept: 'text/plain' } })).text()
    const lines = text.trimEnd().split('\n')
    assert.equal(lines.length, names.length, text)
    assert.ok(
      lines.some((line) => line.endsWith(' a\\n-r-xr-xr-x\\ \\ \\ \\ \\ \\ \\ \\ \\ \\ \\ 99\\ forged')),
      text,
    )
    assert.doesNotMatch(text.replaceAll('\n', ''), /[\x00-\x1f\x7f-\x9f\u2028\u2029]/)
    return names.length
  })

  describe('.ls files', () => {
    const nar = buildNar(directory({ 'a.txt': regular('hello'), 'b.txt': regular('world!') }))

    hostileCase(
      'ignores a listing whose offsets and sizes do not fit in NarSize, and answers from the NAR',
      async () => {
        const root0 = listingOf(nar)
        assert.equal(root0.type, 'directory')
        const entries = (root0 as Extract<ListingNode, { type: 'directory' }>).entries
        entries.set('a.txt', { type: 'regular', size: 5, executable: false, narOffset: 10 ** 9 })
        entries.set('b.txt', { type: 'regular', size: 10 ** 12, executable: false, narOffset: 96 })
        const published = await publish(cache.root, {
          name: 'lying-listing',
          nar,
          listing: formatListing({ version: 1, root: root0 }),
        })
        const unnar = await fresh()
        // HEAD first: it is answered from the listing alone when the listing is used.
        const head = await fetch(unnar.store(`${published.base}/b.txt`), { method: 'HEAD' })
        assert.equal(head.status, 200)
        assert.equal(head.headers.get('content-length'), '6')
        const a = await fetch(unnar.store(`${published.base}/a.txt`))
        assert.equal(await a.text(), 'hello')
        assert.ok(
          unnar.logs.some(
            (l) => l.msg === 'ignoring unusable listing' && /does not fit in the NarSize/.test(String(l.error)),
          ),
        )
      },
    )

    hostileCase('does not read a 50 MB listing of a tiny NAR, and answers from the NAR', async () => {
      const entry = (i: number) =>
        `"f${String(i).padStart(8, '0')}":{"type":"regular","size":1,"narOffset":${96 + i * 200}}`
      const count = Math.ceil((50 * 2 ** 20) / entry(0).length)
      const listing = `{"version":1,"root":{"type":"directory","entries":{${Array.from({ length: count }, (_, i) => entry(i)).join(',')}}}}`
      assert.ok(listing.length >= 50 * 2 ** 20)
      const published = await publish(cache.root, { name: 'huge-listing', nar, listing })
      const unnar = await fresh()
      const res = await fetch(unnar.store(`${published.base}/b.txt`))
      assert.equal(await res.text(), 'world!')
      const json = (await (await fetch(unnar.store(`${published.base}/?json`))).json()) as {
        entries: Record<string, unknown>
      }
      assert.deepEqual(Object.keys(json.entries), ['a.txt', 'b.txt'])
      assert.ok(
        unnar.logs.some(
          (l) => l.msg === 'ignoring unusable listing' && /over the \d+-byte limit/.test(String(l.error)),
        ),
      )
      assert.equal(cache.upstream.count(`/${published.hash}.ls`), 1)
    })
  })
})

function xz(data: Uint8Array): Uint8Array {
  return new Uint8Array(execFileSync('xz', ['--compress', '--stdout', '-1'], { input: data }))
}

/** What a client got: whether the message arrived whole (Content-Length met, or the last chunk), or the connection was cut. */
interface Received {
  readonly status: number
  readonly headers: http.IncomingHttpHeaders
  readonly body: Buffer
  readonly complete: boolean
}

function receiveHead(url: string): Promise<Received> {
  return receive(url, {}, 'HEAD')
}

function receive(url: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Received> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = []
      let settled = false
      const done = () => {
        if (settled) return
        settled = true
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks),
          complete: res.complete,
        })
      }
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', done)
      res.on('error', done)
      res.on('close', done)
    })
    req.on('error', reject)
    req.end()
  })
}

/** Small trees of regular files (a few bigger than the 256 KiB read whole), links and directories. */
const tamperTree: fc.Arbitrary<NarTree> = fc.letrec<{ node: NarTree; file: NarTree }>((tie) => ({
  file: fc
    .tuple(
      fc.oneof(
        { weight: 4, arbitrary: fc.uint8Array({ maxLength: 3000 }) },
        {
          weight: 1,
          arbitrary: fc
            .integer({ min: 256 * 1024, max: 600 * 1024 })
            .map((n) => new Uint8Array(n).map((_, i) => (i * 31 + n) % 251)),
        },
      ),
      fc.boolean(),
    )
    .map(([contents, executable]) => regular(contents, executable)),
  node: fc.oneof(
    { depthSize: 'small', maxDepth: 2 },
    tie('file'),
    fc.constantFrom('a', '../x', '/nix/store/x').map((target) => symlink(target)),
    fc
      .uniqueArray(fc.tuple(fc.constantFrom('a', 'b', 'c.txt', 'd e', 'f\nx'), tie('node')), {
        selector: ([name]) => name,
        minLength: 1,
        maxLength: 4,
      })
      .map((pairs) => directory(pairs)),
  ),
})).node

interface RegularEntry {
  readonly path: string
  readonly narOffset: number
  readonly size: number
}

function regularEntries(nar: Uint8Array): RegularEntry[] {
  const indexer = new NarIndexer()
  const entries = indexer.push(nar)
  indexer.end()
  return entries.flatMap((e) => (e.type === 'regular' ? [{ path: e.path, narOffset: e.narOffset, size: e.size }] : []))
}

describe('bytes a NAR has not proved never complete a response (--verify strict)', { timeout: 300_000 }, () => {
  const cache = hostileCache('unnar-hostile-strict-')
  const unnars: TestUnnar[] = []
  after(async () => {
    for (const unnar of unnars) await unnar.stop()
  })

  /** Where the bytes go: into the cache, through a temp file not kept, or straight from the upstream (no usable disk). */
  const PATHS = ['kept', 'not kept', 'no disk'] as const
  async function fresh(how: (typeof PATHS)[number], env: Record<string, string> = {}): Promise<TestUnnar> {
    const unnar = await startUnnar([cache.upstream.url], {
      TRUSTED_PUBLIC_KEYS: '',
      ...(how === 'not kept' ? { UNNAR_MAX_NAR_SIZE: '1' } : {}),
      ...env,
    })
    unnars.push(unnar)
    if (how === 'no disk') {
      await rm(path.join(unnar.cacheDir, 'tmp'), { recursive: true })
      await writeFile(path.join(unnar.cacheDir, 'tmp'), 'not a directory')
    }
    return unnar
  }

  const url = (unnar: TestUnnar, base: string, file: string) =>
    unnar.store(`${base}/${file.split('/').map(encodeURIComponent).join('/')}`)

  hostileCase(
    'cuts every answer, ranges included, from a NAR that fails NarHash, whether kept, not kept or streamed without a disk, every time it is asked',
    async () => {
      const trees = fc.sample(
        tamperTree.filter((tree) => regularEntries(buildNar(tree)).some((e) => e.size > 0)),
        { numRuns: 4, seed: 1919 },
      )
      let cases = 0
      for (const [t, tree] of trees.entries()) {
        const nar = buildNar(tree)
        const files = regularEntries(nar)
        for (const compression of ['none', 'xz'] as const) {
          // One flipped byte in one file's contents: the NAR still parses, only NarHash can tell.
          const victim = files.filter((e) => e.size > 0)[t % files.filter((e) => e.size > 0).length]!
          const tampered = Uint8Array.from(nar)
          tampered[victim.narOffset + Math.floor(victim.size / 2)]! ^= 0x01
          const good = await publish(cache.root, {
            name: `strict-good-${t}-${compression}`,
            nar,
            file: compression === 'xz' ? xz(nar) : nar,
            compression,
          })
          const bad = await publish(cache.root, {
            name: `strict-bad-${t}-${compression}`,
            nar,
            file: compression === 'xz' ? xz(tampered) : tampered,
            compression,
          })
          for (const how of PATHS) {
            const unnar = await fresh(how)
            for (const file of files) {
              for (let attempt = 0; attempt < 2; attempt++) {
                for (const headers of [
                  {},
                  { 'accept-encoding': 'br' },
                  ...(file.size >= 2 ? [{ range: `bytes=1-${file.size - 1}` }] : []),
                ]) {
                  const got = await receive(url(unnar, bad.base, file.path), headers)
                  cases++
                  const what = `${how} ${compression} ${file.path} (${file.size} bytes) ${JSON.stringify(headers)}, attempt ${attempt + 1}`
                  assert.ok(
                    !((got.status === 200 || got.status === 206) && got.complete),
                    `${what}: a ${got.status} arrived whole`,
                  )
                  assert.ok(got.status === 200 || got.status === 206 || got.status === 502, `${what}: ${got.status}`)
                }
              }
            }
            await eventually(
              async () => (await storeFiles(unnar)).length === 0,
              `${how}: nothing kept, no temp file left`,
            )
            assert.ok(
              unnar.logs.some((l) => l.msg === 'request' && l.verification === 'held'),
              'the log says the answers were held back',
            )
            // The same files of the honest NAR (same NarHash) arrive whole: the cuts above were not everything failing.
            for (const file of files) {
              const whole = await receive(url(unnar, good.base, file.path), { 'accept-encoding': 'identity' })
              assert.equal(whole.status, 200, `${how} ${compression} ${file.path}`)
              assert.ok(whole.complete, `${how} ${compression} ${file.path}: the honest NAR's file arrives whole`)
              assert.deepEqual(whole.body, Buffer.from(nar.subarray(file.narOffset, file.narOffset + file.size)))
            }
          }
        }
      }
      return cases
    },
  )

  hostileCase(
    'makes curl exit 18 (partial file) on a file whose NAR fails NarHash, even the last file of the NAR',
    async () => {
      const nar = buildNar(
        directory({ 'first.txt': regular('first file\n'), 'last.bin': regular(new Uint8Array(100_000).fill(7)) }),
      )
      const files = regularEntries(nar)
      const tampered = Uint8Array.from(nar)
      tampered[files[1]!.narOffset + 10]! ^= 0x80
      const bad = await publish(cache.root, { name: 'strict-curl', nar, file: tampered })
      const unnar = await fresh('kept')
      for (const file of ['first.txt', 'last.bin']) {
        // Not spawnSync: the server runs in this process.
        const curl = await execFileAsync('curl', [
          '-sS',
          '-o',
          '/dev/null',
          '-w',
          '%{http_code}',
          url(unnar, bad.base, file),
        ]).then(
          () => ({ code: 0, stdout: '', stderr: '' }),
          (err: { code: number; stdout: string; stderr: string }) => err,
        )
        assert.equal(curl.code, 18, `${file}: curl said ${curl.stdout} ${curl.stderr}`)
        assert.equal(curl.stdout, '200')
      }
      return 2
    },
  )

  hostileCase('lets --verify stream complete such answers, and says so in the log', async () => {
    const nar = buildNar(directory({ 'a.txt': regular('hello there\n') }))
    const tampered = Uint8Array.from(nar)
    tampered[regularEntries(nar)[0]!.narOffset]! ^= 0x01
    const bad = await publish(cache.root, { name: 'stream-mode', nar, file: tampered })
    const unnar = await fresh('kept', { UNNAR_VERIFY: 'stream' })
    const got = await receive(url(unnar, bad.base, 'a.txt'))
    assert.equal(got.status, 200)
    assert.ok(got.complete)
    await eventually(
      () => unnar.logs.some((l) => l.msg === 'request' && l.verification === 'unverified'),
      'an unverified answer logged as such',
    )
  })
})

type Lie = 'same-size neighbour' | 'offset' | 'size' | 'executable' | 'phantom' | 'missing' | 'type'
const LIES: readonly Lie[] = ['same-size neighbour', 'offset', 'size', 'executable', 'phantom', 'missing', 'type']

/** A copy of `root` (a directory) with one lie about its regular files `files` told. */
function tellLie(root: ListingNode, files: readonly RegularEntry[], lie: Lie, pick: number): ListingNode {
  const copy = structuredClone(root)
  const victim = files[pick % files.length]!
  const other = files[(pick + 1) % files.length]!
  const parentOf = (p: string) => {
    let node = copy
    for (const segment of p.split('/').slice(0, -1))
      node = (node as Extract<ListingNode, { type: 'directory' }>).entries.get(segment)!
    return (node as Extract<ListingNode, { type: 'directory' }>).entries
  }
  const name = victim.path.split('/').at(-1)!
  const entries = parentOf(victim.path)
  const node = entries.get(name) as Extract<ListingNode, { type: 'regular' }>
  switch (lie) {
    case 'same-size neighbour': {
      const theirs = parentOf(other.path).get(other.path.split('/').at(-1)!) as Extract<
        ListingNode,
        { type: 'regular' }
      >
      entries.set(name, { ...theirs })
      break
    }
    case 'offset':
      entries.set(name, { ...node, narOffset: (node.narOffset ?? 0) + 8 })
      break
    case 'size':
      entries.set(name, { ...node, size: node.size + 1 })
      break
    case 'executable':
      entries.set(name, { ...node, executable: !node.executable })
      break
    case 'phantom':
      entries.set(`${name}.phantom`, { ...node })
      break
    case 'missing':
      entries.delete(name)
      break
    case 'type':
      entries.set(name, { type: 'symlink', target: other.path.split('/').at(-1)! })
      break
  }
  return copy
}

describe('lying .ls files: the NAR wins', { timeout: 300_000 }, () => {
  const cache = hostileCache('unnar-hostile-listing-')
  const unnars: TestUnnar[] = []
  after(async () => {
    for (const unnar of unnars) await unnar.stop()
  })
  const url = (unnar: TestUnnar, base: string, file: string) =>
    unnar.store(`${base}/${file.split('/').map(encodeURIComponent).join('/')}`)

  hostileCase(
    "never serves another file, a file the NAR lacks, or the listing's size or mode, kept or not (generated lies, Compression: none)",
    async () => {
      const trees = fc.sample(
        tamperTree.filter((tree) => tree.type === 'directory' && regularEntries(buildNar(tree)).length >= 2),
        { numRuns: 3, seed: 25 },
      )
      let cases = 0
      for (const [t, tree] of trees.entries()) {
        const nar = buildNar(tree)
        const files = regularEntries(nar)
        const truth = listingOf(nar)
        const executable = new Map(
          new NarIndexer().push(nar).flatMap((e) => (e.type === 'regular' ? [[e.path, e.executable] as const] : [])),
        )
        for (const lie of LIES) {
          const told = tellLie(truth, files, lie, t)
          const published = await publish(cache.root, {
            name: `lie-${t}-${lie.replace(/ /g, '-')}`,
            nar,
            listing: formatListing({ version: 1, root: told }),
          })
          const victim = files[t % files.length]!
          const neighbour = files[(t + 1) % files.length]!
          // Stream mode fetches a NAR too big to keep by ranges at the listing's offsets, checking the
          // frame (name, mode, size): a file of the same name elsewhere in the NAR is the one lie it
          // cannot see, documented as such.
          const sameName = victim.path.split('/').at(-1) === neighbour.path.split('/').at(-1)
          const envs = [
            {},
            { UNNAR_MAX_NAR_SIZE: '1' },
            ...(lie === 'same-size neighbour' && sameName ? [] : [{ UNNAR_MAX_NAR_SIZE: '1', UNNAR_VERIFY: 'stream' }]),
          ]
          for (const env of envs) {
            const unnar = await startUnnar([cache.upstream.url], { TRUSTED_PUBLIC_KEYS: '', ...env })
            const what = (file: string) => `${lie}, ${JSON.stringify(env)}, ${JSON.stringify(file)}`
            for (const file of [
              ...files.map((f) => f.path),
              ...(lie === 'phantom' ? [`${files[t % files.length]!.path}.phantom`] : []),
            ]) {
              const real = files.find((f) => f.path === file)
              const got = await receive(url(unnar, published.base, file), { 'accept-encoding': 'identity' })
              cases++
              if (real === undefined) {
                assert.ok(got.status === 404, `${what(file)}: a file the NAR lacks got ${got.status}`)
                continue
              }
              // The listing may still steer a request away (a 301 or 404 from it is a hint gone wrong), but bytes and headers are the NAR's.
              if (got.status === 301 || got.status === 404) continue
              assert.equal(got.status, 200, what(file))
              assert.ok(got.complete, what(file))
              assert.deepEqual(
                got.body,
                Buffer.from(nar.subarray(real.narOffset, real.narOffset + real.size)),
                what(file),
              )
              assert.equal(got.headers['content-length'], String(real.size), what(file))
              assert.equal(got.headers['nar-executable'], executable.get(file) === true ? '1' : undefined, what(file))
            }
            // Stream mode answers a NAR too big to keep by ranges, never downloading it whole: only
            // the frame check sees a lie, and only one about a file's place, size or mode.
            if ('UNNAR_VERIFY' in env && !['same-size neighbour', 'offset', 'size', 'executable'].includes(lie)) {
              await unnar.stop()
              continue
            }
            // Once the NAR is verified, what the listing said is checked against it, and a lie counted.
            await eventually(
              async () =>
                /^unnar_listing_mismatches_total\{upstream="[^"]+"\} [1-9]/m.test(
                  await (await fetch(`${unnar.url}/metrics`)).text(),
                ),
              `${lie}, ${JSON.stringify(env)}: the lie counted`,
            )
            const listed = (await (await fetch(`${unnar.store(`${published.base}/`)}?json`)).json()) as unknown
            if (!('UNNAR_VERIFY' in env))
              assert.deepEqual(
                listed,
                JSON.parse(formatDirectoryJson(truth as Extract<ListingNode, { type: 'directory' }>)),
                `${lie}, ${JSON.stringify(env)}: the listing is the NAR's now`,
              )
            await unnar.stop()
          }
        }
      }
      return cases
    },
  )

  hostileCase('answers HEAD from an honest .ls exactly as GET, without a NAR byte', async () => {
    const nar = buildNar(
      directory({
        'a.txt': regular('hello\n'),
        bin: directory({ 'run.sh': regular('#!/bin/sh\n', true) }),
        'data.bin': regular(new Uint8Array(5000).fill(3)),
      }),
    )
    const published = await publish(cache.root, {
      name: 'honest-listing',
      nar,
      listing: formatListing({ version: 1, root: listingOf(nar) }),
    })
    const unnar = await startUnnar([cache.upstream.url], { TRUSTED_PUBLIC_KEYS: '' })
    unnars.push(unnar)
    const pick = (r: Received) => ({
      status: r.status,
      length: r.headers['content-length'],
      executable: r.headers['nar-executable'],
      type: r.headers['content-type'],
      etag: r.headers.etag,
    })
    const heads = []
    const nars = cache.upstream.count(/^\/nar\//)
    // Types told by the name: a HEAD of an extensionless file needs its first bytes to sniff.
    for (const file of ['a.txt', 'bin/run.sh', 'data.bin'])
      heads.push(pick(await receiveHead(url(unnar, published.base, file))))
    assert.equal(cache.upstream.count(/^\/nar\//), nars, 'no NAR byte for HEAD')
    for (const [i, file] of ['a.txt', 'bin/run.sh', 'data.bin'].entries()) {
      assert.deepEqual(
        heads[i],
        pick(await receive(url(unnar, published.base, file), { 'accept-encoding': 'identity' })),
        file,
      )
    }
    return 3
  })
})

describe('hostile request paths', { timeout: 120_000 }, () => {
  let root: string
  let upstream: TestUpstream
  let unnar: TestUnnar
  let own: Published
  let other: Published
  const SECRET = 'SECRET-OF-ANOTHER-STORE-PATH'
  after(async () => {
    await unnar?.stop()
    await upstream?.close()
    if (root !== undefined) await rm(root, { recursive: true, force: true })
    console.log(`hostile: ${summary.cases} cases, ${summary.failures} failures`)
  })
  before(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'unnar-hostile-paths-'))
    await mkdir(path.join(root, 'nar'))
    own = await publish(root, {
      name: 'own',
      nar: buildNar(
        directory({
          dir: directory({ 'file.txt': regular('own dir file\n') }),
          'file.txt': regular('own file\n'),
          link: symlink('dir/file.txt'),
        }),
      ),
    })
    other = await publish(root, { name: 'other', nar: buildNar(directory({ 'secret.txt': regular(SECRET) })) })
    upstream = await startTestUpstream({ root })
    // Above the 8 KiB default, so that 10 KB paths reach the path parser rather than the 414 check.
    unnar = await startUnnar([upstream.url], { TRUSTED_PUBLIC_KEYS: '', UNNAR_MAX_URL_LENGTH: '15000' })
  })

  /** 400 for a malformed path, 404 for a missing file, 414 for a too-long URL; never the other path's secret. */
  async function expectRefused(target: string): Promise<number> {
    const res = await rawRequest(unnar.url, { path: target })
    const text = res.body.toString()
    assert.ok([400, 404, 414].includes(res.status), `${target.slice(0, 200)}: ${res.status} ${text.slice(0, 200)}`)
    assert.doesNotMatch(text, new RegExp(SECRET))
    assert.doesNotMatch(text, /\/tmp\/|\/work\/|at .*\.ts/)
    assert.ok(text.length < 2000, 'the error does not echo a long path whole')
    return res.status
  }

  hostileCase('serves both store paths when asked for them directly (so the attacks below can fail)', async () => {
    assert.equal(await (await fetch(unnar.store(`${own.base}/file.txt`))).text(), 'own file\n')
    assert.equal(await (await fetch(unnar.store(`${other.base}/secret.txt`))).text(), SECRET)
  })

  hostileCase(
    'refuses dot segments, NUL, empty segments, backslashes and broken or overlong escapes, and logs each',
    async () => {
      const o = `/nix/store/${own.base}`
      const secret = `${other.base}/secret.txt`
      const targets = [
        `${o}/../${secret}`,
        `${o}/%2e%2e/${secret}`,
        `${o}/%2E%2E/${secret}`,
        `${o}/.%2e/${secret}`,
        `${o}/dir/..%2f..%2f${other.base}%2fsecret.txt`,
        `${o}/%c0%ae%c0%ae/${secret}`,
        `${o}/%e0%80%ae%e0%80%ae/${secret}`,
        `${o}\\..\\${secret}`,
        `${o}/dir\\..\\..\\${secret}`,
        `${o}/%5c..%5c..%5c${other.base}%5csecret.txt`,
        `/x/../nix/store/${secret}`,
        `/nix/store/./${secret}`,
        `${o}/file.txt%00.png`,
        `${o}/%00`,
        `${o}//file.txt`,
        `/nix/store//${own.base}/file.txt`,
        `${o}/%`,
        `${o}/%zz`,
        `${o}/%e0%a4%a`,
        `${o}/${'a'.repeat(10_000)}`,
        `${o}/${'a/'.repeat(5_000)}`,
        `/nix/store/${'a'.repeat(10_000)}`,
        `${o}/${'%2e%2e/'.repeat(1_400)}${secret}`,
      ]
      const logged = () =>
        unnar.logs.filter((l) => l.msg === 'request' && typeof l.status === 'number' && l.status >= 400).length
      const before = logged()
      for (const target of targets) await expectRefused(target)
      // Including a raw backslash, which node-server refuses before the app (server.ts logs it).
      await eventually(() => logged() - before === targets.length, 'one log line per refused request')
      return targets.length
    },
  )

  hostileCase('never answers a generated hostile path with anything outside the store path it names', async () => {
    const segment = fc.oneof(wireSegment, fc.constantFrom(other.base, 'dir', 'file.txt', 'link', 'secret.txt'))
    const targets = fc.sample(storeRequestTargets(fc.constantFrom(own.base, own.hash), segment), { numRuns: 200 })
    for (const target of targets) {
      const res = await rawRequest(unnar.url, { path: target })
      const text = res.body.toString()
      assert.ok([200, 301, 400, 404, 414].includes(res.status), `${target}: ${res.status} ${text.slice(0, 200)}`)
      assert.doesNotMatch(text, new RegExp(SECRET), target)
      if (res.status === 301)
        assert.ok(res.headers.location?.startsWith(`/nix/store/${own.base}`), `${target} → ${res.headers.location}`)
    }
    return targets.length
  })
})

function listingOf(nar: Uint8Array): ListingNode {
  const indexer = new NarIndexer()
  const entries = indexer.push(nar)
  indexer.end()
  return listingFromEntries(entries).root
}

/** Child processes of this test process running `command` (Linux `ps`). */
function childProcesses(command: string): number {
  try {
    return execFileSync('ps', ['-o', 'comm=', '--ppid', String(process.pid)], { encoding: 'utf8' })
      .split('\n')
      .filter((line) => line.trim() === command).length
  } catch {
    return 0 // ps exits 1 when there are none
  }
}
