/** The directory listing page: escaping, link encoding, breadcrumbs, symlinks, sizes and the store-path panel. */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { parseListing, type ListingNode } from '../../src/formats/listing.js'
import { parseNarInfo } from '../../src/formats/narinfo.js'
import { formatBytes, formatSize, renderListingPage } from '../../src/http/listing-page.js'
import type { PathInfo } from '../../src/upstream/path-info-lookup.js'

type DirectoryNode = Extract<ListingNode, { type: 'directory' }>

const HASH = 'yvd3rsmr9zhli0qg8ya69z6zhmza1p4a'
const BASE = `/nix/store/${HASH}-fixture-app-1`
const DEP = '1k87k4082pzf85pfmqzjslxn34n5vrjn-fixture-dep-1'

const NARINFO = `StorePath: ${BASE}
URL: nar/1snra3f6cqj7w20xd9dg709z1jfm608lligbnns4f000qfvjy9k7.nar.xz
Compression: xz
FileHash: sha256:1snra3f6cqj7w20xd9dg709z1jfm608lligbnns4f000qfvjy9k7
FileSize: 264
NarHash: sha256:0b6ssqmhr7qj3rn30lghdvaj0i57yna801mqp4rc8k1pi4asadf5
NarSize: 3145728
References: ${DEP} ${HASH}-fixture-app-1
Deriver: x3zfg2wjcaywv75nklzq9g1ncwam6jvx-fixture-app-1.drv
Sig: nar-serve-test-1:JFWCNdtCz21NsuYiSHnumFqZxc7jZtKa2wsiBGhvaPZYF9lWr0pLztZ43rD7Nk5IJQgxsW2jxwRHxb6P5pS3Bg==
`

function pathInfo(narInfoText = NARINFO, upstreamName = 'https://cache.example.org'): PathInfo {
  return {
    storePath: { storeDir: '/nix/store', hash: HASH, name: 'fixture-app-1' },
    narInfo: parseNarInfo(narInfoText),
    upstream: { name: upstreamName, get: async () => undefined },
    narKey: 'nar/x.nar.xz',
    trustedBy: undefined,
  }
}

/** A directory from `.ls`-style entries, in NAR order as the real parser makes it. */
function dir(entries: Record<string, unknown>): DirectoryNode {
  const root = parseListing(JSON.stringify({ version: 1, root: { type: 'directory', entries } })).root
  assert.equal(root.type, 'directory')
  return root as DirectoryNode
}

const file = (size: number, executable = false) => ({
  type: 'regular',
  size,
  ...(executable ? { executable: true } : {}),
})
const link = (target: string) => ({ type: 'symlink', target })
const sub = (entries: Record<string, unknown> = {}) => ({ type: 'directory', entries })

function render(entries: Record<string, unknown>, segments: readonly string[] = [], info = pathInfo()): string {
  return renderListingPage({ base: BASE, segments, directory: dir(entries), info })
}

