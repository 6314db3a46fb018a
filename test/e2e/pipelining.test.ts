/** Clients that hang up on pipelined requests, or before the handler is done: nothing stays held, every request is logged. */
import assert from 'node:assert/strict'
import { readdir, readlink } from 'node:fs/promises'
import { connect, type Socket } from 'node:net'
import { describe, it } from 'node:test'
import { cacheDir, fixturePath } from '../helpers/fixtures.js'
import { rawRequest } from '../helpers/raw-http.js'
import { startTestUpstream } from '../helpers/test-upstream.js'
import { startUnnar } from '../helpers/unnar.js'
import { eventually, gate } from '../helpers/wait.js'

const basic = fixturePath('basic')
const tricky = fixturePath('tricky')
const BLOB = `/nix/store/${basic.hash}-${basic.name}/lib/blob.bin`

/** Sends `raw` on a new connection, reads `bytes` of the answer, then hangs up. */
function sendAndHangUp(port: number, raw: string, bytes: number): Promise<void> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(raw))
    let received = 0
    socket.on('data', (chunk) => {
      received += chunk.length
      if (received >= bytes) {
        socket.destroy()
        resolve()
      }
    })
    socket.on('error', () => resolve())
    socket.on('close', () => resolve())
  })
}

/**
 * Resolves once unnar has read what was sent before: a request on a new connection answered after
 * it (connections are accepted and read in the order they came).
 */
async function readSoFar(url: string): Promise<void> {
  assert.equal((await rawRequest(`${url}/healthz`)).status, 200)
}

/** A connection that sends `raw`; resolves once it is written. */
async function sending(port: number, raw: string): Promise<Socket> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(raw, () => resolve(socket)))
    socket.on('error', () => {})
  })
}

describe('hang-ups', () => {
  it('a connection closed with a pipelined request still queued lets go of its NAR (evicted, unlinked, no descriptor left)', async () => {
    assert.ok(basic.entries['lib/blob.bin']!.size! > 1_000_000)
    // Room for the basic NAR only: fetching another path evicts it.
    const unnar = await startUnnar([`file://${cacheDir('none')}`], {
      UNNAR_CACHE_SIZE: '3500000',
      UNNAR_MAX_NAR_SIZE: '3400000',
      UNNAR_MEMORY_CACHE_SIZE: '0',
    })
    try {
      const port = Number(new URL(unnar.url).port)
      await (await fetch(unnar.url + BLOB)).arrayBuffer()
      const get = `GET ${BLOB} HTTP/1.1\r\nHost: x\r\n\r\n`
      for (let i = 0; i < 3; i++) await sendAndHangUp(port, get + get, 100_000)
      await (await fetch(`${unnar.url}/nix/store/${tricky.hash}-${tricky.name}/chain/target.txt`)).arrayBuffer() // downloads tricky's NAR, evicting basic's
      const nars = async () => (await readdir(`${unnar.cacheDir}/nar`)).filter((name) => name.endsWith('.nar'))
      await eventually(async () => (await nars()).length === 1, 'the evicted NAR to be unlinked')
      assert.equal(unnar.narStore.entries, 1)
      const fds = await Promise.all(
        (await readdir('/proc/self/fd')).map((fd) => readlink(`/proc/self/fd/${fd}`).catch(() => '')),
      )
      assert.deepEqual(
        fds.filter((target) => target.startsWith(unnar.cacheDir) && target.includes(' (deleted)')),
        [],
      )
      const logged = unnar.logs.filter((line) => line.msg === 'request' && line.path === BLOB)
      assert.equal(logged.length, 1 + 3 * 2, 'one line per request, queued ones included')
      assert.equal(logged.filter((line) => line.aborted === true).length >= 3, true)
    } finally {
      await unnar.stop()
    }
  })

  it('pipelined requests waiting for a NAR download on a connection that closes let go of their NAR too, and are logged', async () => {
    const upstream = await startTestUpstream({ root: cacheDir('none') })
    const held = gate()
    upstream.setFault(/\.nar$/, { kind: 'hold', until: held.opened })
    const unnar = await startUnnar([upstream.url], {
      UNNAR_CACHE_SIZE: '3500000',
      UNNAR_MAX_NAR_SIZE: '3400000',
      UNNAR_MEMORY_CACHE_SIZE: '0',
    })
    try {
      const port = Number(new URL(unnar.url).port)
      // Without Accept-Encoding, like the raw requests below: the same request.
      const first = rawRequest(unnar.url + BLOB).then((res) => res.body)
      await upstream.arrived(/\.nar$/)
      // Both wait for the NAR the first request started; the second is queued behind the first.
      const get = `GET ${BLOB} HTTP/1.1\r\nHost: x\r\n\r\n`
      const socket = await sending(port, get + get)
      await readSoFar(unnar.url)
      socket.destroy()
      await readSoFar(unnar.url) // the hang-up seen before the NAR comes
      held.open()
      assert.equal((await first).length, basic.entries['lib/blob.bin']!.size)
      await (await fetch(`${unnar.url}/nix/store/${tricky.hash}-${tricky.name}/chain/target.txt`)).arrayBuffer() // evicts basic's NAR
      await eventually(
        async () => (await readdir(`${unnar.cacheDir}/nar`)).filter((name) => name.endsWith('.nar')).length === 1,
        'the evicted NAR to be unlinked',
      )
      const fds = await Promise.all(
        (await readdir('/proc/self/fd')).map((fd) => readlink(`/proc/self/fd/${fd}`).catch(() => '')),
      )
      assert.deepEqual(
        fds.filter((target) => target.startsWith(unnar.cacheDir) && target.includes(' (deleted)')),
        [],
      )
      await eventually(
        () => unnar.logs.filter((l) => l.msg === 'request' && l.path === BLOB && l.aborted === true).length === 2,
        'both logged as aborted',
      )
    } finally {
      await unnar.stop()
      await upstream.close()
    }
  })

  it('a client gone before the handler answered still gets its log line', async () => {
    const upstream = await startTestUpstream({ root: cacheDir('none') })
    const held = gate()
    upstream.setFault(/\.narinfo$/, { kind: 'hold', until: held.opened })
    const unnar = await startUnnar([upstream.url])
    try {
      const port = Number(new URL(unnar.url).port)
      const socket = await sending(port, `GET ${BLOB} HTTP/1.1\r\nHost: x\r\n\r\n`)
      await upstream.arrived(/\.narinfo$/) // the handler is at work
      socket.destroy()
      await readSoFar(unnar.url) // the hang-up seen before the narinfo comes
      held.open()
      await eventually(() => unnar.logs.some((l) => l.msg === 'request' && l.path === BLOB), 'the request line')
      assert.equal(unnar.logs.find((l) => l.msg === 'request' && l.path === BLOB)!.aborted, true)
    } finally {
      await unnar.stop()
      await upstream.close()
    }
  })
})
