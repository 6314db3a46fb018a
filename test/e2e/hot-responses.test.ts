/** The hot-response lane in front of the app: the same answers as the app, only for requests it may repeat. */
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import http from 'node:http'
import { after, before, describe, it } from 'node:test'
import { cacheDir, fixturePath } from '../helpers/fixtures.js'
import { rawRequest, type RawResponse } from '../helpers/raw-http.js'
import { startTestUpstream, type TestUpstream } from '../helpers/test-upstream.js'
import { elapse, eventually, gate, within } from '../helpers/wait.js'
import { startUnnar, type TestUnnar } from '../helpers/unnar.js'

const basic = fixturePath('basic')
const basicBase = `${basic.hash}-${basic.name}`
const README = 'share/doc/README'
const HELLO = 'bin/hello'

/** The value of an unlabelled metric. */
async function metric(unnar: TestUnnar, name: string): Promise<number> {
  const text = await (await fetch(`${unnar.url}/metrics`)).text()
  const line = text.split('\n').find((l) => l.startsWith(`${name} `))
  return Number(line?.split(' ')[1] ?? NaN)
}

function hotAnswers(unnar: TestUnnar): Promise<number> {
  return metric(unnar, 'unnar_hot_responses_total')
}

/** The NAR of `basic` committed (verified, kept) in the background after its first answer. */
function narCached(unnar: TestUnnar): Promise<unknown> {
  return unnar.waitForLog(
    (l) => l.msg === 'NAR cached' && String(l.storePath).includes(basic.hash),
    'NAR cached (basic)',
  )
}

const NAR = /\.nar(\.zst)?$/

/**
 * Sends `requests` while the upstream holds the NAR, and opens it once unnar has read them all: the
 * upstream saw the first one's NAR request, and a later request on a fresh connection was answered
 * (connections are accepted and read in the order they came).
 */
async function whileNarHeld<T>(
  unnar: TestUnnar,
  upstream: TestUpstream,
  requests: (sent: () => void) => Array<Promise<T>>,
): Promise<T[]> {
  const held = gate()
  upstream.setFault(NAR, { kind: 'hold', until: held.opened })
  let count = 0
  let all!: () => void
  const allSent = new Promise<void>((resolve) => (all = resolve))
  const pending = requests(() => {
    if (++count === pending.length) all()
  })
  const answers = Promise.all(pending)
  answers.catch(() => {})
  try {
    await upstream.arrived(NAR)
    await within(allSent, 'every request sent')
    assert.equal((await rawRequest(`${unnar.url}/healthz`)).status, 200)
  } finally {
    held.open()
  }
  return answers
}

function sha256(body: Buffer): string {
  return createHash('sha256').update(body).digest('hex')
}

/** Headers that legitimately differ between two answers to the same request. */
function stable(res: RawResponse): Record<string, unknown> {
  const { date: _date, 'x-request-id': _id, ...rest } = res.headers
  return rest
}

