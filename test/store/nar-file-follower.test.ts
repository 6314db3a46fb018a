/**
 * Following a NAR that another writer (a decoder program, here the test itself) puts into the temp
 * file: progress, entries as they arrive, size and format errors, and the decoder's own failure.
 */
import assert from 'node:assert/strict'
import { mkdtemp, open, readFile, rm, type FileHandle } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before, describe, it } from 'node:test'
import type { FileDecoder } from '../../src/codecs/file-decoder.js'
import { NarIndexer, type NarEntry } from '../../src/formats/nar-indexer.js'
import type { NarHasher } from '../../src/store/file-hasher.js'
import { DiskError, NarVerificationError } from '../../src/store/nar-errors.js'
import { followDecodedFile } from '../../src/store/nar-file-follower.js'
import { uncompressedNars } from '../formats/fixtures.js'
import { buildNar, directory, regular } from '../formats/nar-builder.js'
import { eventually } from '../helpers/wait.js'

/** Bytes this process has read through read(2) and friends so far (Linux). */
async function bytesRead(): Promise<number | undefined> {
  const io = await readFile('/proc/self/io', 'utf8').catch(() => undefined)
  const rchar = io === undefined ? undefined : /^rchar: (\d+)$/m.exec(io)
  return rchar ? Number(rchar[1]) : undefined
}

