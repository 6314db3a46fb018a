/**
 * `<file>?view` end to end (#23): text files as pages with line anchors and highlighting, hostile
 * content escaped, the cut at 1 MiB, binary files, and what `?view` does on directories and
 * symlinks; the plain URL stays the raw file.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { HIGHLIGHT_MAX_BYTES, VIEW_MAX_BYTES, VIEW_MAX_LINES } from '../../src/http/file-view.js'
import { serveStorePath } from '../helpers/publish.js'
import { directory, regular, symlink } from '../formats/nar-builder.js'

const HOSTILE = '</script><img src=x onerror=alert(1)>\n<!-- "quoted" & \'single\' -->\n'
const SCRIPT = '#!/usr/bin/env python3\nimport sys\nprint("hi")\n'
/** Just over 1 MiB of lines, with a 2-byte character across the cut. */
const BIG = `${'x'.repeat(VIEW_MAX_BYTES - 1)}é and more\n`
const NUMBERED = Array.from({ length: 30 }, (_, i) => `line ${i + 1}`).join('\n') + '\n'

describe('?view', () => {
  const served = serveStorePath('view-fixture', () =>
    directory({
      'big.txt': regular(BIG),
      bin: directory({ tool: regular(SCRIPT, true) }),
      'binary.bin': regular(new Uint8Array([0x7f, 0x45, 0x4c, 0x46, 0, 1, 2, 3])),
      'empty.txt': regular(''),
      'evil.html': regular(HOSTILE),
      'latin1.txt': regular(new Uint8Array([0x63, 0x61, 0x66, 0xe9, 0x0a])),
      'link.js': symlink('main.js'),
      'main.js': regular('const answer = 42 // the answer\n'),
      'many-lines.txt': regular('\n'.repeat(VIEW_MAX_LINES + 5)),
      'numbered.txt': regular(NUMBERED),
      'wide.js': regular(`${'const x = 1\n'.repeat(Math.ceil((HIGHLIGHT_MAX_BYTES + 1) / 12))}`),
    }),
  )

  const view = async (rel: string, init: RequestInit = {}) => {
    const res = await fetch(`${served.unnar.store(`${served.base}/${rel}`)}?view`, init)
    return { res, html: await res.text() }
  }

  it('shows a text file with one anchored line each, highlighted by its extension, under the strict CSP', async () => {
    const { res, html } = await view('main.js')
    assert.equal(res.status, 200)
    assert.equal(res.headers.get('content-type'), 'text/html; charset=utf-8')
    assert.match(res.headers.get('content-security-policy') ?? '', /^default-src 'none'; script-src 'self'/)
    assert.ok(
      html.includes(
        `<tr id="L1"><td class="ln"><a href="#L1" data-line="1" aria-label="line 1"></a></td><td class="lc"><span class="hljs-keyword">const</span> answer = <span class="hljs-number">42</span> <span class="hljs-comment">// the answer</span></td></tr>`,
      ),
      html,
    )
    assert.match(html, /1 line · .* · javascript/)
    assert.ok(html.includes('<a href="main.js">raw</a> · <a href="main.js?download">download</a>'))
    assert.ok(html.includes('href="/_unnar/hljs-light.css"') && html.includes('<script src="/_unnar/viewer.js" defer>'))
    // The plain URL is still the raw file.
    const raw = await fetch(served.unnar.store(`${served.base}/main.js`))
    assert.equal(await raw.text(), 'const answer = 42 // the answer\n')
    assert.match(raw.headers.get('content-type') ?? '', /javascript/)
    // Once the file is kept in memory (after the whole NAR is cached), ?view still gets the page.
    assert.equal((await fetch(served.unnar.store(`${served.base}/numbered.txt`))).status, 200)
    await served.unnar.waitForLog((l) => l.msg === 'NAR cached', 'the NAR is cached')
    await fetch(served.unnar.store(`${served.base}/main.js`))
    assert.equal((await view('main.js')).res.headers.get('content-type'), 'text/html; charset=utf-8')
    const theme = await fetch(`${served.unnar.url}/_unnar/hljs-dark.css`)
    assert.equal(theme.status, 200)
    assert.match(await theme.text(), /\.hljs-keyword/)
  })

  it('numbers every line, and picks a language from a #! line', async () => {
    const numbered = (await view('numbered.txt')).html
    assert.equal(numbered.match(/<tr id="L\d+">/g)?.length, 30)
    assert.ok(numbered.includes('<tr id="L30">') && !numbered.includes('<tr id="L31">'))
    assert.match(numbered, /30 lines · .* · plain text/)
    const tool = (await view('bin/tool')).html
    assert.match(tool, /3 lines · .* · python/)
    assert.ok(tool.includes('<span class="hljs-keyword">import</span> sys'))
  })

  it('escapes hostile content: it is shown, never markup', async () => {
    const { html } = await view('evil.html')
    assert.ok(!html.includes('<img') && !html.includes('</script><img'), html)
    assert.equal(html.match(/<script/g)?.length, 1, 'only viewer.js')
    // Each line's text, once highlight.js's spans are taken out, is the line escaped.
    const lines = [...html.matchAll(/<td class="lc">(.*?)<\/td>/g)].map((m) => m[1]!.replace(/<\/?span[^>]*>/g, ''))
    assert.deepEqual(lines, [
      '&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;',
      '&lt;!-- &quot;quoted&quot; &amp; &#x27;single&#x27; --&gt;',
    ])
  })

  it('shows the first MiB or 20,000 lines of a bigger file with a link to the whole, without highlighting past 64 KiB', async () => {
    const { html } = await view('big.txt')
    assert.match(html, /Showing the first 1 line, 1\.0 MiB of 1\.0 MiB\. <a href="big\.txt">Open the whole file<\/a>/)
    assert.ok(html.includes(`<td class="lc">${'x'.repeat(VIEW_MAX_BYTES - 1)}</td>`), 'the cut character is left out')
    assert.ok(!html.includes('é'))
    const many = (await view('many-lines.txt')).html
    assert.equal(many.match(/<tr id="L\d+">/g)?.length, VIEW_MAX_LINES)
    assert.match(many, /Showing the first 20,000 lines, 19\.5 KiB of 19\.5 KiB\./)
    const wide = (await view('wide.js')).html
    assert.ok(!wide.includes('class="hljs-'), 'too big to highlight')
    assert.match(wide, /· javascript/)
  })

  it('says a binary or non-UTF-8 file is binary and links the raw file', async () => {
    for (const name of ['binary.bin', 'latin1.txt']) {
      const { res, html } = await view(name)
      assert.equal(res.status, 200)
      assert.ok(html.includes(`This file is binary`), name)
      assert.ok(html.includes(`<a href="${name}">Open the raw file</a>`), name)
      assert.ok(!html.includes('<table class="code">'))
    }
    assert.ok((await view('empty.txt')).html.includes('This file is empty.'))
  })

  it('lists a directory, keeps ?view through a symlink, and answers HEAD', async () => {
    const dir = await fetch(`${served.unnar.store(`${served.base}/bin/`)}?view`, {
      headers: { accept: 'application/json' },
    })
    assert.equal(dir.headers.get('content-type'), 'application/json')
    const link = await fetch(`${served.unnar.store(`${served.base}/link.js`)}?view`, { redirect: 'manual' })
    assert.equal(link.status, 301)
    assert.equal(link.headers.get('location'), `/nix/store/${served.base}/main.js?view`)
    const head = await fetch(`${served.unnar.store(`${served.base}/main.js`)}?view`, { method: 'HEAD' })
    assert.equal(head.status, 200)
    assert.equal(head.headers.get('content-type'), 'text/html; charset=utf-8')
    const missing = await fetch(`${served.unnar.store(`${served.base}/nope.txt`)}?view`)
    assert.equal(missing.status, 404)
  })

  it('marks viewable files in listings for listing.js, never binaries by name', async () => {
    const html = await (await fetch(served.unnar.store(`${served.base}/`), { headers: { accept: 'text/html' } })).text()
    assert.match(html, /<tr class="f" data-size="\d+" data-view>.*?<a href="main\.js">/)
    assert.match(html, /<tr class="f" data-size="8"><td.*?<a href="binary\.bin">/)
    assert.ok(!html.includes('?view'), 'no view link in the markup: mirroring tools must not follow one')
  })
})
