/**
 * A body written from disk into the node response: its bytes (also with the read buffers shared
 * and reused by concurrent responses), its release, a file still arriving with its last byte held,
 * and a client or a read that fails mid-way.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { open, type FileHandle } from 'node:fs/promises'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { getRequestListener, serve, type ServerType } from '@hono/node-server'
import fc from 'fast-check'
import { Hono } from 'hono'
import { abortOnError } from '../../src/http/abort-on-error.js'
import { DISK_BODY_READ_BYTES, diskBody } from '../../src/http/disk-body.js'
import { outgoingOf } from '../../src/http/node-env.js'
import { ReadBuffers } from '../../src/http/read-buffers.js'
import type { FileReader } from '../../src/store/file-source.js'
import { getArriving } from '../helpers/raw-http.js'
import { eventually } from '../helpers/wait.js'

/** Several reads' worth, and not a multiple of one. */
const SIZE = 3 * DISK_BODY_READ_BYTES + 12_345

/** Room for two responses' buffers: a third reads into buffers of its own. */
const POOL_BYTES = 4 * DISK_BODY_READ_BYTES

/** A file still being written: bytes up to `arrived` exist, and the last byte waits for `verified`. */
class Arrival {
  arrived = 0
  #failure: Error | undefined
  #waiters: Array<() => void> = []
  verdict: Promise<void>
  settle!: { pass: () => void; fail: (err: Error) => void }
  constructor() {
    this.verdict = new Promise<void>((pass, fail) => (this.settle = { pass, fail }))
    this.verdict.catch(() => {})
  }
  grow(to: number): void {
    this.arrived = to
    for (const wake of this.#waiters.splice(0)) wake()
  }
  /** Reads waiting for bytes. */
  get waiting(): number {
    return this.#waiters.length
  }

  /** The download failed: bytes not there yet never will be. */
  break(err: Error): void {
    this.#failure = err
    for (const wake of this.#waiters.splice(0)) wake()
  }
  async waitFor(end: number): Promise<number> {
    while (this.arrived < end) {
      if (this.#failure !== undefined) throw this.#failure
      await new Promise<void>((resolve) => this.#waiters.push(resolve))
    }
    return this.arrived
  }
}

/** A reader of `content` that `arrival` (if any) makes arrive, counting reads after its release. */
function readerOf(
  content: Buffer,
  arrival: Arrival | undefined,
  counts: { releases: number; readsAfterRelease: number },
): FileReader {
  let released = false
  return {
    readAt: async (buffer, length, position) => {
      if (released) counts.readsAfterRelease++
      buffer.set(content.subarray(position, position + length))
      return Math.min(length, content.length - position)
    },
    waitFor: async (until) => (arrival === undefined ? content.length : arrival.waitFor(until)),
    beforeLastByte: arrival === undefined ? undefined : () => arrival.verdict,
    release: () => {
      released = true
      counts.releases++
    },
  }
}

describe('diskBody', () => {
  let dir: string
  let file: FileHandle
  let content: Buffer
  let server: ServerType
  let url: string
  let socketPath: string
  let unixServer: http.Server
  const state = { releases: 0, reads: 0, failAt: Infinity, slowReadEnd: 0, readsAfterRelease: 0 }
  const buffers = new ReadBuffers({ bufferBytes: DISK_BODY_READ_BYTES, maxBytes: POOL_BYTES })
  /** The file at /arriving/…, when a test sets one. */
  let arrival: Arrival | undefined

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'unnar-disk-body-'))
    content = randomBytes(SIZE)
    await writeFile(path.join(dir, 'file'), content)
    file = await open(path.join(dir, 'file'))
    const app = new Hono()
    app.get('/:kind/:start/:end', (c) => {
      const start = Number(c.req.param('start'))
      const end = Number(c.req.param('end'))
      const growing = c.req.param('kind') === 'arriving' ? arrival : undefined
      let released = false
      const reader: FileReader = {
        readAt: async (buffer: Uint8Array, length: number, position: number) => {
          state.reads++
          if (released) state.readsAfterRelease++
          if (c.req.param('kind') === 'slow') state.slowReadEnd = Math.max(state.slowReadEnd, position + length)
          if (position >= state.failAt) return 0 // a short read
          return (await file.read(buffer, 0, length, position)).bytesRead
        },
        waitFor: async (until) => (growing === undefined ? SIZE : growing.waitFor(until)),
        beforeLastByte: growing === undefined ? undefined : () => growing.verdict,
        release: () => {
          released = true
          state.releases++
        },
      }
      const outgoing = outgoingOf(c)!
      c.header('Content-Length', String(end - start))
      return c.body(
        abortOnError(diskBody(outgoing, reader, start, end, buffers), outgoing, () => {}),
        200,
      )
    })
    await new Promise<void>((resolve) => {
      server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve())
    })
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    // A unix socket takes ~200 KB before its writer waits: writes of a client that does not read stay pending.
    socketPath = path.join(dir, 'socket')
    unixServer = http.createServer(getRequestListener(app.fetch))
    await new Promise<void>((resolve) => unixServer.listen(socketPath, resolve))
  })
  after(async () => {
    await new Promise((resolve) => server.close(resolve))
    unixServer.closeAllConnections()
    await new Promise((resolve) => unixServer.close(resolve))
    await file.close()
    await rm(dir, { recursive: true, force: true })
  })

