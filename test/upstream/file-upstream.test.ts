/** file:// upstreams: the same answers whether small files are read synchronously (local filesystems) or through libuv's pool. */
import assert from 'node:assert/strict'
import { existsSync, ReadStream } from 'node:fs'
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { after, describe, it } from 'node:test'
import { buffer as bytesOf } from 'node:stream/consumers'
import { FileUpstream } from '../../src/upstream/file-upstream.js'
import { cacheDir } from '../helpers/fixtures.js'
import { eventually } from '../helpers/wait.js'

describe('FileUpstream', () => {
  const root = cacheDir('xz')
  const url = pathToFileURL(root)

  for (const syncReads of [true, false]) {
    describe(syncReads ? 'reading small files synchronously' : 'reading every file through the pool', () => {
      const upstream = new FileUpstream(url, { syncReads })

      it('returns a narinfo, a listing and NARs byte for byte, with their size and path; only the first two read on this thread', async () => {
        const names = await readdir(root)
        const nars = (await readdir(path.join(root, 'nar'))).map((n) => `nar/${n}`)
        const keys = [names.find((n) => n.endsWith('.narinfo'))!, names.find((n) => n.endsWith('.ls'))!, ...nars]
        let big = 0
        for (const key of keys) {
          const expected = await readFile(path.join(root, key))
          if (expected.length > 256 * 1024) big++
          const res = await upstream.get(key)
          assert.ok(res !== undefined, key)
          assert.equal(res.size, expected.length, key)
          assert.equal(res.file, path.join(root, key), key)
          assert.equal(res.partial, undefined, key)
          assert.equal(
            res.body instanceof ReadStream,
            !(syncReads && !key.startsWith('nar/')),
            `${key}: read through the pool`,
          )
          assert.ok((await bytesOf(res.body)).equals(expected), key)
        }
        assert.ok(big > 0, 'a NAR over 256 KiB was read')
      })

      it('answers a byte range as partial, clipped to the file', async () => {
        const key = (await readdir(root)).find((n) => n.endsWith('.narinfo'))!
        const expected = await readFile(path.join(root, key))
        const res = await upstream.get(key, undefined, { start: 5, end: 1_000_000 })
        assert.ok(res !== undefined)
        assert.equal(res.partial, true)
        assert.equal(res.size, expected.length - 5)
        assert.ok((await bytesOf(res.body)).equals(expected.subarray(5)))
      })

      it('has nothing for a missing file or a directory, and refuses a key that leaves the root', async () => {
        assert.equal(await upstream.get('00000000000000000000000000000000.narinfo'), undefined)
        assert.equal(await upstream.get('nar'), undefined)
        assert.equal(await upstream.get('nar/missing/x.nar'), undefined)
        await assert.rejects(upstream.get('../zstd/nix-cache-info'), /a URL outside the cache: it has a dot segment/)
      })
    })
  }

  describe('choosing by filesystem', () => {
    const dirs: string[] = []
    after(async () => {
      for (const dir of dirs) await rm(dir, { recursive: true, force: true })
    })

    it('reads small metadata files synchronously on tmpfs once its type is known, and never through a symlink out of the root', {
      skip: !existsSync('/dev/shm'),
    }, async () => {
      const dir = await mkdtemp('/dev/shm/unnar-file-upstream-')
      dirs.push(dir)
      await mkdir(path.join(dir, 'nar'))
      await writeFile(path.join(dir, 'x.narinfo'), 'StorePath: x\n')
      const big = Buffer.alloc(64 * 1024 + 1, 'a')
      await writeFile(path.join(dir, 'big.ls'), big)
      // The fixtures are not on /dev/shm's tmpfs.
      const elsewhere = path.join(root, (await readdir(root)).find((n) => n.endsWith('.narinfo'))!)
      await symlink(elsewhere, path.join(dir, 'linked.narinfo'))
      const upstream = new FileUpstream(pathToFileURL(dir))
      const read = async (key: string) => {
        const res = (await upstream.get(key))!
        return { pool: res.body instanceof ReadStream, bytes: await bytesOf(res.body) }
      }
      // Not known yet: the first reads go through the pool, and answer the same.
      assert.equal(upstream.syncReads, undefined)
      assert.deepEqual(await read('x.narinfo'), { pool: true, bytes: Buffer.from('StorePath: x\n') })
      await eventually(async () => upstream.syncReads === true, 'tmpfs is a local filesystem')
      assert.deepEqual(await read('x.narinfo'), { pool: false, bytes: Buffer.from('StorePath: x\n') })
      assert.deepEqual(await read('big.ls'), { pool: true, bytes: big }, 'over 64 KiB')
      await assert.rejects(upstream.get('linked.narinfo'), /a symlink leads outside the cache directory/)
      assert.equal(await upstream.get('nar'), undefined)
      assert.equal(await upstream.get('missing.ls'), undefined)
    })

    it('reads through the pool when the root cannot be examined', async () => {
      const upstream = new FileUpstream(pathToFileURL('/nonexistent-unnar-root'))
      await eventually(async () => upstream.syncReads === false, 'an unknown filesystem is treated as remote')
      assert.equal(await upstream.get('x.narinfo'), undefined)
    })
  })
})
