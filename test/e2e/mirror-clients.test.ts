/**
 * Real directory clients walking unnar's listings (issue 25): Debian's wget, rclone and lftp mirror
 * Nix-made store paths (odd names: spaces, #, ?, %, a newline, a tab, a backslash, quotes, UTF-8;
 * symlinks to files and directories, dangling and escaping ones, an empty directory), and what they
 * wrote is compared with the store path restored by `nix-store --restore`: the same regular files
 * with the same bytes, nothing more. Symlinks have no form in a mirror made over HTTP: each tool
 * gets what they point to where it really is, and no copy under the link's name.
 */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtemp, readdir, readFile } from 'node:fs/promises'
import path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { promisify } from 'node:util'
import { cacheDir, fixturePath } from '../helpers/fixtures.js'
import { assertSameEntries, type FixtureServer, missingCommands, serveFixtures } from '../helpers/nix-tools.js'
import type { TestUnnar } from '../helpers/unnar.js'

const run = promisify(execFile)
const MIRROR_CACHE = path.resolve('test/fixtures/mirror-cache')
/** test/fixtures/mirror-cache/README.md says how it was made. */
const MIRROR_TREE = 'rxmzg881g7n6jhp7w3zs4pbxsrqcpvgf-mirror-tree'
const tricky = fixturePath('tricky')
const TRICKY = `${tricky.hash}-${tricky.name}`

const missing = missingCommands(['wget', 'rclone', 'lftp', 'nix-store', 'xz'])

/** Regular files below `dir` (symlinks not followed) by relative path, with their sha256; and the directories. */
async function tree(dir: string): Promise<{ files: Map<string, string>; dirs: Set<string> }> {
  const files = new Map<string, string>()
  const dirs = new Set<string>()
  async function walk(rel: string): Promise<void> {
    for (const entry of await readdir(path.join(dir, rel), { withFileTypes: true })) {
      const child = rel === '' ? entry.name : `${rel}/${entry.name}`
      if (entry.isDirectory()) {
        dirs.add(child)
        await walk(child)
      } else if (entry.isFile()) {
        files.set(
          child,
          createHash('sha256')
            .update(await readFile(path.join(dir, child)))
            .digest('hex'),
        )
      }
    }
  }
  await walk('')
  return { files, dirs }
}

/** What wget names a local file: it decodes a `%XX` in a name a second time (with any server: nginx's listings too). */
function wgetName(rel: string): string {
  return rel.replace(/%([0-9a-fA-F]{2})/g, (_, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)))
}

describe('directory clients walking listings (wget, rclone, lftp)', {
  skip: missing.length > 0 ? `not installed: ${missing.join(', ')}` : false,
  timeout: 300_000,
}, () => {
  let fixtures: FixtureServer
  let work: string
  let unnar: TestUnnar
  /** Each store path restored from its NAR by Nix itself. */
  let restored: FixtureServer['restored']

  before(async () => {
    fixtures = await serveFixtures(
      [MIRROR_CACHE, cacheDir('xz')],
      [
        [MIRROR_TREE, MIRROR_CACHE],
        [TRICKY, cacheDir('xz')],
      ],
    )
    ;({ work, unnar, restored } = fixtures)
  })
  after(async () => fixtures?.stop())

  /** The directories mirrored: a whole store path with every kind of odd name, and parts of the tricky fixture. */
  const TARGETS = [
    { base: MIRROR_TREE, sub: [] as string[] },
    { base: TRICKY, sub: ['names'] },
    { base: TRICKY, sub: ['unicode'] },
    { base: TRICKY, sub: ['via'] },
    { base: TRICKY, sub: ['chain'] },
  ]
  const urlOf = (base: string, sub: readonly string[]) =>
    unnar.store([base, ...sub].map(encodeURIComponent).join('/') + '/')

  for (const { base, sub } of TARGETS) {
    const what = [base.slice(33), ...sub].join('/')
    const expected = async () => tree(path.join(restored.get(base)!.dir, ...sub))

    it(`wget -r -np mirrors ${what} exactly`, async () => {
      const out = await mkdtemp(path.join(work, 'wget-'))
      const url = urlOf(base, sub)
      const cut = new URL(url).pathname.split('/').filter(Boolean).length
      await run('wget', [
        '-q',
        '-r',
        '-np',
        '-nH',
        `--cut-dirs=${cut}`,
        '-e',
        'robots=off',
        '-R',
        'index.html*',
        '--restrict-file-names=nocontrol',
        '-P',
        out,
        url,
      ])
      const got = await tree(out)
      const want = await expected()
      assertSameEntries(got.files, new Map([...want.files].map(([rel, sha]) => [wgetName(rel), sha])), 'wget')
      for (const dir of got.dirs)
        assert.ok(want.dirs.has(dir), `wget made a directory ${JSON.stringify(dir)} that is not in the store path`)
      // Without -R, the listings themselves stay as index.html, and nothing else is fetched (no `?json`, no sort orders).
      const all = await mkdtemp(path.join(work, 'wget-all-'))
      await run('wget', [
        '-q',
        '-r',
        '-np',
        '-nH',
        `--cut-dirs=${cut}`,
        '-e',
        'robots=off',
        '--restrict-file-names=nocontrol',
        '-P',
        all,
        url,
      ])
      const extra = [...(await tree(all)).files.keys()].filter((rel) => !got.files.has(rel))
      assert.deepEqual(
        extra.filter((rel) => path.posix.basename(rel) !== 'index.html'),
        [],
        'wget fetched only the listings besides the files',
      )
    })

    it(`rclone copies ${what} exactly, and lsf lists it`, async () => {
      const out = await mkdtemp(path.join(work, 'rclone-'))
      const url = urlOf(base, sub)
      const env = { ...process.env, RCLONE_CONFIG: path.join(work, 'no-rclone.conf') }
      await run('rclone', ['copy', '--http-url', url, ':http:', out], { env })
      const got = await tree(out)
      const want = await expected()
      assertSameEntries(got.files, want.files, 'rclone copy')
      const { stdout } = await run('rclone', ['lsf', '-R', '--http-url', url, ':http:'], { env })
      // A newline in a name splits lsf's own line: compare the text as a whole.
      const listed = [...want.files.keys(), ...[...want.dirs].map((d) => `${d}/`)].sort()
      assert.deepEqual(
        stdout.split('\n').filter(Boolean).sort(),
        listed.join('\n').split('\n').filter(Boolean).sort(),
        'rclone lsf -R',
      )
    })

    it(`lftp mirrors ${what} exactly, and cls lists its entries`, async () => {
      const out = await mkdtemp(path.join(work, 'lftp-'))
      const url = urlOf(base, sub)
      await run('lftp', ['-c', `set cmd:fail-exit yes; open ${url}; mirror . ${out}`])
      const got = await tree(out)
      const want = await expected()
      assertSameEntries(got.files, want.files, 'lftp mirror')
      for (const dir of got.dirs)
        assert.ok(want.dirs.has(dir), `lftp made a directory ${JSON.stringify(dir)} that is not in the store path`)
      const { stdout } = await run('lftp', ['-c', `open ${url}; cls -1`])
      const top = [...(await readdir(path.join(restored.get(base)!.dir, ...sub), { withFileTypes: true }))]
        .filter((e) => !e.isSymbolicLink())
        .map((e) => e.name + (e.isDirectory() ? '/' : ''))
      assert.deepEqual(
        stdout.split('\n').filter(Boolean).sort(),
        top.join('\n').split('\n').filter(Boolean).sort(),
        'lftp cls',
      )
    })
  }
})
