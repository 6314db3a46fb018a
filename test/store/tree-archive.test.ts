/**
 * Tests for src/store/tree-archive.ts and src/store/nar-export.ts with a fake NAR: archives and
 * NARs are produced only as fast as they are read, and let go of the NAR however they end.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, it } from 'node:test'
import type { ListingNode } from '../../src/formats/listing.js'
import { HeldNar } from '../../src/store/file-source.js'
import { exportNar } from '../../src/store/nar-export.js'
import type { NarSource } from '../../src/store/nar-source.js'
import { ARCHIVE_FORMATS, archiveStream } from '../../src/store/tree-archive.js'
import { eventually } from '../helpers/wait.js'

const CHUNK = 64 * 1024
/** Far more than any stream on the way may hold ahead of its reader. */
const BIG = 24 * 1024 * 1024
/** What the streams between the NAR and the client may hold: pipes, zlib, zstd, the archivers. */
const AHEAD_BOUND = 4 * 1024 * 1024

/**
 * A NAR of random bytes whose reads are pulled chunk by chunk; counts what was handed out and what
 * is open. `failAt`: reads fail once the NAR has handed out that much.
 */
function fakeNar(failAt = Number.POSITIVE_INFINITY) {
  const state = { supplied: 0, open: 0, released: 0 }
  const source = {
    readBytes: async (start: number, end: number) => new Uint8Array(end - start),
    read(start: number, end: number): ReadableStream<Uint8Array> {
      let at = start
      state.open++
      return new ReadableStream<Uint8Array>(
        {
          pull(controller) {
            if (state.supplied >= failAt) {
              state.open--
              return controller.error(new Error('disk trouble'))
            }
            const length = Math.min(CHUNK, end - at)
            // Random: compressed, the archive is then about as long as what it holds, and what the
            // client received measures what it asked for.
            controller.enqueue(randomBytes(length))
            state.supplied += length
            at += length
            if (at >= end) {
              state.open--
              controller.close()
            }
          },
          cancel() {
            state.open--
          },
        },
        { highWaterMark: 0 },
      )
    },
  } as unknown as NarSource
  const nar = new HeldNar(source, () => state.released++)
  return { nar, state }
}

const regularAt = (narOffset: number, size: number): ListingNode => ({
  type: 'regular',
  size,
  executable: false,
  narOffset,
})

function bigTree(): Extract<ListingNode, { type: 'directory' }> {
  return {
    type: 'directory',
    entries: new Map<string, ListingNode>([
      ['a-big', regularAt(0, BIG)],
      ['b-link', { type: 'symlink', target: 'a-big' }],
      ['c-empty', regularAt(BIG, 0)],
    ]),
  }
}

/**
 * Reads `body` to its end as a slow client would, letting everything else run between chunks, and
 * checks after each that the NAR was not read far ahead of it.
 */
async function drain(body: ReadableStream<Uint8Array>, state: { supplied: number }, what: string): Promise<number> {
  let received = 0
  let maxAhead = 0
  for await (const chunk of body) {
    received += chunk.length
    for (let turn = 0; turn < 4; turn++) await new Promise((resolve) => setImmediate(resolve))
    maxAhead = Math.max(maxAhead, state.supplied - received)
  }
  assert.ok(maxAhead < AHEAD_BOUND, `${what}: read ${maxAhead} bytes of the NAR ahead of the client`)
  return received
}

describe('archiveStream', () => {
  for (const format of ARCHIVE_FORMATS) {
    it(`streams a ${format} of a 24 MiB file reading the NAR only as the client reads`, async () => {
      const { nar, state } = fakeNar()
      const received = await drain(archiveStream(nar, bigTree(), 'tree', format), state, format)
      assert.equal(state.supplied, BIG)
      if (format === 'tar' || format === 'zip') assert.ok(received > BIG)
      assert.equal(state.released, 1, 'the NAR is let go once the archive ends')
    })

    it(`lets go of the NAR and its read when a ${format} download is cancelled`, async () => {
      const { nar, state } = fakeNar()
      const reader = archiveStream(nar, bigTree(), 'tree', format).getReader()
      while (state.supplied < 4 * CHUNK) await reader.read()
      await reader.cancel()
      assert.equal(state.released, 1)
      // The file being read is cancelled too (once the Node wrapper around it is destroyed).
      await eventually(() => state.open === 0, 'no NAR read left open')
    })

    it(`fails a ${format} download, not the process, when a NAR read fails`, async () => {
      const { nar, state } = fakeNar(8 * CHUNK)
      await assert.rejects(drain(archiveStream(nar, bigTree(), 'tree', format), state, format), /disk trouble/)
      assert.equal(state.released, 1)
    })
  }
})

describe('exportNar', () => {
  it('streams the NAR of a node with a 24 MiB file reading the source only as the client reads', async () => {
    const { nar, state } = fakeNar()
    const received = await drain(exportNar(nar, bigTree(), false, 0), state, 'nar')
    assert.equal(state.supplied, BIG)
    assert.ok(received > BIG)
    assert.equal(state.released, 1)
  })

  it('fails when a NAR read fails, and lets go of the NAR', async () => {
    const { nar, state } = fakeNar(8 * CHUNK)
    await assert.rejects(drain(exportNar(nar, bigTree(), false, 0), state, 'nar'), /disk trouble/)
    assert.equal(state.released, 1)
  })

  it('lets go of the NAR when cancelled', async () => {
    const { nar, state } = fakeNar()
    const reader = exportNar(nar, bigTree(), false, 0).getReader()
    while (state.supplied < 4 * CHUNK) await reader.read()
    await reader.cancel()
    assert.equal(state.released, 1)
    assert.equal(state.open, 0)
  })
})
