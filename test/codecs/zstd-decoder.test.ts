/** The in-process zstd decoder: contexts reused across streams, whatever became of the stream before. */
import assert from 'node:assert/strict'
import { readdir, readFile } from 'node:fs/promises'
import path from 'node:path'
import { describe, it } from 'node:test'
import fc from 'fast-check'
import { DecodedTooLargeError } from '../../src/codecs/decompress.js'
import { ZstdContexts, ZstdDecoder } from '../../src/codecs/zstd-decoder.js'
import { decodeThrough, piecesOf } from '../helpers/decode.js'
import { cacheDir } from '../helpers/fixtures.js'

/** The fixture NARs as Nix compressed them with zstd (2 MiB windows, no content size), with the plain NAR. */
async function zstdNars(): Promise<Array<{ compressed: Buffer; nar: Buffer }>> {
  const out: Array<{ compressed: Buffer; nar: Buffer }> = []
  for (const name of (await readdir(cacheDir('zstd'))).filter((n) => n.endsWith('.narinfo'))) {
    const url = (file: string) => /^URL: (.*)$/m.exec(file)![1]!
    const zstdInfo = await readFile(path.join(cacheDir('zstd'), name), 'utf8')
    const plainInfo = await readFile(path.join(cacheDir('none'), name), 'utf8')
    out.push({
      compressed: await readFile(path.join(cacheDir('zstd'), url(zstdInfo))),
      nar: await readFile(path.join(cacheDir('none'), url(plainInfo))),
    })
  }
  return out.sort((a, b) => a.nar.length - b.nar.length)
}

type Fate = 'whole' | 'truncated' | 'abandoned' | 'too large'

/** Decodes `nar` through a decoder of `contexts`, meeting `fate`; throws if the outcome is not the expected one. */
async function decodeWithFate(
  contexts: ZstdContexts,
  { compressed, nar }: { compressed: Buffer; nar: Buffer },
  fate: Fate,
  pieceBytes: number,
): Promise<void> {
  switch (fate) {
    case 'whole': {
      const out = await decodeThrough(piecesOf(compressed, pieceBytes), new ZstdDecoder(nar.length, contexts))
      assert.ok(out.equals(nar), `decoded ${out.length} bytes, not the ${nar.length}-byte NAR`)
      return
    }
    case 'truncated':
      await assert.rejects(
        decodeThrough(
          piecesOf(compressed.subarray(0, compressed.length - 1), pieceBytes),
          new ZstdDecoder(nar.length, contexts),
        ),
        /middle of a frame/,
      )
      return
    case 'too large':
      await assert.rejects(
        decodeThrough(piecesOf(compressed, pieceBytes), new ZstdDecoder(nar.length - 1, contexts)),
        DecodedTooLargeError,
      )
      return
    case 'abandoned': {
      // Left in the middle of its frame: the next stream on this context must not see that frame.
      const decoder = new ZstdDecoder(nar.length, contexts)
      decoder.resume()
      await new Promise<void>((resolve, reject) =>
        decoder.write(compressed.subarray(0, Math.ceil(compressed.length / 2)), (err) =>
          err ? reject(err) : resolve(),
        ),
      )
      decoder.destroy()
      return
    }
  }
}

