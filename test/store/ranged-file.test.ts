/** Fetching one file of an uncompressed NAR by byte ranges, with the framing check that catches bad offsets. */
import assert from 'node:assert/strict'
import { Readable } from 'node:stream'
import { buffer } from 'node:stream/consumers'
import { describe, it } from 'node:test'
import { NarIndexer } from '../../src/formats/nar-indexer.js'
import { openRangedFile, probeRangedFile, RangeMismatchError, type FetchRange } from '../../src/store/ranged-file.js'
import { buildNar, directory, regular } from '../formats/nar-builder.js'

const contents = Buffer.from(Array.from({ length: 100_000 }, (_, i) => (i * 7) % 251))
const nar = Buffer.from(buildNar(directory({ 'a.txt': regular('first'), 'big.bin': regular(contents), 'z.txt': regular('') })))
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
    return Readable.from(Array.from({ length: Math.ceil(slice.length / 1000) }, (_, i) => slice.subarray(i * 1000, (i + 1) * 1000)))
  }
  return { asked, fetchRange }
}

describe('ranged files', () => {
  it('probes the length field and the head, then fetches exactly the asked bytes', async () => {
    const { asked, fetchRange } = upstream()
    const node = nodeOf('big.bin')
    assert.deepEqual(await probeRangedFile(node, 512, fetchRange), contents.subarray(0, 512))
    assert.deepEqual(await buffer(openRangedFile(node, 0, node.size, fetchRange)), contents)
    assert.deepEqual(await buffer(openRangedFile(node, 5000, 7001, fetchRange)), contents.subarray(5000, 7001))
    assert.deepEqual(asked, [
      [node.narOffset - 8, node.narOffset + 511],
      [node.narOffset, node.narOffset + node.size - 1],
      [node.narOffset + 5000, node.narOffset + 7000],
    ])
  })

  it('handles empty files', async () => {
    const { fetchRange } = upstream()
    assert.equal((await probeRangedFile(nodeOf('z.txt'), 512, fetchRange)).length, 0)
    assert.equal((await buffer(openRangedFile(nodeOf('z.txt'), 0, 0, fetchRange))).length, 0)
  })

  it('refuses an offset or size that does not match the NAR', async () => {
    const { fetchRange } = upstream()
    const shifted = { ...nodeOf('big.bin'), narOffset: nodeOf('big.bin').narOffset + 16 }
    await assert.rejects(probeRangedFile(shifted, 512, fetchRange), RangeMismatchError)
    await assert.rejects(probeRangedFile({ ...nodeOf('a.txt'), size: 6 }, 512, fetchRange), /does not frame a 6-byte file/)
  })

  it('fails when the upstream range ends early', async () => {
    const node = nodeOf('big.bin')
    const { fetchRange } = upstream(nar.subarray(0, node.narOffset + 500))
    await assert.rejects(buffer(openRangedFile(node, 0, node.size, fetchRange)), /ended \d+ bytes early/)
    const { fetchRange: tiny } = upstream(nar.subarray(0, node.narOffset - 4))
    await assert.rejects(probeRangedFile(node, 0, tiny), /ended 4 bytes early/)
  })
})
