/** Every NAR codec, in-process and through the system binaries, against the uncompressed fixture NARs. */
import assert from 'node:assert/strict'
import { createReadStream } from 'node:fs'
import { readdir, readFile } from 'node:fs/promises'
import path from 'node:path'
import { Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { describe, it } from 'node:test'
import { createDecoder, UnsupportedCompressionError } from '../../src/codecs/decompress.js'
import { cacheDir } from '../helpers/fixtures.js'

/** The compressed NAR file and the uncompressed NAR of the same store path in the `none` cache. */
async function pairs(cache: string): Promise<Array<{ compressed: string; nar: Buffer }>> {
  const out: Array<{ compressed: string; nar: Buffer }> = []
  for (const name of (await readdir(cacheDir(cache))).filter((n) => n.endsWith('.narinfo'))) {
    const url = /^URL: (.*)$/m.exec(await readFile(path.join(cacheDir(cache), name), 'utf8'))![1]!
    const plainUrl = /^URL: (.*)$/m.exec(await readFile(path.join(cacheDir('none'), name), 'utf8'))![1]!
    out.push({ compressed: path.join(cacheDir(cache), url), nar: await readFile(path.join(cacheDir('none'), plainUrl)) })
  }
  return out
}

async function decode(file: string, compression: string, external: boolean): Promise<Buffer> {
  const chunks: Buffer[] = []
  await pipeline(
    createReadStream(file, { highWaterMark: 16 * 1024 }),
    createDecoder(compression, { external }),
    new Writable({
      write(chunk: Buffer, _e, cb) {
        chunks.push(chunk)
        cb()
      },
    }),
  )
  return Buffer.concat(chunks)
}

describe('createDecoder', () => {
  for (const compression of ['xz', 'zstd', 'bzip2', 'br', 'none']) {
    for (const external of [true, false]) {
      it(`decodes every ${compression} fixture NAR${external ? '' : ' in-process'}`, async () => {
        for (const { compressed, nar } of await pairs(compression)) {
          assert.ok((await decode(compressed, compression, external)).equals(nar), compressed)
        }
      })
    }
  }

  for (const compression of ['xz', 'zstd', 'bzip2', 'br', 'gzip']) {
    for (const external of [true, false]) {
      it(`fails on corrupt ${compression} data${external ? '' : ' in-process'} instead of yielding bytes silently`, async () => {
        const garbage = Buffer.from('this is not compressed data at all, not even a little bit'.repeat(20))
        const chunks: Buffer[] = []
        await assert.rejects(
          pipeline(
            [garbage],
            createDecoder(compression, { external }),
            new Writable({
              write(chunk: Buffer, _e, cb) {
                chunks.push(chunk)
                cb()
              },
            }),
          ),
        )
      })
    }
  }

  it('names an unsupported compression', () => {
    assert.throws(() => createDecoder('lz4'), (err: Error) => err instanceof UnsupportedCompressionError && /"lz4"/.test(err.message))
  })
})