describe('ZstdDecoder', { timeout: 60_000 }, () => {
  it('decodes one stream after another on a single context', async () => {
    const nars = await zstdNars()
    const contexts = new ZstdContexts(4)
    for (let round = 0; round < 3; round++)
      for (const nar of nars) await decodeWithFate(contexts, nar, 'whole', 64 * 1024)
    assert.equal(contexts.created, 1)
  })

  it('keeps no more contexts than its spares once more streams than that have decoded at once', async () => {
    const nars = await zstdNars()
    const contexts = new ZstdContexts(1)
    const three = () => Promise.all(nars.slice(0, 3).map((nar) => decodeWithFate(contexts, nar, 'whole', 64 * 1024)))
    await three()
    assert.equal(contexts.created, 3)
    // One was kept; the next three need two more.
    await three()
    assert.equal(contexts.created, 5)
  })

  it('does not use a context after a listener of its output destroyed the stream', async () => {
    // Destroying from a 'data' listener gives the context back in the middle of push(); the rest
    // of the chunk must not be decoded into it, or the next stream starts inside this one's frame.
    // The first NAR decodes to more than one call's 128 KiB, so its chunk goes on after the first push.
    const nars = (await zstdNars()).filter((n) => n.nar.length < 1024 * 1024)
    const [second, first] = [nars[0]!, nars.at(-1)!]
    assert.ok(first.nar.length > 128 * 1024, 'a fixture NAR over 128 KiB')
    const contexts = new ZstdContexts(1)
    const decoder = new ZstdDecoder(first.nar.length, contexts)
    decoder.on('data', () => decoder.destroy())
    decoder.write(first.compressed)
    await new Promise((resolve) => decoder.on('close', resolve))
    await decodeWithFate(contexts, second, 'whole', 64 * 1024)
    assert.equal(contexts.created, 1)
  })

  it('gives the decoder no room for more than one byte past its bound', async () => {
    const { compressed, nar } = (await zstdNars()).filter((n) => n.nar.length < 1024 * 1024).at(-1)!
    const max = Math.floor(nar.length / 3)
    let decoded = 0
    // The contexts' decodes, counted where the native decoder writes.
    class Counted extends ZstdContexts {
      override take() {
        const slot = super.take()
        const context = slot.context
        const counted = Object.create(context) as typeof context
        counted.decompressStream = (dst, src) => {
          const result = context.decompressStream(dst, src)
          decoded += result[1]
          return result
        }
        counted.reset = (how) => context.reset(how)
        return { output: slot.output, context: counted }
      }
    }
    await assert.rejects(
      decodeThrough(piecesOf(compressed), new ZstdDecoder(max, new Counted(1))),
      DecodedTooLargeError,
    )
    assert.ok(decoded <= max + 1, `decoded ${decoded} bytes for a bound of ${max}`)
  })

  it('gives every stream exactly its NAR, whatever the streams on the same contexts met before or beside it', async () => {
    const nars = (await zstdNars()).filter((n) => n.nar.length < 1024 * 1024)
    assert.ok(nars.length >= 3, 'fixture NARs')
    const step = fc.record({
      nar: fc.integer({ min: 0, max: nars.length - 1 }),
      fate: fc.constantFrom<Fate>('whole', 'whole', 'truncated', 'abandoned', 'too large'),
      pieceBytes: fc.constantFrom(1000, 16 * 1024, 64 * 1024),
    })
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.array(step, { minLength: 1, maxLength: 2 }), { minLength: 1, maxLength: 8 }),
        async (batches) => {
          const contexts = new ZstdContexts(2)
          let most = 0
          for (const batch of batches) {
            // Each batch decodes at once, so contexts are taken and given back interleaved.
            most = Math.max(most, batch.length)
            await Promise.all(batch.map((s) => decodeWithFate(contexts, nars[s.nar]!, s.fate, s.pieceBytes)))
          }
          // Kept contexts are used again: no more are made than ever decode at once.
          assert.ok(contexts.created <= most, `${contexts.created} contexts for batches of ${most}`)
        },
      ),
      { numRuns: 30 },
    )
  })

  it('pushes chunks that hold no more memory than their bytes, however small the pieces of input', async () => {
    const nars = await zstdNars()
    const { compressed, nar } = nars.filter((n) => n.nar.length < 1024 * 1024).at(-1)!
    const decoder = new ZstdDecoder(nar.length, new ZstdContexts(1))
    const held: number[] = []
    const out = await decodeThrough(
      piecesOf(compressed, 100),
      decoder.on('data', (chunk: Buffer) => held.push(chunk.buffer.byteLength - chunk.length)),
    )
    assert.ok(out.equals(nar))
    // Chunks under 4 KiB come from node's shared 8 KiB pool; bigger ones are exactly their size.
    for (const extra of held) assert.ok(extra <= 8192, `a chunk holding ${extra} bytes beyond its own`)
  })
})