describe('hot responses', { timeout: 60_000 }, () => {
  let upstream: TestUpstream
  let unnar: TestUnnar
  before(async () => {
    upstream = await startTestUpstream({ root: cacheDir('zstd') })
    unnar = await startUnnar([upstream.url])
  })
  after(async () => {
    await unnar.stop()
    await upstream.close()
  })

  /** Requests `rel` until the lane answers; returns the last answer of the app (if any) and the lane's first. */
  async function warm(
    rel: string,
    headers: Record<string, string> = {},
  ): Promise<{ app: RawResponse | undefined; lane: RawResponse }> {
    let previous: RawResponse | undefined
    // Once the NAR is kept: the app reads the file (and keeps it), answers from the kept file (and
    // the lane keeps that answer), then the lane answers.
    for (let i = 0; i < 4; i++) {
      const count = await hotAnswers(unnar)
      const res = await rawRequest(unnar.store(`${basicBase}/${rel}`), { headers })
      if ((await hotAnswers(unnar)) > count) return { app: previous, lane: res }
      previous = res
      await narCached(unnar)
    }
    throw new Error(`the lane never answered ${rel}`)
  }

  it('answers a repeated GET with exactly the status, headers and bytes the app gave', async () => {
    for (const rel of [README, HELLO]) {
      const { app, lane } = await warm(rel)
      assert.ok(app !== undefined, 'the first answer came from the app')
      assert.equal(lane.status, 200)
      assert.deepEqual(stable(lane), stable(app), rel)
      assert.equal(sha256(lane.body), basic.entries[rel]!.sha256)
      assert.equal(lane.headers['content-length'], String(basic.entries[rel]!.size))
      assert.match(String(lane.headers['x-request-id']), /^[0-9a-f]{8}-[0-9a-z]+$/)
      assert.equal(lane.headers['nar-executable'], rel === HELLO ? '1' : undefined)
    }
  })

  it('echoes the client request id and logs and counts each answer like the app does', async () => {
    await warm(README)
    const count = await hotAnswers(unnar)
    const res = await rawRequest(unnar.store(`${basicBase}/${README}`), { headers: { 'X-Request-Id': 'lane-check-1' } })
    assert.equal(await hotAnswers(unnar), count + 1)
    assert.equal(res.headers['x-request-id'], 'lane-check-1')
    const line = unnar.logs.find((l) => l.msg === 'request' && l.id === 'lane-check-1')
    assert.ok(line !== undefined, 'a request line')
    assert.equal(line.status, 200)
    assert.equal(line.method, 'GET')
    assert.equal(line.path, `/nix/store/${basicBase}/${README}`)
    assert.equal(line.cache, 'hit')
    assert.equal(line.upstream, upstream.url)
    // Bytes on the wire: the body and the status line and headers.
    assert.ok(
      typeof line.bytes === 'number' && line.bytes > 1117 + 200 && line.bytes < 1117 + 1000,
      `bytes ${String(line.bytes)}`,
    )
    const metrics = await (await fetch(`${unnar.url}/metrics`)).text()
    assert.match(metrics, /unnar_http_requests_total\{route="store",status="200"\} \d+/)
  })

  it('leaves ranges, conditional requests, HEAD, other encodings and other queries to the app', async () => {
    const { lane } = await warm(README)
    const etag = String(lane.headers.etag)
    const url = unnar.store(`${basicBase}/${README}`)
    const count = await hotAnswers(unnar)

    const range = await rawRequest(url, { headers: { Range: 'bytes=0-9' } })
    assert.equal(range.status, 206)
    assert.equal(range.body.length, 10)
    assert.equal(range.headers['content-range'], `bytes 0-9/1117`)

    const notModified = await rawRequest(url, { headers: { 'If-None-Match': etag } })
    assert.equal(notModified.status, 304)

    const head = await rawRequest(url, { method: 'HEAD' })
    assert.equal(head.status, 200)
    assert.equal(head.body.length, 0)

    const gzip = await rawRequest(url, { headers: { 'Accept-Encoding': 'gzip' } })
    assert.equal(gzip.headers['content-encoding'], 'gzip')
    assert.notEqual(gzip.headers.etag, etag)

    const download = await rawRequest(`${url}?download`)
    assert.match(download.headers['content-disposition'] ?? '', /^attachment; filename="README"/)

    assert.equal(await hotAnswers(unnar), count, 'none of these came from the lane')
    // Compressed answers are never kept: a second gzip request is the app's again.
    await rawRequest(url, { headers: { 'Accept-Encoding': 'gzip' } })
    await rawRequest(url, { headers: { 'Accept-Encoding': 'gzip' } })
    assert.equal(await hotAnswers(unnar), count)
  })

  it('answers a hot query URL with its own headers (?download)', async () => {
    const { app, lane } = await warm(`${README}?download=notes.txt`)
    assert.ok(app !== undefined, 'the first answer came from the app')
    assert.deepEqual(stable(lane), stable(app))
    assert.match(lane.headers['content-disposition'] ?? '', /filename="notes\.txt"/)
  })
})

describe('hot responses in subdomain mode', { timeout: 60_000 }, () => {
  it('keys answers by Host: a site request never gets a /nix/store answer', async () => {
    const upstream = await startTestUpstream({ root: cacheDir('zstd') })
    const unnar = await startUnnar([upstream.url], { DOMAIN: 'nix.test' })
    try {
      const path = `/nix/store/${basicBase}/${README}`
      const url = unnar.url + path
      let store = await rawRequest(url)
      await narCached(unnar)
      for (let i = 0; i < 3; i++) store = await rawRequest(url)
      assert.ok((await hotAnswers(unnar)) > 0, 'the lane answers /nix/store requests')
      assert.equal(String(store.headers['content-security-policy']).startsWith('sandbox'), true)
      // On the store path's own origin the URL path is a path inside it: no such file there.
      const site = await rawRequest(url, { headers: { Host: `${basic.hash}.nix.test` } })
      assert.equal(site.status, 404)
    } finally {
      await unnar.stop()
      await upstream.close()
    }
  })
})

describe('requests for a file of a cold NAR', { timeout: 60_000 }, () => {
  it('in strict mode each is read from the one download, its last byte held until the NAR is verified', async () => {
    const upstream = await startTestUpstream({ root: cacheDir('zstd') })
    const unnar = await startUnnar([upstream.url])
    try {
      const answers = await whileNarHeld(unnar, upstream, (sent) =>
        Array.from({ length: 10 }, () => rawRequest(unnar.store(`${basicBase}/${README}`), { sent })),
      )
      for (const res of answers) {
        assert.equal(res.status, 200)
        assert.equal(sha256(res.body), basic.entries[README]!.sha256)
      }
      assert.equal(upstream.count(/\.nar(\.zst)?$/), 1)
      await eventually(
        () => unnar.logs.filter((l) => l.msg === 'request' && l.verification === 'held').length === 10,
        'ten answers held back',
      )
    } finally {
      await unnar.stop()
      await upstream.close()
    }
  })
})

