/** Symlink resolution inside a store path, over an in-memory listing. */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { locate, parseListing } from '../../src/formats/listing.js'
import { resolveStorePath } from '../../src/http/resolve-path.js'

const listing = parseListing(
  JSON.stringify({
    version: 1,
    root: {
      type: 'directory',
      entries: {
        bin: {
          type: 'directory',
          entries: { tool: { type: 'regular', size: 1, narOffset: 100 }, up: { type: 'symlink', target: '../lib' } },
        },
        lib: {
          type: 'directory',
          entries: {
            'a.so': { type: 'symlink', target: 'b.so' },
            'b.so': { type: 'regular', size: 2, narOffset: 200 },
          },
        },
        self: { type: 'symlink', target: '/nix/store/00000000000000000000000000000000-x/lib' },
        other: { type: 'symlink', target: '/nix/store/11111111111111111111111111111111-y/share' },
        out: { type: 'symlink', target: '../../../etc' },
        loop: { type: 'symlink', target: 'loop' },
        gone: { type: 'symlink', target: 'nothing' },
      },
    },
  }),
)
const base = '/nix/store/00000000000000000000000000000000-x'
const resolve = (segments: string[]) =>
  resolveStorePath(async (s) => locate(listing.root, s), base, '/nix/store', segments)

describe('resolveStorePath', () => {
  it('finds plain files and directories', async () => {
    assert.deepEqual((await resolve(['bin', 'tool'])).kind, 'found')
    const dir = await resolve(['lib'])
    assert.equal(dir.kind === 'found' && dir.node.type, 'directory')
  })

  it('follows a relative symlink in the middle of the path on the server', async () => {
    const r = await resolve(['bin', 'up', 'b.so'])
    assert.equal(r.kind, 'found')
    assert.deepEqual(r.kind === 'found' && r.segments, ['lib', 'b.so'])
  })

  it('follows an absolute symlink back into the same store path', async () => {
    const r = await resolve(['self', 'b.so'])
    assert.deepEqual(r.kind === 'found' && r.segments, ['lib', 'b.so'])
  })

  it('redirects a last-component symlink to the end of its chain, with a slash for directories', async () => {
    assert.deepEqual(await resolve(['lib', 'a.so']), { kind: 'redirect', location: `${base}/lib/b.so` })
    assert.deepEqual(await resolve(['bin', 'up']), { kind: 'redirect', location: `${base}/lib/` })
  })

  it('redirects into another store path, keeping the rest of the path', async () => {
    assert.deepEqual(await resolve(['other', 'doc', 'a b']), {
      kind: 'redirect',
      location: '/nix/store/11111111111111111111111111111111-y/share/doc/a%20b',
    })
  })

  it('reports escapes, loops, dangling links and files used as directories', async () => {
    assert.match(((await resolve(['out'])) as { reason: string }).reason, /outside the Nix store/)
    assert.match(((await resolve(['loop'])) as { reason: string }).reason, /too many levels/)
    assert.match(((await resolve(['gone'])) as { reason: string }).reason, /dangling symlink/)
    assert.match(((await resolve(['bin', 'tool', 'x'])) as { reason: string }).reason, /not a directory/)
    assert.match(((await resolve(['nope'])) as { reason: string }).reason, /no such file or directory: nope/)
  })

  it('treats a link to the store dir itself as leaving the store, not as a store path', async () => {
    const root = parseListing(
      '{"version":1,"root":{"type":"directory","entries":{"s":{"type":"symlink","target":"/nix/store/"}}}}',
    ).root
    const r = await resolveStorePath(async (s) => locate(root, s), base, '/nix/store', ['s', 'x'])
    assert.match((r as { reason: string }).reason, /outside the Nix store/)
  })

  it('treats a link that climbs out of its store path to something that is no store path like one leaving the store', async () => {
    const entry = (target: string) => ({
      type: 'directory',
      entries: { doc: { type: 'directory', entries: { l: { type: 'symlink', target } } } },
    })
    const at = async (target: string) => {
      const root = parseListing(JSON.stringify({ version: 1, root: entry(target) })).root
      return resolveStorePath(async (s) => locate(root, s), base, '/nix/store', ['doc', 'l'])
    }
    // `../../build-essential/list` from /usr/share/doc/<pkg>/ copied into a store path.
    for (const target of [
      '../../build-essential/list',
      '../../../x',
      '/nix/store/build-essential',
      '/nix/store/.links/abc',
      `../../${'1'.repeat(32)}`,
      `../../${'1'.repeat(32)}-`,
      `../../${'e'.repeat(32)}-y/z`,
    ]) {
      const r = await at(target)
      assert.equal(r.kind, 'missing', target)
      assert.match((r as { reason: string }).reason, /^symlink doc\/l points outside the Nix store/, target)
    }
    assert.deepEqual(await at(`../../${'1'.repeat(32)}-y/z`), {
      kind: 'redirect',
      location: `/nix/store/${'1'.repeat(32)}-y/z`,
    })
    const root = await resolveStorePath(
      async (s) => (s.length === 0 ? { type: 'symlink', target: 'not-a-store-path' } : undefined),
      base,
      '/nix/store',
      [],
    )
    assert.match((root as { reason: string }).reason, /symlink outside the Nix store/)
  })

  it('resolves a store path that is itself a symlink relative to the store dir', async () => {
    const at = async (target: string, segments: string[]) =>
      resolveStorePath(
        async (s) => (s.length === 0 ? { type: 'symlink', target } : undefined),
        base,
        '/nix/store',
        segments,
      )
    assert.deepEqual(await at('11111111111111111111111111111111-y', ['bin', 'x']), {
      kind: 'redirect',
      location: '/nix/store/11111111111111111111111111111111-y/bin/x',
    })
    assert.match(((await at('../../etc', [])) as { reason: string }).reason, /symlink outside the Nix store/)
    assert.match(((await at(`${base}/lib`, [])) as { reason: string }).reason, /symlink into itself/)
  })
})