/** Every start tag of the document with its attribute names (a small scanner, enough for our own output). */
function startTags(html: string): Array<{ name: string; attributes: string[] }> {
  const tags: Array<{ name: string; attributes: string[] }> = []
  for (const match of html.matchAll(/<([a-zA-Z][a-zA-Z0-9]*)((?:\s+[^\s=>]+(?:="[^"]*")?)*)\s*\/?>/g)) {
    const attributes = [...match[2]!.matchAll(/\s+([^\s=>]+)/g)].map((a) => a[1]!.toLowerCase())
    tags.push({ name: match[1]!.toLowerCase(), attributes })
  }
  return tags
}

/** The href of every `<a>`, HTML-unescaped. */
function hrefs(html: string): string[] {
  return [...html.matchAll(/<a [^>]*href="([^"]*)"/g)].map((m) =>
    m[1]!
      .replaceAll('&quot;', '"')
      .replaceAll('&#39;', "'")
      .replaceAll('&lt;', '<')
      .replaceAll('&gt;', '>')
      .replaceAll('&amp;', '&'),
  )
}

const HOSTILE = {
  '<script>alert(1)<': file(7),
  '"><img src=x onerror=alert(1)>': file(5),
  "'><svg onload=alert(1)>": file(5),
  '<img src=x onerror=alert(1)>': sub({}),
  'link"><b>': link('"><script>alert(1)</script>'),
  '&amp;': file(1),
}

describe('renderListingPage', () => {
  it('escapes hostile names so that they create no element and no attribute', () => {
    const html = render(HOSTILE)
    const allowed = new Set([
      'html',
      'head',
      'meta',
      'title',
      'link',
      'body',
      'header',
      'main',
      'a',
      'h1',
      'h2',
      'span',
      'section',
      'div',
      'p',
      'form',
      'button',
      'label',
      'input',
      'output',
      'table',
      'thead',
      'tbody',
      'tr',
      'th',
      'td',
      'i',
      'aside',
      'dl',
      'dt',
      'dd',
      'code',
      'ul',
      'li',
      'script',
    ])
    const tags = startTags(html)
    for (const tag of tags) {
      assert.ok(allowed.has(tag.name), `unexpected <${tag.name}>`)
      for (const attribute of tag.attributes)
        assert.doesNotMatch(attribute, /^on/, `event handler attribute ${attribute} on <${tag.name}>`)
    }
    const scripts = tags.filter((t) => t.name === 'script')
    assert.equal(scripts.length, 1, "only unnar's own script")
    assert.ok(html.includes('<script src="/_unnar/listing.js" defer></script>'))
    assert.ok(html.includes('&lt;script&gt;alert(1)&lt;'))
    assert.ok(html.includes('&quot;&gt;&lt;img src=x onerror=alert(1)&gt;'))
    assert.ok(html.includes('&#39;&gt;&lt;svg onload=alert(1)&gt;'))
    assert.ok(html.includes('&amp;amp;'), 'an entity-looking name is shown literally')
    assert.ok(html.includes('&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;'), 'a symlink target is escaped too')
    assert.ok(!html.includes('<img'))
    assert.ok(!html.includes('<svg'))
  })

  it('percent-encodes every entry link, keeping hash, query and percent signs inside the name', () => {
    const html = render({
      '#hash?.txt': file(5),
      '%41 100%.txt': file(8),
      'über café.txt': file(8),
      日本語: sub(),
      'a+b=c;d,e.txt': file(1),
      "quote'.txt": file(1),
      'javascript:alert(1)': file(1),
    })
    const links = hrefs(html)
    for (const expected of [
      '%23hash%3F.txt',
      '%2541%20100%25.txt',
      '%C3%BCber%20caf%C3%A9.txt',
      '%E6%97%A5%E6%9C%AC%E8%AA%9E/',
      'a%2Bb%3Dc%3Bd%2Ce.txt',
      'quote%27.txt',
      'javascript%3Aalert(1)',
    ]) {
      assert.ok(links.includes(expected), `${expected} in ${JSON.stringify(links)}`)
    }
    assert.ok(
      html.includes('href="quote%27.txt"'),
      'a quote is percent-encoded, not an entity that lftp would not decode',
    )
    // Resolved against the listing's URL, each link names exactly the entry.
    const page = `http://unnar.test${BASE}/`
    for (const name of ['#hash?.txt', '%41 100%.txt', 'über café.txt', 'javascript:alert(1)']) {
      const href = links.find((h) => decodeURIComponent(h) === name)
      assert.ok(href !== undefined, name)
      const url = new URL(href, page)
      assert.equal(url.origin, 'http://unnar.test')
      assert.equal(url.pathname, `${BASE}/${href}`)
      assert.equal(url.search, '')
      assert.equal(url.hash, '')
    }
  })

  it('marks directories with a trailing slash, executables, and puts sizes in data attributes', () => {
    const html = render({ bin: sub({ hello: file(21, true) }), README: file(1117), 'empty.txt': file(0) })
    assert.match(html, /<tr class="d" data-size="-1">.*?<a href="bin\/">bin\/<\/a>/)
    assert.match(
      html,
      /<tr class="f" data-size="1117" data-view>.*?<a href="README">README<\/a><\/td><td class="s" title="1,117 bytes">1\.1 KiB<\/td>/,
    )
    assert.match(html, /<tr class="f" data-size="0" data-view>.*?title="0 bytes">0 B</)
    const exec = render({ hello: file(21, true) })
    assert.match(
      exec,
      /<tr class="x" data-size="21" data-view>.*aria-label="executable file".*<span class="exec" title="executable">-r-xr-xr-x<\/span>/,
    )
  })

  it('lists entries in NAR byte order', () => {
    const html = render({ b: file(1), B: file(1), a: file(1), é: file(1), z: file(1) })
    const names = [...html.matchAll(/<td class="n"><a href="[^"]*">([^<]*)<\/a>/g)].map((m) => m[1])
    assert.deepEqual(names, ['B', 'a', 'b', 'z', 'é'])
  })

  it('links every breadcrumb relative to the page and marks the current directory', () => {
    const html = render({ 'x.txt': file(1) }, ['share', 'my doc#1'])
    const crumbs = /<h1 class="crumbs">(.*?)<\/h1>/.exec(html)![1]!
    assert.equal(
      crumbs,
      '<span class="store">/nix/store/</span>' +
        `<a href="../../">${HASH}-fixture-app-1</a><span class="sep">/</span>` +
        '<a href="../">share</a><span class="sep">/</span>' +
        '<span aria-current="page">my doc#1</span><span class="sep">/</span>',
    )
    assert.ok(html.includes(`<title>${BASE}/share/my doc#1/</title>`))
    const page = `http://unnar.test${BASE}/share/my%20doc%231/`
    assert.equal(new URL('../../', page).pathname, `${BASE}/`)
    assert.equal(new URL('../', page).pathname, `${BASE}/share/`)
  })

  it('shows a ".." row below the root only', () => {
    assert.match(render({ a: file(1) }, ['bin']), /<tbody class="up">.*<a href="\.\.\/">\.\.<\/a>/)
    assert.doesNotMatch(render({ a: file(1) }), /href="\.\.\/"/)
    const root = /<h1 class="crumbs">(.*?)<\/h1>/.exec(render({ a: file(1) }))![1]!
    assert.ok(root.includes(`<span aria-current="page">${HASH}-fixture-app-1</span>`))
  })

  it("links each symlink's target where its chain ends, and never the link itself", () => {
    const hrefs = new Map([
      ['abs', `/nix/store/${DEP}/lib/dep%20file.txt`],
      ['rel', `${BASE}/share/doc/index.html`],
      ['dir', `${BASE}/share/`],
    ])
    const directory = dir({
      abs: link(`/nix/store/${DEP}/lib/dep file.txt`),
      rel: link('../share/doc/index.html'),
      dir: link('../share'),
      escape: link('../../../../etc/passwd'),
      scheme: link('javascript:alert(1)'),
    })
    const html = renderListingPage({ base: BASE, segments: ['bin'], directory, info: pathInfo(), symlinkHrefs: hrefs })
    const targets = [...html.matchAll(/<a class="target" href="([^"]*)">([^<]*)<\/a>/g)].map((m) => [m[2], m[1]])
    assert.deepEqual(
      new Map(targets as [string, string][]),
      new Map([
        [`/nix/store/${DEP}/lib/dep file.txt`, `/nix/store/${DEP}/lib/dep%20file.txt`],
        ['../share/doc/index.html', `${BASE}/share/doc/index.html`],
        ['../share', `${BASE}/share/`],
      ]),
    )
    for (const plain of ['../../../../etc/passwd', 'javascript:alert(1)'])
      assert.ok(html.includes(`<span class="target">${plain}</span>`), plain)
    // A mirroring tool would save the link's target again under the link's name: the name is no link.
    for (const name of ['abs', 'rel', 'dir', 'escape', 'scheme'])
      assert.ok(html.includes(`<span class="link">${name}</span>`), name)
    assert.ok(!hrefs.has('escape') && !hrefs.has('scheme'))
  })

  it('offers JSON through a form, which mirroring tools do not follow', () => {
    const html = render({ a: file(1) })
    assert.match(
      html,
      /<form class="alt" method="get" action=""><input type="hidden" name="json" value="">as <button type="submit" class="as-link">JSON<\/button><\/form>/,
    )
    assert.ok(!hrefs(html).some((href) => href.includes('?')), 'no link with a query')
  })

  it('offers the archives and the NAR through a form, which mirroring tools do not follow', () => {
    const html = render({ a: file(1) })
    const form = /<form class="alt" method="get" action="" rel="nofollow">download (.*?)<\/form>/.exec(html)
    assert.ok(form !== null, 'a downloads form')
    const buttons = [...form[1]!.matchAll(/<button type="submit" name="(\w+)" value="([^"]*)"/g)].map(
      (m) => `${m[1]}=${m[2]}`,
    )
    assert.deepEqual(buttons, ['archive=tar', 'archive=tar.gz', 'archive=tar.zst', 'archive=zip', 'nar='])
    assert.ok(!hrefs(html).some((href) => href.includes('?')), 'no link with a query')
  })

  it('links every reference to its listing and marks the self-reference', () => {
    const html = render({ a: file(1) })
    assert.ok(html.includes(`<li><a href="/nix/store/${DEP}/">${DEP}</a></li>`))
    assert.ok(
      html.includes(
        `<li><a href="/nix/store/${HASH}-fixture-app-1/">${HASH}-fixture-app-1</a> <span class="self">(this path)</span></li>`,
      ),
    )
    assert.match(html, /References <span class="n">\(2\)<\/span>/)
  })

  it('shows the narinfo: hashes, sizes, compression, upstream, deriver and raw signatures', () => {
    const html = render({ a: file(1) })
    const panel = /<aside class="info"[^>]*>(.*)<\/aside>/.exec(html)![1]!
    assert.ok(panel.includes(`<dt>StorePath</dt><dd><code>${BASE}</code></dd>`))
    assert.ok(
      panel.includes(
        '<dt>NarHash</dt><dd><code>sha256:0b6ssqmhr7qj3rn30lghdvaj0i57yna801mqp4rc8k1pi4asadf5</code></dd>',
      ),
    )
    assert.ok(panel.includes('<dt>NarSize</dt><dd>3.0 MiB <span class="bytes">(3,145,728 bytes)</span></dd>'))
    assert.ok(panel.includes('<dt>Compression</dt><dd>xz</dd>'))
    assert.ok(panel.includes('<dt>FileSize</dt><dd>264 B <span class="bytes">(264 bytes)</span></dd>'))
    assert.ok(panel.includes('<dt>Upstream</dt><dd><code>https://cache.example.org</code></dd>'))
    assert.ok(
      panel.includes('<dt>Deriver</dt><dd><code>x3zfg2wjcaywv75nklzq9g1ncwam6jvx-fixture-app-1.drv</code></dd>'),
    )
    assert.ok(
      panel.includes(
        '<li><code>nar-serve-test-1:JFWCNdtCz21NsuYiSHnumFqZxc7jZtKa2wsiBGhvaPZYF9lWr0pLztZ43rD7Nk5IJQgxsW2jxwRHxb6P5pS3Bg==</code></li>',
      ),
    )
  })

  it('says "none" and "unknown" for a narinfo without references, signatures or deriver', () => {
    const bare = NARINFO.replace(/^References: .*$/m, 'References: ')
      .replace(/^Deriver: .*\n/m, '')
      .replace(/^Sig: .*\n/m, '')
    const html = render({ a: file(1) }, [], pathInfo(bare, 'file:///srv/cache?<x>'))
    assert.match(html, /<dt>References <span class="n">\(0\)<\/span><\/dt><dd><span class="none">none<\/span><\/dd>/)
    assert.match(html, /<dt>Signatures <span class="n">\(0\)<\/span><\/dt><dd><span class="none">none<\/span><\/dd>/)
    assert.match(html, /<dt>Deriver<\/dt><dd><span class="none">unknown<\/span><\/dd>/)
    assert.ok(html.includes('<code>file:///srv/cache?&lt;x&gt;</code>'), 'the upstream name is escaped')
  })

  it('summarises the directory and says when it is empty', () => {
    const html = render({ a: sub(), b: file(3000000), c: file(1, true), d: link('a') })
    assert.match(
      html,
      /<p class="summary">1 directory, 2 files, 1 symlink · <span title="3,000,001 bytes">2\.9 MiB<\/span> in files<\/p>/,
    )
    const empty = render({})
    assert.match(empty, /<p class="summary">Empty directory<\/p>/)
    assert.match(empty, /<p class="empty">This directory is empty\.<\/p>/)
  })

  it('renders a 5000-entry directory quickly and compactly', () => {
    const entries: Record<string, unknown> = {}
    for (let i = 0; i < 5000; i++) entries[`file-${String(i).padStart(5, '0')}.txt`] = file(i * 37)
    const directory = dir(entries)
    // CPU time, not wall time: a loaded machine makes this slower, not busier.
    const started = process.cpuUsage()
    const html = renderListingPage({ base: BASE, segments: ['many'], directory, info: pathInfo() })
    const used = process.cpuUsage(started)
    const ms = (used.user + used.system) / 1000
    assert.equal(html.match(/<tr class="f"/g)?.length, 5000)
    assert.ok(ms < 500, `took ${ms} ms of CPU`)
    assert.ok(html.length < 5000 * 320, `${html.length} bytes`)
  })
})

describe('formatSize', () => {
  it('prints bytes below a KiB and binary units with one decimal below 100', () => {
    const cases: Array<[number, string]> = [
      [0, '0 B'],
      [1, '1 B'],
      [1023, '1023 B'],
      [1024, '1.0 KiB'],
      [1536, '1.5 KiB'],
      [300000, '293 KiB'],
      [1048575, '1.0 MiB'],
      [3000000, '2.9 MiB'],
      [5 * 1024 ** 3, '5.0 GiB'],
      [Number.MAX_SAFE_INTEGER, '8.0 PiB'],
    ]
    for (const [bytes, text] of cases) assert.equal(formatSize(bytes), text, String(bytes))
  })

  it('prints exact byte counts with separators for titles', () => {
    assert.equal(formatBytes(1), '1 byte')
    assert.equal(formatBytes(0), '0 bytes')
    assert.equal(formatBytes(3000000), '3,000,000 bytes')
  })
})
