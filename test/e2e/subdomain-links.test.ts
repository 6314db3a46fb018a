/** Subdomain mode with store path names that percent-encoding changes, and links to other store paths. */
import assert from 'node:assert/strict'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { directory, regular, symlink } from '../formats/nar-builder.js'
import { rawRequest } from '../helpers/raw-http.js'
import { publish } from '../helpers/publish.js'
import { startUnnar, type TestUnnar } from '../helpers/unnar.js'

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
      { references: [`${dep}-dep`] },
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
