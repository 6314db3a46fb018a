/** Fetching one file of an uncompressed NAR by byte ranges, with the framing check that catches bad offsets. */
import assert from 'node:assert/strict'
import { Readable } from 'node:stream'
import { buffer } from 'node:stream/consumers'
import { describe, it } from 'node:test'
import { regularFileFrame } from '../../src/formats/nar-frame.js'
import { NarIndexer } from '../../src/formats/nar-indexer.js'
import { openRangedFile, probeRangedFile, RangeMismatchError, type FetchRange } from '../../src/store/ranged-file.js'
import { buildNar, directory, regular } from '../formats/nar-builder.js'

const contents = Buffer.from(Array.from({ length: 100_000 }, (_, i) => (i * 7) % 251))
const nar = Buffer.from(
  buildNar(
    directory({
      'a.txt': regular('first'),
      'b.txt': regular('other'),
      'big.bin': regular(contents),
      run: regular('12345', true),
      'z.txt': regular(''),
    }),
  ),
)
const entries = new NarIndexer().push(nar)
const nodeOf = (path: string) => {
  const entry = entries.find((e) => e.path === path)
  assert.ok(entry?.type === 'regular')
  return { type: 'regular' as const, size: entry.size, executable: entry.executable, narOffset: entry.narOffset }
}

/** An upstream over `nar` that records what was asked, in chunks of 1000 bytes. */
function upstream(source: Buffer = nar) {
  const asked: Array<[number, number]> = []
  const fetchRange: FetchRange = async (start, end) => {
    asked.push([start, end])
    const slice = source.subarray(start, end + 1)
    return Readable.from(
      Array.from({ length: Math.ceil(slice.length / 1000) }, (_, i) => slice.subarray(i * 1000, (i + 1) * 1000)),
    )
  }
  return { asked, fetchRange }
}

describe('ranged files', () => {
  it('probes the framing and the head, then fetches exactly the asked bytes', async () => {
    const { asked, fetchRange } = upstream()
    const node = nodeOf('big.bin')
    const frame = regularFileFrame('big.bin', false, node.size).length
    assert.deepEqual(await probeRangedFile(node, 'big.bin', 512, fetchRange), contents.subarray(0, 512))
    assert.deepEqual(await buffer(openRangedFile(node, 0, node.size, fetchRange)), contents)
    assert.deepEqual(await buffer(openRangedFile(node, 5000, 7001, fetchRange)), contents.subarray(5000, 7001))
    assert.deepEqual(asked, [
      [node.narOffset - frame, node.narOffset + 511],
      [node.narOffset, node.narOffset + node.size - 1],
      [node.narOffset + 5000, node.narOffset + 7000],
    ])
  })

  it('handles empty files', async () => {
    const { fetchRange } = upstream()
    assert.equal((await probeRangedFile(nodeOf('z.txt'), 'z.txt', 512, fetchRange)).length, 0)
    assert.equal((await buffer(openRangedFile(nodeOf('z.txt'), 0, 0, fetchRange))).length, 0)
  })

  it('refuses an offset, size, name or mode that does not match the NAR', async () => {
    const { fetchRange } = upstream()
    const shifted = { ...nodeOf('big.bin'), narOffset: nodeOf('big.bin').narOffset + 16 }
    await assert.rejects(probeRangedFile(shifted, 'big.bin', 512, fetchRange), RangeMismatchError)
    await assert.rejects(
      probeRangedFile({ ...nodeOf('a.txt'), size: 6 }, 'a.txt', 512, fetchRange),
      /does not frame a 6-byte file named "a.txt"/,
    )
    // A neighbour of the same size: the 8-byte length alone would have passed.
    await assert.rejects(
      probeRangedFile(nodeOf('b.txt'), 'a.txt', 512, fetchRange),
      /does not frame a 5-byte file named "a.txt"/,
    )
    await assert.rejects(
      probeRangedFile({ ...nodeOf('run'), executable: false }, 'run', 512, fetchRange),
      RangeMismatchError,
    )
    await assert.rejects(
      probeRangedFile({ ...nodeOf('a.txt'), executable: true }, 'a.txt', 512, fetchRange),
      RangeMismatchError,
    )
    assert.deepEqual(await probeRangedFile(nodeOf('run'), 'run', 512, fetchRange), Buffer.from('12345'))
    await assert.rejects(
      probeRangedFile({ ...nodeOf('a.txt'), narOffset: 40 }, 'a.txt', 512, fetchRange),
      /where no NAR can frame it/,
    )
  })

  it('probes a NAR that is a single file by its magic', async () => {
    const single = Buffer.from(buildNar(regular('just me', true)))
    const [entry] = new NarIndexer().push(single)
    assert.ok(entry?.type === 'regular')
    const node = { type: 'regular' as const, size: entry.size, executable: true, narOffset: entry.narOffset }
    assert.deepEqual(await probeRangedFile(node, undefined, 512, upstream(single).fetchRange), Buffer.from('just me'))
    await assert.rejects(probeRangedFile(node, 'x', 512, upstream(single).fetchRange), RangeMismatchError)
  })

  it('fails when the upstream range ends early', async () => {
    const node = nodeOf('big.bin')
    const { fetchRange } = upstream(nar.subarray(0, node.narOffset + 500))
    await assert.rejects(buffer(openRangedFile(node, 0, node.size, fetchRange)), /ended \d+ bytes early/)
    const { fetchRange: tiny } = upstream(nar.subarray(0, node.narOffset - 4))
    await assert.rejects(probeRangedFile(node, 'big.bin', 0, tiny), /ended 4 bytes early/)
  })
})
