/**
 * `<dir>/?find=<text>` end to end (#23): HTML, JSON and text, odd and hostile names, nested
 * directories, the cut at MAX_FIND_HITS; answered from the upstream `.ls` without a NAR byte, the
 * same once the NAR is cached, and the same from the NAR alone when the upstream has no `.ls`.
 */
import assert from 'node:assert/strict'
import path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { MAX_FIND_HITS } from '../../src/http/tree-search.js'
import { cacheDir, fixturePath } from '../helpers/fixtures.js'
import { startTestUpstream, type TestUpstream } from '../helpers/test-upstream.js'
import { startUnnar, type TestUnnar } from '../helpers/unnar.js'

const MIRROR_TREE = 'rxmzg881g7n6jhp7w3zs4pbxsrqcpvgf-mirror-tree'
const XSS_BASE = 'n29y5w92fdn9kga4zfzyn2ibwxpm32n8-unnar-xss-fixture'
const tricky = fixturePath('tricky')
const TRICKY = `${tricky.hash}-${tricky.name}`

interface FindJson {
  find: string
  truncated: boolean
  entries: Array<{ path: string; type: string; size?: number; executable?: boolean; target?: string }>
}

async function findJson(unnar: TestUnnar, dir: string, text: string): Promise<FindJson> {
  const res = await fetch(`${unnar.store(dir)}?find=${encodeURIComponent(text)}&json`)
  assert.equal(res.status, 200)
  assert.equal(res.headers.get('content-type'), 'application/json')
  return (await res.json()) as FindJson
}

