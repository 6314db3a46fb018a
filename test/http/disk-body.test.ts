/** A body written from disk into the node response: its bytes, its release, and a client or a read that fails mid-way. */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { open, type FileHandle } from 'node:fs/promises'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { serve, type ServerType } from '@hono/node-server'
import { Hono } from 'hono'
import { abortOnError } from '../../src/http/abort-on-error.js'
import { DISK_BODY_READ_BYTES, diskBody } from '../../src/http/disk-body.js'
import { outgoingOf } from '../../src/http/node-env.js'
import { eventually } from '../helpers/wait.js'

/** Several reads' worth, and not a multiple of one. */
const SIZE = 3 * DISK_BODY_READ_BYTES + 12_345

describe('diskBody', () => {
  let dir: string
  let file: FileHandle
  let content: Buffer
  let server: ServerType
  let url: string
  const state = { releases: 0, reads: 0, failAt: Infinity }

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'unnar-disk-body-'))
    content = randomBytes(SIZE)
    await writeFile(path.join(dir, 'file'), content)
    file = await open(path.join(dir, 'file'))
    const app = new Hono()
    app.get('/:start/:end', (c) => {
      const start = Number(c.req.param('start'))
      const end = Number(c.req.param('end'))
      const reader = {
        readAt: async (buffer: Uint8Array, length: number, position: number) => {
          state.reads++
          if (position >= state.failAt) return 0 // a short read
          return (await file.read(buffer, 0, length, position)).bytesRead
        },
        release: () => state.releases++,
      }
      const outgoing = outgoingOf(c)!
      c.header('Content-Length', String(end - start))
      return c.body(
        abortOnError(diskBody(outgoing, reader, start, end), outgoing, () => {}),
        200,
      )
    })
    await new Promise<void>((resolve) => {
      server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve())
    })
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  })
  after(async () => {
    await new Promise((resolve) => server.close(resolve))
    await file.close()
    await rm(dir, { recursive: true, force: true })
  })

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
      const body = await get(`/${start}/${end}`)
      assert.ok(body.equals(content.subarray(start, end)), `${start}-${end}`)
      await eventually(() => state.releases === releases + 1, `${start}-${end} released`)
      assert.equal(state.releases, releases + 1, `${start}-${end} released once`)
    }
  })

  it('stops reading and releases its reader when the client goes away', async () => {
    const releases = state.releases
    await new Promise<void>((resolve) => {
      const req = http.get(`${url}/0/${SIZE}`, { agent: false }, (res) => {
        res.once('data', () => {
          req.destroy()
          resolve()
        })
      })
      req.on('error', () => {})
    })
    await eventually(() => state.releases > releases, 'the release')
    assert.equal(state.releases, releases + 1)
    const reads = state.reads
    await new Promise((resolve) => setTimeout(resolve, 50))
    assert.equal(state.reads, reads, 'no read after the release')
  })

  it('breaks the connection when a read comes up short', async () => {
    state.failAt = 2 * DISK_BODY_READ_BYTES
    try {
      const releases = state.releases
      await assert.rejects(get(`/0/${SIZE}`))
      await eventually(() => state.releases > releases, 'the release')
      assert.equal(state.releases, releases + 1)
    } finally {
      state.failAt = Infinity
    }
  })
})
