/** Subdomain mode with store path names that percent-encoding changes, and links to other store paths. */
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { formatNarInfo } from '../../src/formats/narinfo.js'
import { encodeNix32 } from '../../src/formats/nixbase32.js'
import { buildNar, directory, regular, symlink, type NarTree } from '../formats/nar-builder.js'
import { rawRequest } from '../helpers/raw-http.js'
import { startUnnar, type TestUnnar } from '../helpers/unnar.js'

/** Writes one store path (uncompressed NAR, unsigned narinfo) into the cache at `root`; returns its hash. */
async function publish(root: string, name: string, tree: NarTree, references: string[] = []): Promise<string> {
  const hash = encodeNix32(createHash('sha256').update(name).digest().subarray(0, 20))
  const nar = buildNar(tree)
  await writeFile(path.join(root, 'nar', `${hash}.nar`), nar)
  const narHash = { algorithm: 'sha256' as const, digest: new Uint8Array(createHash('sha256').update(nar).digest()) }
  const narInfo = formatNarInfo({
    storePath: `/nix/store/${hash}-${name}`,
    url: `nar/${hash}.nar`,
    compression: 'none',
    fileSize: nar.length,
    narHash,
    narSize: nar.length,
    references,
    sigs: [],
    quirks: [],
  })
  await writeFile(path.join(root, `${hash}.narinfo`), narInfo)
  return hash
}

describe('subdomain mode links', () => {
  let root: string
  let unnar: TestUnnar
  let dep: string
  let lib: string
  const onSite = (hash: string, urlPath: string, headers: Record<string, string> = {}) =>
    rawRequest(`${unnar.url}${urlPath}`, { headers: { host: `${hash}.nix.test:8080`, ...headers } })

  before(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'unnar-subdomain-'))
    await mkdir(path.join(root, 'nar'))
    await writeFile(path.join(root, 'nix-cache-info'), 'StoreDir: /nix/store\n')
    dep = await publish(root, 'dep', directory({ 'file.txt': regular('dep\n') }))
    lib = await publish(
      root,
      'lib+plus',
      directory({
        abs: symlink(`/nix/store/${dep}-dep/file.txt`),
        link: symlink('target.txt'),
        'target.txt': regular('hi\n'),
      }),
      [`${dep}-dep`],
    )
    unnar = await startUnnar([`file://${root}`], { DOMAIN: 'nix.test', TRUSTED_PUBLIC_KEYS: '' })
  })
  after(async () => {
    await unnar.stop()
    await rm(root, { recursive: true, force: true })
  })

  it('keeps a symlink redirect on the site when the name has characters percent-encoding changes', async () => {
    const res = await onSite(lib, '/link')
    assert.equal(res.status, 301)
    assert.equal(res.headers.location, '/target.txt')
  })

  it("sends a listing's links to other store paths to their own sites", async () => {
    const page = (await onSite(lib, '/', { accept: 'text/html' })).body.toString()
    assert.ok(page.includes(`href="//${dep}.nix.test/file.txt"`), 'the absolute symlink')
    assert.ok(page.includes(`href="//${dep}.nix.test/"`), 'the reference')
    assert.ok(
      !page.includes('href="/nix/store/'),
      'no link that the site host would serve as a path inside this store path',
    )
  })
})