  /** A client that goes away once it has received `bytes` of the body. */
  function leaveAfter(pathname: string, bytes: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const req = http.get(url + pathname, { agent: false }, (res) => {
        let have = 0
        res.on('data', (chunk: Buffer) => {
          have += chunk.length
          if (have < bytes) return
          req.destroy()
          resolve()
        })
      })
      req.on('error', () => {})
    })
  }

  function get(pathname: string, onResponse?: (res: http.IncomingMessage) => void): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      http
        .get(url + pathname, { agent: false }, (res) => {
          onResponse?.(res)
          const chunks: Buffer[] = []
          res.on('data', (chunk: Buffer) => chunks.push(chunk))
          res.on('end', () => resolve(Buffer.concat(chunks)))
          res.on('error', reject)
          res.on('aborted', () => reject(new Error('aborted')))
        })
        .on('error', reject)
    })
  }

  it('sends the whole file and ranges of it, then releases its reader once', async () => {
    for (const [start, end] of [
      [0, SIZE],
      [1, SIZE - 1],
      [DISK_BODY_READ_BYTES - 3, 2 * DISK_BODY_READ_BYTES + 5],
      [7, 8],
      [5, 5],
    ] as const) {
      const releases = state.releases
      const body = await get(`/file/${start}/${end}`)
      assert.ok(body.equals(content.subarray(start, end)), `${start}-${end}`)
      await eventually(() => state.releases === releases + 1, `${start}-${end} released`)
      assert.equal(state.releases, releases + 1, `${start}-${end} released once`)
    }
  })

  it('stops reading and releases its reader when the client goes away', async () => {
    const releases = state.releases
    await leaveAfter(`/file/0/${SIZE}`, 1)
    await eventually(() => state.releases > releases, 'the release')
    assert.equal(state.releases, releases + 1)
  })

  it('breaks the connection when a read comes up short', async () => {
    state.failAt = 2 * DISK_BODY_READ_BYTES
    try {
      const releases = state.releases
      await assert.rejects(get(`/file/0/${SIZE}`))
      await eventually(() => state.releases > releases, 'the release')
      assert.equal(state.releases, releases + 1)
    } finally {
      state.failAt = Infinity
    }
  })

  it('shares its read buffers: concurrent responses get their own bytes, within the bound, and give the buffers back', async () => {
    // Up to six responses at once against room for two: the rest read into small buffers.
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.tuple(fc.nat(SIZE), fc.nat(SIZE)).map(([a, b]) => [Math.min(a, b), Math.max(a, b)] as const),
          { minLength: 1, maxLength: 6 },
        ),
        async (ranges) => {
          const bodies = await Promise.all(ranges.map(([start, end]) => get(`/file/${start}/${end}`)))
          for (const [i, [start, end]] of ranges.entries())
            assert.ok(bodies[i]!.equals(content.subarray(start, end)), `${start}-${end} among ${ranges.length}`)
          assert.ok(buffers.allocatedBytes <= POOL_BYTES)
          await eventually(() => buffers.freeBytes === buffers.allocatedBytes, 'every buffer back')
        },
      ),
      { numRuns: 25 },
    )
    assert.ok(buffers.allocatedBytes > 0, 'the pool was used')
  })

  it('gives its buffers back, or lets go of them, when the client goes away mid-way', async () => {
    for (let i = 0; i < 3; i++) {
      await leaveAfter(`/file/0/${SIZE}`, 1)
    }
    await eventually(() => buffers.freeBytes === buffers.allocatedBytes, 'no buffer lent')
    const body = await get(`/file/0/${SIZE}`)
    assert.ok(body.equals(content))
  })

  it('follows a file still arriving, and sends its last byte only once it is verified', async () => {
    for (const [start, end] of [
      [0, SIZE],
      [5, 1000],
    ] as const) {
      const growing = new Arrival()
      arrival = growing
      const body = getArriving(`${url}/arriving/${start}/${end}`, { agent: false })
      if (end - start > 100_000) {
        // A read waits for 64 KiB (or the range's end) before it takes what has arrived.
        growing.grow(start + 100_000)
        await eventually(() => body.received() >= 64 * 1024, 'the bytes that arrived first')
      }
      growing.grow(end)
      await eventually(() => body.received() === end - start - 1, 'all but the last byte')
      assert.equal(body.ended(), false)
      growing.settle.pass()
      await body.done
      assert.ok(body.bytes().equals(content.subarray(start, end)))
    }
    arrival = undefined
  })

  it('breaks the connection instead of sending the last byte when the verification fails', async () => {
    const growing = new Arrival()
    arrival = growing
    try {
      const body = getArriving(`${url}/arriving/0/${SIZE}`, { agent: false })
      growing.grow(SIZE)
      await eventually(() => body.received() === SIZE - 1, 'all but the last byte')
      growing.settle.fail(new Error('NarHash mismatch'))
      await assert.rejects(body.done)
      assert.ok(body.bytes().equals(content.subarray(0, SIZE - 1)))
      await eventually(() => buffers.freeBytes === buffers.allocatedBytes, 'no buffer lent')
    } finally {
      arrival = undefined
    }
  })

  it('keeps a buffer from other responses while a write of it waits for a slow client', async () => {
    // A reads 1.5 MiB into its two buffers and writes both to a client that does not read; B then
    // needs two buffers. Had A given its buffers back before node wrote them, B would read its bytes
    // into them and A's client would receive B's.
    const start = 1000
    const end = start + DISK_BODY_READ_BYTES + DISK_BODY_READ_BYTES / 2
    state.slowReadEnd = 0
    let slow: http.IncomingMessage | undefined
    const received: Buffer[] = []
    const slowBody = new Promise<Buffer>((resolve, reject) => {
      http
        .get({ socketPath, path: `/slow/${start}/${end}`, agent: false }, (res) => {
          res.pause()
          slow = res
          res.on('data', (chunk: Buffer) => received.push(chunk))
          res.on('end', () => resolve(Buffer.concat(received)))
          res.on('error', reject)
        })
        .on('error', reject)
    })
    await eventually(() => slow !== undefined && state.slowReadEnd === end, 'every byte of A read')
    // What the test needs: A's writes wait for its client (a unix socket's buffer is far smaller than 1.5 MiB).
    assert.ok(buffers.freeBytes < buffers.allocatedBytes, "A's buffers are still lent")
    const other = await get(`/file/${SIZE - 2 * DISK_BODY_READ_BYTES}/${SIZE}`)
    assert.ok(other.equals(content.subarray(SIZE - 2 * DISK_BODY_READ_BYTES)))
    slow!.resume()
    assert.ok((await slowBody).equals(content.subarray(start, end)), "A's client got A's bytes")
    await eventually(() => buffers.freeBytes === buffers.allocatedBytes, 'every buffer back')
  })

  it('lets go of its buffers and reader when the client leaves while it waits for bytes still arriving', async () => {
    const growing = new Arrival()
    arrival = growing
    try {
      const releases = state.releases
      growing.grow(200_000)
      await leaveAfter(`/arriving/0/${SIZE}`, 200_000)
      await eventually(() => state.releases > releases, 'the release')
      await eventually(() => buffers.freeBytes === buffers.allocatedBytes, 'no buffer lent')
      growing.grow(SIZE)
    } finally {
      arrival = undefined
    }
  })

  it('breaks the connection when the download fails before the range has arrived', async () => {
    const growing = new Arrival()
    arrival = growing
    try {
      const releases = state.releases
      let have = 0
      const body = new Promise<void>((resolve, reject) => {
        http
          .get(`${url}/arriving/0/${SIZE}`, { agent: false }, (res) => {
            res.on('data', (chunk: Buffer) => {
              have += chunk.length
            })
            res.on('end', resolve)
            res.on('error', reject)
            res.on('aborted', () => reject(new Error('aborted')))
          })
          .on('error', reject)
      })
      growing.grow(DISK_BODY_READ_BYTES + 100_000)
      await eventually(() => have === DISK_BODY_READ_BYTES + 100_000, 'what arrived')
      growing.break(new Error('the upstream reset the connection'))
      await assert.rejects(body)
      await eventually(() => state.releases > releases, 'the release')
      await eventually(() => buffers.freeBytes === buffers.allocatedBytes, 'no buffer lent')
    } finally {
      arrival = undefined
    }
  })

  it('never reads after its reader is released', () => {
    assert.equal(state.readsAfterRelease, 0)
  })
})

