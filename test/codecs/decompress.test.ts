/** Every NAR codec, in-process and through the system binaries, against the uncompressed fixture NARs. */
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { createReadStream } from 'node:fs'
import { chmod, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { Readable, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { describe, it } from 'node:test'
import { compress as zstdCompress } from 'zstd-napi'
import { createDecoder, DecodedTooLargeError, decodeZstdBuffer, UnsupportedCompressionError } from '../../src/codecs/decompress.js'
import { findExecutable } from '../../src/codecs/process-decoder.js'
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

  it('decodes xz with the `xz` on PATH, and in-process when PATH has none', async (t) => {
    const real = findExecutable('xz')
    if (real === undefined) return t.skip('xz is not installed')
    const dir = await mkdtemp(path.join(os.tmpdir(), 'unnar-xz-'))
    const savedPath = process.env.PATH
    try {
      // An `xz` that leaves a mark, then runs the real one.
      const marker = path.join(dir, 'ran')
      await writeFile(path.join(dir, 'xz'), `#!/bin/sh\n: > '${marker}'\nexec '${real}' "$@"\n`)
      await chmod(path.join(dir, 'xz'), 0o755)
      const { compressed, nar } = (await pairs('xz'))[0]!
      process.env.PATH = dir
      assert.ok((await decode(compressed, 'xz', true)).equals(nar))
      await stat(marker)
      await rm(marker)
      process.env.PATH = ''
      assert.ok((await decode(compressed, 'xz', true)).equals(nar))
      await assert.rejects(stat(marker), 'no xz binary ran')
    } finally {
      process.env.PATH = savedPath
      await rm(dir, { recursive: true, force: true })
    }
  })

  // 64 MiB of zeros as `bzip2 -9` writes them (79 bytes), and as zstd compresses them.
  const BZIP2_BOMB = Buffer.from('QlpoOTFBWSZTWQ4J4t8BX45AAMAAAAggADCATUZCoCWpCoCXMUFZJlNZvAS1wwCidcAAwAAACCAAIKQINjKKiE0qKiE4u5IpwoSFALuD6A==', 'base64')
  const ZSTD_BOMB = Buffer.from(zstdCompress(Buffer.alloc(64 * 1024 * 1024)))
  for (const [compression, bomb] of [
    ['bzip2', BZIP2_BOMB],
    ['zstd', ZSTD_BOMB],
  ] as const) {
    it(`stops an in-process ${compression} decoder at maxOutputBytes instead of expanding a bomb whole`, async () => {
      let produced = 0
      const savedPath = process.env.PATH
      process.env.PATH = '' // no `bzip2` child: its in-process fallback
      let decoder
      try {
        decoder = createDecoder(compression, { external: false, maxOutputBytes: 100_000 })
      } finally {
        process.env.PATH = savedPath
      }
      const sink = new Writable({
        write(chunk: Buffer, _e, cb) {
          produced += chunk.length
          cb()
        },
      })
      await assert.rejects(pipeline(Readable.from([bomb]), decoder, sink), DecodedTooLargeError)
      assert.ok(produced <= 100_000, `${produced} bytes came out`)
    })
  }

  it('decodes a whole zstd buffer only up to its bound', async () => {
    const text = Buffer.from('a listing, say\n'.repeat(1000))
    assert.ok((await decodeZstdBuffer(zstdCompress(text), text.length)).equals(text))
    await assert.rejects(decodeZstdBuffer(ZSTD_BOMB, 1024 * 1024), DecodedTooLargeError)
  })

  it('runs the xz child in a process group of its own (a Ctrl-C for unnar must not kill it)', async (t) => {
    if (findExecutable('xz') === undefined) return t.skip('xz is not installed')
    const decoder = createDecoder('xz', { external: true })
    decoder.write(Buffer.from([0xfd])) // keeps it waiting for more input
    try {
      const own = execFileSync('ps', ['-o', 'pgid=', '-p', String(process.pid)], { encoding: 'utf8' }).trim()
      const children = execFileSync('ps', ['-o', 'comm=,pgid=', '--ppid', String(process.pid)], { encoding: 'utf8' })
        .split('\n')
        .map((line) => line.trim().split(/\s+/))
        .filter(([comm]) => comm === 'xz')
      assert.equal(children.length, 1)
      assert.notEqual(children[0]![1], own)
    } finally {
      decoder.destroy()
    }
  })

  it('names an unsupported compression', () => {
    assert.throws(() => createDecoder('lz4'), (err: Error) => err instanceof UnsupportedCompressionError && /"lz4"/.test(err.message))
  })
})
