/** NAR hashing in a worker thread that reads the temp file back as it is written. */
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { mkdtemp, open, rm } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { createNarHasher, WORKER_HASH_MIN_BYTES } from '../../src/store/file-hasher.js'

describe('createNarHasher', () => {
  let dir: string
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'unnar-hasher-'))
  })
  after(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  /** Writes `data` in pieces of `piece` bytes, telling the hasher after each like NarSink does. */
  async function hashWhileWriting(
    file: string,
    data: Buffer,
    piece: number,
    algorithm = 'sha256',
    alongside = true,
  ): Promise<Buffer> {
    const handle = await open(file, 'w+')
    const hasher = createNarHasher(algorithm, file, data.length, alongside)
    try {
      for (let at = 0; at < data.length; at += piece) {
        const chunk = data.subarray(at, at + piece)
        hasher.update(chunk)
        await handle.write(chunk, 0, chunk.length, at)
        hasher.written(at + chunk.length)
      }
      return await hasher.digest()
    } finally {
      await handle.close()
    }
  }

  for (const size of [1000, WORKER_HASH_MIN_BYTES + 12345]) {
    for (const algorithm of ['sha256', 'sha512']) {
      for (const alongside of [true, false]) {
        it(`gives the digest of the bytes written, ${size} bytes, ${algorithm}, hashed ${alongside ? 'while writing' : 'at the end'}`, async () => {
          const data = randomBytes(size)
          const digest = await hashWhileWriting(
            path.join(dir, `f-${size}-${algorithm}-${alongside}`),
            data,
            300_001,
            algorithm,
            alongside,
          )
          assert.deepEqual(digest, createHash(algorithm).update(data).digest())
        })
      }
    }
  }

  it('hashes several files at once without mixing them up', async () => {
    const datas = Array.from({ length: 5 }, () => randomBytes(WORKER_HASH_MIN_BYTES * 2))
    const digests = await Promise.all(
      datas.map((d, i) => hashWhileWriting(path.join(dir, `many-${i}`), d, 65536 * (i + 1))),
    )
    for (const [i, digest] of digests.entries())
      assert.deepEqual(digest, createHash('sha256').update(datas[i]!).digest())
  })

  it('fails instead of hashing bytes that were never written', async () => {
    const file = path.join(dir, 'short')
    const handle = await open(file, 'w+')
    await handle.write(randomBytes(1000), 0, 1000, 0)
    await handle.close()
    const hasher = createNarHasher('sha256', file, WORKER_HASH_MIN_BYTES, true)
    hasher.written(2000)
    await assert.rejects(hasher.digest(), /file ended at 1000/)
  })

  it('rejects a pending digest when disposed, and lets the next file be hashed', async () => {
    const file = path.join(dir, 'disposed')
    const data = randomBytes(WORKER_HASH_MIN_BYTES)
    const handle = await open(file, 'w+')
    await handle.write(data, 0, data.length, 0)
    await handle.close()
    const hasher = createNarHasher('sha256', file, data.length, true)
    hasher.written(data.length)
    hasher.dispose()
    await assert.rejects(hasher.digest(), /stopped/)
    assert.deepEqual(
      await hashWhileWriting(path.join(dir, 'after'), data, 1 << 20),
      createHash('sha256').update(data).digest(),
    )
  })
})
