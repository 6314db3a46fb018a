/** file:// upstreams: files of the cache directory byte for byte, ranges clipped, nothing outside it. */
import assert from 'node:assert/strict'
import { readdir, readFile } from 'node:fs/promises'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { describe, it } from 'node:test'
import { buffer as bytesOf } from 'node:stream/consumers'
import { FileUpstream } from '../../src/upstream/file-upstream.js'
import { cacheDir } from '../helpers/fixtures.js'

describe('FileUpstream', () => {
  const root = cacheDir('xz')
  const upstream = new FileUpstream(pathToFileURL(root))

  it('returns a narinfo, a listing and NARs byte for byte, with their size and path', async () => {
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
      assert.ok((await bytesOf(res.body)).equals(expected), key)
    }
    assert.ok(big > 0, 'a NAR over 256 KiB was read')
  })

  it('reads a small file into buffers of its size, not of the read-ahead', async () => {
    const key = (await readdir(root)).find((n) => n.endsWith('.narinfo'))!
    const size = (await readFile(path.join(root, key))).length
    // node's file streams take their read buffers from Buffer.allocUnsafeSlow.
    const allocations: number[] = []
    const allocUnsafeSlow = Buffer.allocUnsafeSlow
    Buffer.allocUnsafeSlow = (bytes: number) => {
      allocations.push(bytes)
      return allocUnsafeSlow(bytes)
    }
    try {
      const res = await upstream.get(key)
      assert.equal((await bytesOf(res!.body)).length, size)
    } finally {
      Buffer.allocUnsafeSlow = allocUnsafeSlow
    }
    assert.ok(allocations.length > 0, 'the read was seen')
    const total = allocations.reduce((a, b) => a + b, 0)
    assert.ok(total <= size, `${total} bytes of read buffers for a ${size}-byte file`)
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

  it('has nothing when the root itself is missing', async () => {
    const missing = new FileUpstream(pathToFileURL('/nonexistent-unnar-root'))
    assert.equal(await missing.get('x.narinfo'), undefined)
  })
})