describe('diskBody before the headers are out', () => {
  // node-server may read a body before it writes the headers: that chunk is given the ordinary way.
  const content = randomBytes(1000)
  const buffers = new ReadBuffers({ bufferBytes: DISK_BODY_READ_BYTES, maxBytes: POOL_BYTES })
  const notSent = { headersSent: false } as http.ServerResponse

  it('holds the last byte of its first chunk until the verification passes, and fails with it', async () => {
    for (const passes of [true, false]) {
      const growing = new Arrival()
      const counts = { releases: 0, readsAfterRelease: 0 }
      const reader = diskBody(notSent, readerOf(content, growing, counts), 10, 500, buffers).getReader()
      growing.grow(content.length)
      const first = await reader.read()
      assert.ok(Buffer.from(first.value!).equals(content.subarray(10, 499)), 'all but the last byte')
      let settled = false
      const last = reader.read().finally(() => {
        settled = true
      })
      last.catch(() => {})
      await Promise.resolve()
      assert.equal(settled, false, 'the last byte waits')
      if (passes) {
        growing.settle.pass()
        assert.ok(Buffer.from((await last).value!).equals(content.subarray(499, 500)))
      } else {
        growing.settle.fail(new Error('NarHash mismatch'))
        await assert.rejects(last, /NarHash mismatch/)
        assert.equal(counts.releases, 1)
      }
    }
  })

  it('gives a file without a verification to wait for in one chunk', async () => {
    const counts = { releases: 0, readsAfterRelease: 0 }
    const reader = diskBody(notSent, readerOf(content, undefined, counts), 0, 700, buffers).getReader()
    const first = await reader.read()
    assert.ok(Buffer.from(first.value!).equals(content.subarray(0, 700)))
  })

  it('stops waiting for bytes still arriving when it is cancelled, and never reads after', async () => {
    const growing = new Arrival()
    const counts = { releases: 0, readsAfterRelease: 0 }
    const reader = diskBody(notSent, readerOf(content, growing, counts), 0, 700, buffers).getReader()
    const first = reader.read()
    await eventually(() => growing.waiting > 0, 'the read waiting for bytes')
    await reader.cancel()
    assert.equal(counts.releases, 1)
    growing.grow(content.length)
    await first
    // Whatever the growth set off runs in promise jobs, all done before the next turn of the loop.
    await new Promise(setImmediate)
    assert.equal(counts.readsAfterRelease, 0)
  })
})