/** A decoder whose output the test writes, piece by piece, and whose exit the test decides. */
class FakeDecoder implements FileDecoder {
  readonly exited: Promise<void>
  killed = false
  #settle!: { resolve: () => void; reject: (err: Error) => void }
  constructor() {
    this.exited = new Promise<void>((resolve, reject) => (this.#settle = { resolve, reject }))
    this.exited.catch(() => {})
  }
  exit(err?: Error): void {
    if (err === undefined) this.#settle.resolve()
    else this.#settle.reject(err)
  }
  kill(): void {
    this.killed = true
  }
  /** As the real one: the program is stopped, and that counts as a success. */
  finish(): void {
    this.exit()
  }
}

const hasher: NarHasher = { update() {}, written() {}, digest: async () => Buffer.alloc(32), dispose() {} }

describe('followDecodedFile', { timeout: 30_000 }, () => {
  let dir: string
  let n = 0
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'unnar-follower-'))
  })
  after(() => rm(dir, { recursive: true, force: true }))

  /** The biggest fixture NAR: several MiB, files before and after its big blob. */
  const { nar } = uncompressedNars().sort((a, b) => b.nar.length - a.nar.length)[0]!
  const expected = (() => {
    const indexer = new NarIndexer()
    const entries = indexer.push(nar)
    indexer.end()
    return entries
  })()

  type Progress = Array<{ bytes: number; entries: readonly NarEntry[] }>
  const reported = (progress: Progress) => progress.reduce((sum, p) => sum + p.bytes, 0)

  async function follow(
    narSize: number,
    write: (file: FileHandle, decoder: FakeDecoder, progress: Progress) => Promise<void>,
    signal = new AbortController().signal,
  ) {
    const file = await open(path.join(dir, `nar-${++n}`), 'w+')
    const decoder = new FakeDecoder()
    const progress: Progress = []
    const indexer = new NarIndexer()
    try {
      const following = followDecodedFile({
        file,
        decoder,
        indexer,
        hasher,
        narSize,
        upstream: 'test-upstream',
        signal,
        onWritten: (bytes, entries) => progress.push({ bytes, entries }),
      })
      const writing = write(file, decoder, progress)
      const outcome = await following.then(
        (size) => ({ size }),
        (err: Error) => ({ err }),
      )
      await writing
      return { outcome, progress, indexer }
    } finally {
      await file.close()
    }
  }

  it('reports the bytes as they land and each entry once its header is on disk, then the size once the decoder exits', async () => {
    const { outcome, progress, indexer } = await follow(nar.length, async (file, decoder, progress) => {
      const step = Math.ceil(nar.length / 5)
      for (let at = 0; at < nar.length; at += step) {
        const end = Math.min(nar.length, at + step)
        await file.write(nar, at, end - at, at)
        await eventually(() => reported(progress) === end, `bytes up to ${end} reported`)
      }
      decoder.exit()
    })
    assert.deepEqual(outcome, { size: nar.length })
    assert.equal(indexer.position, nar.length)
    assert.equal(
      progress.reduce((sum, p) => sum + p.bytes, 0),
      nar.length,
      'every byte reported, once',
    )
    assert.ok(progress.filter((p) => p.bytes > 0).length >= 5, 'in steps, as the file grew')
    assert.deepEqual(
      progress.flatMap((p) => p.entries),
      expected,
    )
    // Bytes on disk when each regular file's entry was reported.
    let onDisk = 0
    for (const p of progress) {
      onDisk += p.bytes
      for (const entry of p.entries)
        if (entry.type === 'regular')
          assert.ok(onDisk > entry.narOffset - 8, `${entry.path}: reported before its header was on disk`)
    }
    const first = expected.find((e) => e.type === 'regular')!
    const firstAt = progress.findIndex((p) => p.entries.includes(first))
    const bytesThen = progress.slice(0, firstAt + 1).reduce((sum, p) => sum + p.bytes, 0)
    assert.ok(bytesThen < nar.length, 'the first file is known long before the NAR is complete')
  })

  it('reads back the headers only: a 64 MiB file in the NAR is skipped, not read', async (t) => {
    const before = await bytesRead()
    if (before === undefined) return t.skip('no /proc/self/io here')
    const big = buildNar(
      directory([
        ['a.txt', regular('first')],
        ['big.bin', regular(new Uint8Array(64 * 1024 * 1024))],
        ['z.txt', regular('last')],
      ]),
    )
    const { outcome, progress } = await follow(big.length, async (file, decoder) => {
      await file.write(big, 0, big.length, 0)
      decoder.exit()
    })
    const read = (await bytesRead())! - before
    assert.deepEqual(outcome, { size: big.length })
    assert.deepEqual(
      progress.flatMap((p) => p.entries).map((e) => e.path),
      ['', 'a.txt', 'big.bin', 'z.txt'],
    )
    assert.ok(read < 1024 * 1024, `${read} bytes read back from a ${big.length}-byte NAR`)
  })

  it('refuses a file that grows past NarSize, without waiting for the decoder', async () => {
    const { outcome } = await follow(nar.length - 8, async (file) => {
      await file.write(nar, 0, nar.length, 0)
    })
    assert.ok('err' in outcome && outcome.err instanceof NarVerificationError, JSON.stringify(outcome))
    assert.match(outcome.err.message, new RegExp(`^test-upstream: NAR is larger than its NarSize ${nar.length - 8}$`))
  })

  it('refuses bytes that are not a NAR as soon as they are on disk', async () => {
    const bad = Buffer.from(nar)
    bad.write('not-a-nar', 8)
    const { outcome } = await follow(nar.length, async (file) => {
      await file.write(bad, 0, 4096, 0)
    })
    assert.ok('err' in outcome && outcome.err instanceof NarVerificationError, JSON.stringify(outcome))
    assert.match(outcome.err.message, /doesn't look like a Nix archive/)
  })

  it('fails with the decoder’s error, even while the file keeps its bytes', async () => {
    const broken = new Error('zstd failed (exit 1): Data corruption detected')
    const { outcome } = await follow(nar.length, async (file, decoder, progress) => {
      await file.write(nar, 0, 1000, 0)
      await eventually(() => reported(progress) === 1000, 'the bytes reported')
      decoder.exit(broken)
    })
    assert.deepEqual(outcome, { err: broken })
  })

  it('stops waiting when aborted', async () => {
    const controller = new AbortController()
    const reason = new Error('shutting down')
    const { outcome } = await follow(
      nar.length,
      async (file) => {
        await file.write(nar, 0, 1000, 0)
        controller.abort(reason)
      },
      controller.signal,
    )
    assert.ok(
      'err' in outcome &&
        (outcome.err === reason || (outcome.err.name === 'AbortError' && outcome.err.cause === reason)),
      String((outcome as { err?: Error }).err),
    )
  })

  it('says the disk failed when the file cannot be looked at', async () => {
    const file = await open(path.join(dir, 'closed'), 'w+')
    await file.close() // no descriptor any more: every stat fails
    const outcome = await followDecodedFile({
      file,
      decoder: new FakeDecoder(),
      indexer: new NarIndexer(),
      hasher,
      narSize: 100,
      upstream: 'u',
      signal: new AbortController().signal,
      onWritten: () => {},
    }).then(
      () => undefined,
      (err: Error) => err,
    )
    assert.ok(outcome instanceof DiskError, String(outcome))
    assert.match(outcome.message, /^watching the NAR being written: [A-Z_]+$/)
  })

  it('stops the decoder once the whole NAR is on disk, without waiting for it to exit by itself', async () => {
    const { outcome } = await follow(nar.length, async (file) => {
      await file.write(nar, 0, nar.length, 0) // and the decoder never exits on its own
    })
    assert.deepEqual(outcome, { size: nar.length })
  })
})