describe('?find on a store path', () => {
  let mirror: TestUpstream
  let xss: TestUpstream
  let unnar: TestUnnar

  before(async () => {
    mirror = await startTestUpstream({ root: path.resolve('test/fixtures/mirror-cache') })
    xss = await startTestUpstream({ root: path.resolve('test/fixtures/xss-cache') })
    unnar = await startUnnar([mirror.url, xss.url])
  })
  after(async () => {
    await unnar?.stop()
    await xss?.close()
    await mirror?.close()
  })

  it('lists every matching path below the directory, in any case, from the .ls alone and then from the NAR', async () => {
    const fromLs = await findJson(unnar, `${MIRROR_TREE}/`, 'T')
    assert.equal(fromLs.find, 'T')
    assert.equal(fromLs.truncated, false)
    assert.deepEqual(
      fromLs.entries.map((e) => e.path),
      [
        'big.txt',
        'empty-dir',
        'empty.txt',
        'link-to-dir',
        'link-to-file',
        'names/a&b;c.txt',
        'names/back\\slash.txt',
        'names/hash#sign.txt',
        'names/new\nline.txt',
        'names/percent%41.txt',
        'names/question?.txt',
        'names/quote\'"q.txt',
        'names/tab\tname.txt',
        'names/with space.txt',
        'names/über 日本.txt',
        'sub dir/inner file.txt',
      ],
    )
    assert.deepEqual(fromLs.entries.slice(0, 4), [
      { path: 'big.txt', type: 'regular', size: 300000, executable: false },
      { path: 'empty-dir', type: 'directory' },
      { path: 'empty.txt', type: 'regular', size: 0, executable: false },
      { path: 'link-to-dir', type: 'symlink', target: 'sub dir' },
    ])
    assert.equal(mirror.count(/^\/nar\//), 0, 'no NAR byte was fetched')

    // Fetching a file caches the NAR; the search is then answered from it, with the same result.
    assert.equal(await (await fetch(unnar.store(`${MIRROR_TREE}/names/hash%23sign.txt`))).text(), 'hash\n')
    await unnar.waitForLog((l) => l.msg === 'NAR cached', 'the NAR is cached')
    assert.ok(mirror.count(/^\/nar\//) > 0)
    assert.deepEqual(await findJson(unnar, `${MIRROR_TREE}/`, 'T'), fromLs)
  })

  it('searches paths relative to a nested directory, UTF-8 in any case', async () => {
    assert.deepEqual(await findJson(unnar, `${MIRROR_TREE}/names/`, 'Ü'), {
      find: 'Ü',
      truncated: false,
      entries: [{ path: 'über 日本.txt', type: 'regular', size: 5, executable: false }],
    })
    const deep = await findJson(unnar, `${MIRROR_TREE}/sub%20dir/`, 'deeper/')
    assert.deepEqual(
      deep.entries.map((e) => e.path),
      ['deeper/deep.bin'],
    )
    assert.deepEqual((await findJson(unnar, `${MIRROR_TREE}/`, 'no such name')).entries, [])
  })

  it('answers curl with one path per line, escaped like the text listing', async () => {
    const res = await fetch(`${unnar.store(`${MIRROR_TREE}/`)}?find=NAME`, { headers: { 'user-agent': 'curl/8.5.0' } })
    assert.equal(res.status, 200)
    assert.equal(res.headers.get('content-type'), 'text/plain; charset=utf-8')
    assert.equal(
      await res.text(),
      [
        'names/',
        'names/a&b;c.txt',
        'names/back\\\\slash.txt',
        'names/hash#sign.txt',
        'names/new\\nline.txt',
        'names/percent%41.txt',
        'names/question?.txt',
        'names/quote\'"q.txt',
        'names/tab\\tname.txt',
        'names/with\\ space.txt',
        'names/über\\ 日本.txt',
        '',
      ].join('\n'),
    )
    const json = await fetch(`${unnar.store(`${MIRROR_TREE}/`)}?find=run`, { headers: { accept: 'application/json' } })
    assert.equal(json.headers.get('content-type'), 'application/json')
    assert.equal(
      await json.text(),
      '{"find":"run","truncated":false,"entries":[{"path":"run.sh","type":"regular","size":18,"executable":true}]}\n',
    )
  })

  it('escapes hostile names and the searched text in the HTML page, linking each hit to its encoded path', async () => {
    const text = '<img src=x onerror=alert(1)>'
    const res = await fetch(`${unnar.store(`${XSS_BASE}/`)}?find=${encodeURIComponent('<')}`, {
      headers: { accept: 'text/html' },
    })
    assert.equal(res.status, 200)
    assert.match(res.headers.get('content-security-policy') ?? '', /script-src 'self'/)
    const html = await res.text()
    assert.ok(!html.includes(text) && !html.includes('<script>alert'), 'no name is markup')
    assert.ok(
      html.includes(`<a href="%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E">&lt;img src=x onerror=alert(1)&gt;</a>`),
    )
    assert.ok(html.includes(`<a href="dir%26%3Ci%3Ex/inner.txt">dir&amp;&lt;i&gt;x/inner.txt</a>`))
    assert.match(html, /5 entries whose path contains <q>&lt;<\/q>/)

    const reflected = await (
      await fetch(`${unnar.store(`${XSS_BASE}/`)}?find=${encodeURIComponent(`"><script>alert(1)</script>`)}`, {
        headers: { accept: 'text/html' },
      })
    ).text()
    assert.ok(!reflected.includes('<script>alert'))
    assert.ok(reflected.includes('value="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"'))
    assert.ok(reflected.includes('No entry below this directory matches.'))
  })

  it('refuses an empty or overlong text with 400, keeps ?find through the directory redirect', async () => {
    const empty = await fetch(`${unnar.store(`${MIRROR_TREE}/`)}?find=`)
    assert.equal(empty.status, 400)
    assert.match(await empty.text(), /\?find= needs a text/)
    await unnar.waitForLog((l) => l.msg === 'request failed' && l.status === 400, 'the 400 is logged')
    const long = await fetch(`${unnar.store(`${MIRROR_TREE}/`)}?find=${'a'.repeat(5000)}`)
    assert.equal(long.status, 400)
    const redirect = await fetch(`${unnar.store(`${MIRROR_TREE}/names`)}?find=x`, { redirect: 'manual' })
    assert.equal(redirect.status, 301)
    assert.equal(redirect.headers.get('location'), `/nix/store/${MIRROR_TREE}/names/?find=x`)
  })
})

describe('?find with and without an upstream .ls', () => {
  let withLs: TestUpstream
  let withoutLs: TestUpstream
  let fromLs: TestUnnar
  let fromNar: TestUnnar

  before(async () => {
    withLs = await startTestUpstream({ root: cacheDir('xz') })
    withoutLs = await startTestUpstream({ root: cacheDir('no-listing') })
    fromLs = await startUnnar([withLs.url])
    fromNar = await startUnnar([withoutLs.url])
  })
  after(async () => {
    await fromNar?.stop()
    await fromLs?.stop()
    await withoutLs?.close()
    await withLs?.close()
  })

  it('gives the same answers, cut at the same hit, in every format', async () => {
    for (const text of ['.TXT', 'l1', 'names/', 'über', 'f0']) {
      for (const headers of [{ accept: 'application/json' }, { 'user-agent': 'curl/8' }, { accept: 'text/html' }]) {
        const url = (unnar: TestUnnar) => `${unnar.store(`${TRICKY}/`)}?find=${encodeURIComponent(text)}`
        const [a, b] = await Promise.all([fetch(url(fromLs), { headers }), fetch(url(fromNar), { headers })])
        assert.equal(a.status, 200)
        assert.equal(b.status, 200)
        assert.equal(await a.text(), await b.text(), `${text} ${JSON.stringify(headers)}`)
      }
    }
    assert.equal(withLs.count(/^\/nar\//), 0, 'the .ls answered')
    assert.ok(withoutLs.count(/^\/nar\//) > 0, 'the NAR answered')

    // `many/` holds 1500 files: the answer stops at the limit and says so.
    const cut = await findJson(fromLs, `${TRICKY}/`, 'many/f')
    assert.equal(cut.truncated, true)
    assert.equal(cut.entries.length, MAX_FIND_HITS)
    assert.equal(cut.entries.at(-1)?.path, `many/f${String(MAX_FIND_HITS - 1).padStart(5, '0')}.txt`)
    const text = await (
      await fetch(`${fromLs.store(`${TRICKY}/`)}?find=many/f`, { headers: { 'user-agent': 'curl/8' } })
    ).text()
    assert.match(text, new RegExp(`\\n# cut after ${MAX_FIND_HITS} entries: search for a longer text\\n$`))
  })
})