describe('requests for a file of a cold NAR when the first client leaves', { timeout: 60_000 }, () => {
  it('keep the NAR it started downloading, even one too big to keep: one NAR download', async () => {
    const upstream = await startTestUpstream({ root: cacheDir('zstd') })
    const held = gate()
    upstream.setFault(NAR, { kind: 'hold', until: held.opened })
    const unnar = await startUnnar([upstream.url], { UNNAR_MAX_NAR_SIZE: '1000' })
    try {
      const url = unnar.store(`${basicBase}/${README}`)
      const leaving = http.get(url, () => {})
      leaving.on('error', () => {})
      await upstream.arrived(NAR)
      let sent = 0
      const rest = Array.from({ length: 3 }, () => rawRequest(url, { sent: () => sent++ }))
      await eventually(() => sent === 3, 'three identical requests sent')
      await eventually(
        async () => (await metric(unnar, 'unnar_nar_download_waiters_total')) === 3,
        'the three joining the download',
      )
      leaving.destroy()
      // Time is the subject here: a download nobody reads is abandoned after a second (UNUSED_GRACE_MS).
      await elapse(1200)
      assert.equal(
        upstream.requests.find((r) => NAR.test(r.path))?.aborted,
        undefined,
        'the download was not abandoned',
      )
      held.open()
      for (const res of await Promise.all(rest)) {
        assert.equal(res.status, 200)
        assert.equal(sha256(res.body), basic.entries[README]!.sha256)
      }
      assert.equal(upstream.count(/\.nar(\.zst)?$/), 1, 'the download the first client started was not abandoned')
    } finally {
      await unnar.stop()
      await upstream.close()
    }
  })
})

describe('hot files in memory (UNNAR_MEMORY_CACHE_SIZE)', { timeout: 60_000 }, () => {
  const BLOB = 'lib/blob.bin'

  async function cacheHits(unnar: TestUnnar): Promise<number> {
    const text = await (await fetch(`${unnar.url}/metrics`)).text()
    return Number(
      text
        .split('\n')
        .find((l) => l.startsWith('unnar_cache_hits_total '))
        ?.split(' ')[1] ?? NaN,
    )
  }

  /**
   * Asks for the 3 MB blob three times, then once more and for a range: how often those two opened
   * the cached NAR (a file in memory needs no NAR at all).
   */
  async function narOpensWhenHot(
    env: Record<string, string>,
    expectHot: boolean,
  ): Promise<{ opens: number; body: Buffer; range: RawResponse }> {
    const upstream = await startTestUpstream({ root: cacheDir('zstd') })
    const unnar = await startUnnar([upstream.url], env)
    try {
      const url = unnar.store(`${basicBase}/${BLOB}`)
      for (let i = 0; i < 3; i++) {
        const res = await rawRequest(url)
        assert.equal(sha256(res.body), basic.entries[BLOB]!.sha256)
        // The first answer's NAR is committed in the background; the next two are read from it.
        if (i === 0) await narCached(unnar)
      }
      if (expectHot) {
        // The third answer's copy is read into memory in the background: a range of a file in
        // memory opens no NAR (and asking for a range admits nothing).
        await eventually(async () => {
          const opened = await cacheHits(unnar)
          await rawRequest(url, { headers: { Range: 'bytes=0-0' } })
          return (await cacheHits(unnar)) === opened
        }, 'the blob in memory')
      }
      const before = await cacheHits(unnar)
      const body = (await rawRequest(url)).body
      const range = await rawRequest(url, { headers: { Range: 'bytes=1000-1999' } })
      return { opens: (await cacheHits(unnar)) - before, body, range }
    } finally {
      await unnar.stop()
      await upstream.close()
    }
  }

  it('serves a big file asked for twice from memory, ranges included', async () => {
    const { opens, body, range } = await narOpensWhenHot({}, true)
    assert.equal(opens, 0, 'the cached NAR was not opened: the file came from memory')
    assert.equal(sha256(body), basic.entries[BLOB]!.sha256)
    assert.equal(range.status, 206)
    assert.equal(range.headers['content-range'], `bytes 1000-1999/${basic.entries[BLOB]!.size}`)
    assert.deepEqual(range.body, body.subarray(1000, 2000))
  })

  it('keeps nothing in memory when the size is 0', async () => {
    const { opens, body, range } = await narOpensWhenHot({ UNNAR_MEMORY_CACHE_SIZE: '0' }, false)
    assert.equal(opens, 2, 'both requests read the cached NAR')
    assert.equal(sha256(body), basic.entries[BLOB]!.sha256)
    assert.equal(range.body.length, 1000)
  })

  it('keeps no file bigger than half of the memory', async () => {
    const { opens } = await narOpensWhenHot({ UNNAR_MEMORY_CACHE_SIZE: '5M' }, false)
    assert.equal(opens, 2, 'the 3 MB file was not kept in 5 MB')
  })
})
