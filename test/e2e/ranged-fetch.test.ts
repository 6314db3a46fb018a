/**
 * One file of a big uncompressed NAR that is not worth caching: fetched from the upstream as a byte
 * range, in `stream` verification only (such bytes are never checked against NarHash).
 */
import assert from 'node:assert/strict'
import { readdir } from 'node:fs/promises'
import path from 'node:path'
import { after, describe, it } from 'node:test'
import { cacheDir, fixturePath } from '../helpers/fixtures.js'
import { startTestUpstream, type TestUpstream } from '../helpers/test-upstream.js'
import { sha256Hex, startUnnar } from '../helpers/unnar.js'
import { eventually } from '../helpers/wait.js'

const basic = fixturePath('basic')
const basicBase = `${basic.hash}-${basic.name}`
const LIB = 'lib/libfoo.so.1.2'
const NAR = /^\/nar\//
const NAR_SIZE = 3_304_184

/** Bytes the upstream wrote for NAR requests (headers included), once they are over. */
function narBytes(u: TestUpstream): number {
  return u.requests.filter((r) => NAR.test(r.path)).reduce((sum, r) => sum + (r.bytes ?? 0), 0)
}

describe('ranged fetch from Compression: none NARs', { timeout: 60_000 }, () => {
  const cleanups: Array<() => Promise<void>> = []
  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup()
  })
  const setup = async (
    cache: string,
    env: Record<string, string> = { UNNAR_MAX_NAR_SIZE: '1M', UNNAR_VERIFY: 'stream' },
  ) => {
    const u = await startTestUpstream({ root: cacheDir(cache) })
    const unnar = await startUnnar([u.url], env)
    cleanups.push(
      () => u.close(),
      () => unnar.stop(),
    )
    return { u, unnar }
  }

  it('transfers about the file, not the 3.3 MB NAR, and serves the right bytes', async () => {
    const { u, unnar } = await setup('none')
    const size = basic.entries[LIB]!.size!
    const res = await fetch(unnar.store(`${basicBase}/${LIB}`))
    assert.equal(res.status, 200)
    assert.equal(res.headers.get('content-length'), String(size))
    assert.equal(await sha256Hex(await res.arrayBuffer()), basic.entries[LIB]!.sha256)
    await eventually(
      () => u.requests.filter((r) => NAR.test(r.path)).every((r) => r.bytes !== undefined),
      'upstream responses over',
    )
    assert.ok(
      u.requests.filter((r) => NAR.test(r.path)).every((r) => r.range !== undefined),
      'only Range requests for the NAR',
    )
    const sent = narBytes(u)
    assert.ok(sent >= size && sent < size + 4096, `the upstream sent ${sent} bytes for a ${size}-byte file`)
    assert.deepEqual(await readdir(path.join(unnar.cacheDir, 'nar')), [], 'nothing cached')
  })

  it('answers client ranges with upstream ranges of the same size', async () => {
    const { u, unnar } = await setup('none')
    const res = await fetch(unnar.store(`${basicBase}/lib/blob.bin`), { headers: { range: 'bytes=1000000-1000099' } })
    assert.equal(res.status, 206)
    assert.equal((await res.arrayBuffer()).byteLength, 100)
    await eventually(
      () => u.requests.filter((r) => NAR.test(r.path)).every((r) => r.bytes !== undefined),
      'upstream responses over',
    )
    assert.ok(narBytes(u) < 4096, `the upstream sent ${narBytes(u)} bytes for 100`)
  })

  it('never fetches by range in strict verification: the whole NAR is read and verified', async () => {
    const { u, unnar } = await setup('none', { UNNAR_MAX_NAR_SIZE: '1M' })
    const res = await fetch(unnar.store(`${basicBase}/${LIB}`))
    assert.equal(await sha256Hex(await res.arrayBuffer()), basic.entries[LIB]!.sha256)
    assert.ok(u.requests.every((r) => r.range === undefined))
    assert.ok(unnar.logs.some((l) => l.msg === 'request' && l.verification === 'held'))
    await eventually(
      () => u.requests.filter((r) => NAR.test(r.path)).every((r) => r.bytes !== undefined),
      'upstream responses over',
    )
    assert.ok(narBytes(u) >= NAR_SIZE)
  })

  it('downloads the whole NAR when it is worth keeping, or compressed', async () => {
    const kept = await setup('none', { UNNAR_VERIFY: 'stream' })
    assert.equal((await fetch(kept.unnar.store(`${basicBase}/${LIB}`))).status, 200)
    await eventually(() => kept.unnar.narStore.entries === 1, 'the NAR kept')
    assert.ok(narBytes(kept.u) >= NAR_SIZE)
    const xz = await setup('xz', { UNNAR_MAX_NAR_SIZE: '1M', UNNAR_VERIFY: 'stream' })
    assert.equal(
      await sha256Hex(await (await fetch(xz.unnar.store(`${basicBase}/${LIB}`))).arrayBuffer()),
      basic.entries[LIB]!.sha256,
    )
    assert.ok(xz.u.requests.every((r) => r.range === undefined))
  })

  it('falls back to streaming the NAR when the listing offset is wrong, and stops using that listing', async () => {
    const { u, unnar } = await setup('none')
    const ls = JSON.parse(await (await fetch(`${u.url}/${basic.hash}.ls`)).text()) as {
      root: { entries: Record<string, { entries: Record<string, { narOffset: number }> }> }
    }
    ls.root.entries.lib!.entries['libfoo.so.1.2']!.narOffset += 8
    u.setFault(`/${basic.hash}.ls`, { kind: 'replace', body: new TextEncoder().encode(JSON.stringify(ls)) })
    const res = await fetch(unnar.store(`${basicBase}/${LIB}`))
    assert.equal(res.status, 200)
    assert.equal(await sha256Hex(await res.arrayBuffer()), basic.entries[LIB]!.sha256)
    assert.ok(
      unnar.logs.some(
        (l) =>
          l.msg === 'upstream listing disagrees with its NAR; using the NAR' && /does not frame/.test(String(l.error)),
      ),
    )
    assert.match(
      await (await fetch(`${unnar.url}/metrics`)).text(),
      /^unnar_listing_mismatches_total\{upstream="[^"]+"\} 1$/m,
    )
  })
})
