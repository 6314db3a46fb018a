/**
 * The web UI in a real headless Chromium (Debian's `chromium`, driven by playwright-core): landing page,
 * listings, sorting, filtering, copying, hostile names, and screenshots in test-artifacts/.
 * Skipped when /usr/bin/chromium or playwright-core is missing.
 */
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import type { Browser, BrowserContext, BrowserContextOptions, Page } from 'playwright-core'
import { parseListing, type ListingNode } from '../../src/formats/listing.js'
import { parseNarInfo } from '../../src/formats/narinfo.js'
import { renderListingPage } from '../../src/http/listing-page.js'
import { directory, regular } from '../formats/nar-builder.js'
import { cacheDir, fixturePath } from '../helpers/fixtures.js'
import { serveStorePath } from '../helpers/publish.js'
import { startTestUpstream, type TestUpstream } from '../helpers/test-upstream.js'
import { startUnnar, type TestUnnar } from '../helpers/unnar.js'

const CHROMIUM = '/usr/bin/chromium'
const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts/', import.meta.url))
const XSS_CACHE = fileURLToPath(new URL('../fixtures/xss-cache', import.meta.url))
const XSS_BASE = 'n29y5w92fdn9kga4zfzyn2ibwxpm32n8-unnar-xss-fixture'

type Playwright = typeof import('playwright-core')

async function loadPlaywright(): Promise<Playwright | string> {
  if (!existsSync(CHROMIUM)) return `${CHROMIUM} is missing (apt-get install chromium)`
  try {
    return await import('playwright-core')
  } catch {
    return 'playwright-core is not installed'
  }
}

const playwright = await loadPlaywright()
const skip = typeof playwright === 'string' ? playwright : false

const app = fixturePath('app')
const dep = fixturePath('dep')
const basic = fixturePath('basic')
const tricky = fixturePath('tricky')
const appBase = `${app.hash}-${app.name}`
const depBase = `${dep.hash}-${dep.name}`
const basicBase = `${basic.hash}-${basic.name}`
const trickyBase = `${tricky.hash}-${tricky.name}`

describe('the web UI in Chromium', { skip }, () => {
  let fixtures: TestUpstream
  let xss: TestUpstream
  let unnar: TestUnnar
  let browser: Browser
  const contexts: BrowserContext[] = []

  before(async () => {
    const pw = playwright as Playwright
    fixtures = await startTestUpstream({ root: cacheDir('xz') })
    xss = await startTestUpstream({ root: XSS_CACHE })
    unnar = await startUnnar([fixtures.url, xss.url])
    browser = await pw.chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    })
    await mkdir(ARTIFACTS, { recursive: true })
  })
  after(async () => {
    for (const context of contexts) await context.close().catch(() => {})
    await browser?.close()
    await unnar?.stop()
    await xss?.close()
    await fixtures?.close()
  })

  /** A fresh page whose console errors, page errors and dialogs are collected. */
  async function open(
    options: BrowserContextOptions = {},
  ): Promise<{ page: Page; problems: string[]; dialogs: string[] }> {
    const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, ...options })
    contexts.push(context)
    const page = await context.newPage()
    const problems: string[] = []
    const dialogs: string[] = []
    page.on('pageerror', (error) => problems.push(`page error: ${error.message}`))
    page.on('console', (message) => {
      if (
        message.type() === 'error' &&
        !/Failed to load resource: the server responded with a status of 404/.test(message.text())
      ) {
        problems.push(`console: ${message.text()}`)
      }
    })
    page.on('dialog', (dialog) => {
      dialogs.push(`${dialog.type()}: ${dialog.message()}`)
      void dialog.dismiss()
    })
    return { page, problems, dialogs }
  }

  const shot = (page: Page, name: string) =>
    page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true })
  const visibleNames = (page: Page) =>
    page.$$eval('#entries tr:not([hidden]) td.n > :first-child', (names) => names.map((name) => name.textContent ?? ''))

  it('opens a pasted store path from the landing page, follows a reference and opens a file', async () => {
    const { page, problems, dialogs } = await open()
    await page.goto(`${unnar.url}/`)
    assert.equal(await page.textContent('h1'), 'unnar')

    // The upstreams in priority order, with a health state each (or "unknown" without the API).
    const api = await fetch(`${unnar.url}/api/upstreams`)
    await page.waitForSelector('#upstreams li .state')
    const items = await page.$$eval('#upstreams li', (lis) =>
      lis.map((li) => ({
        name: li.querySelector('.name')?.textContent ?? '',
        state: li.querySelector('.state')?.textContent ?? '',
      })),
    )
    if (api.ok) {
      assert.deepEqual(
        items.map((i) => i.name),
        [fixtures.url, xss.url],
      )
      for (const item of items) assert.match(item.state, /^(ok|failing|unknown)$/)
    } else {
      assert.deepEqual(items, [{ name: 'The upstreams could not be loaded', state: 'unknown' }])
    }
    assert.equal(await page.textContent('.origin'), unnar.url)

    await page.fill('#path', `  /nix/store/${appBase}  `)
    await Promise.all([page.waitForURL(`${unnar.url}/nix/store/${appBase}/`), page.press('#path', 'Enter')])
    assert.equal(await page.textContent('h1.crumbs'), `/nix/store/${appBase}/`)
    assert.deepEqual(await visibleNames(page), ['bin/'])
    assert.equal(await page.textContent('aside.info dd code'), app.storePath)

    // app references dep: the reference is a link to dep's listing.
    await Promise.all([
      page.waitForURL(`${unnar.url}/nix/store/${depBase}/`),
      page.click(`aside.info .refs a:text-is("${depBase}")`),
    ])
    assert.deepEqual(await visibleNames(page), ['lib/'])
    await Promise.all([page.waitForURL(/\/lib\/$/), page.click('#entries a:text-is("lib/")')])
    assert.equal(await page.textContent('h1.crumbs'), `/nix/store/${depBase}/lib/`)
    assert.ok(await page.isVisible('tbody.up a:text-is("..")'))

    const [response] = await Promise.all([
      page.waitForResponse(/\/lib\/dep\.txt$/),
      page.click('#entries a:text-is("dep.txt")'),
    ])
    assert.equal(response.status(), 200)
    assert.match(response.headers()['content-security-policy'] ?? '', /sandbox/)
    assert.equal(
      await page.textContent('body'),
      await (await fetch(`${unnar.url}/nix/store/${depBase}/lib/dep.txt`)).text(),
    )

    // Back on the landing page, both upstreams have now been asked.
    if (api.ok) {
      await page.goto(`${unnar.url}/`)
      await page.waitForSelector('#upstreams li.state-ok')
      const states = await page.$$eval('#upstreams li .state', (spans) => spans.map((s) => s.textContent))
      assert.equal(states[0], 'ok')
    }
    assert.deepEqual(problems, [])
    assert.deepEqual(dialogs, [])
  })

  it('jumps from a bare hash, a sub path, a directory and a URL, and explains bad input', async () => {
    const { page, problems } = await open()
    const jump = async (input: string, expected: string) => {
      await page.goto(`${unnar.url}/`)
      await page.fill('#path', input)
      await Promise.all([page.waitForURL(`${unnar.url}${expected}`), page.click('#jump button[type=submit]')])
    }
    await jump(basic.hash, `/nix/store/${basic.hash}/`)
    assert.deepEqual(await visibleNames(page), ['bin/', 'lib/', 'share/'])
    await jump(`/nix/store/${basicBase}/share/doc/`, `/nix/store/${basicBase}/share/doc/`)
    assert.ok((await visibleNames(page)).includes('README'))
    await jump(`/nix/store/${basicBase}/share/doc`, `/nix/store/${basicBase}/share/doc/`) // unnar redirects to the slash form
    await jump(`${basicBase}/bin/hello`, `/nix/store/${basicBase}/bin/hello`)
    await jump(
      `/nix/store/${trickyBase}/unicode/über café.txt`,
      `/nix/store/${trickyBase}/unicode/%C3%BCber%20caf%C3%A9.txt`,
    )
    await jump(`https://cache.example.org/${basic.hash}.narinfo`, `/nix/store/${basic.hash}/`)

    await page.goto(`${unnar.url}/`)
    await page.fill('#path', '/nix/store/not-a-hash')
    await page.press('#path', 'Enter')
    await page.waitForSelector('#path-error:not([hidden])')
    assert.match((await page.textContent('#path-error')) ?? '', /32-character hash/)
    assert.equal(page.url(), `${unnar.url}/`)
    assert.equal(await page.getAttribute('#path', 'aria-invalid'), 'true')
    assert.deepEqual(problems, [])
  })

  it('sorts by size and by name with keyboard-usable header buttons, and filters', async () => {
    const { page, problems } = await open()
    await page.goto(`${unnar.url}/nix/store/${basicBase}/lib/`)
    const byName = ['abs-link', 'blob.bin', 'libfoo.so', 'libfoo.so.1.2']
    assert.deepEqual(await visibleNames(page), byName)
    assert.equal(await page.getAttribute('th.n', 'aria-sort'), 'ascending')
    assert.equal(await page.getAttribute('#entries tr:has(a:text-is("blob.bin")) td.s', 'title'), '3,000,000 bytes')
    assert.equal(await page.textContent('#entries tr:has(a:text-is("blob.bin")) td.s'), '2.9 MiB')

    await page.click('th.s button')
    assert.deepEqual(await visibleNames(page), ['blob.bin', 'libfoo.so.1.2', 'abs-link', 'libfoo.so'])
    assert.equal(await page.getAttribute('th.s', 'aria-sort'), 'descending')
    assert.equal(await page.getAttribute('th.n', 'aria-sort'), null)
    // The keyboard: focus the size button and press Enter, then Space on the name button.
    await page.focus('th.s button')
    await page.keyboard.press('Enter')
    assert.deepEqual(await visibleNames(page), ['abs-link', 'libfoo.so', 'libfoo.so.1.2', 'blob.bin'])
    assert.equal(await page.getAttribute('th.s', 'aria-sort'), 'ascending')
    await page.focus('th.n button')
    await page.keyboard.press('Space')
    assert.deepEqual(await visibleNames(page), byName)
    await page.keyboard.press('Enter')
    assert.deepEqual(await visibleNames(page), [...byName].reverse())
    assert.equal(await page.getAttribute('th.n', 'aria-sort'), 'descending')

    // "/" focuses the filter; typing filters; Escape clears.
    await page.click('.summary')
    await page.keyboard.press('/')
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'filter')
    await page.keyboard.type('LIBFOO')
    assert.deepEqual(
      await visibleNames(page),
      ['libfoo.so.1.2', 'libfoo.so'],
      'in the current (name, descending) order',
    )
    assert.equal(await page.textContent('#count'), '2 of 4')
    await page.keyboard.type('x')
    assert.deepEqual(await visibleNames(page), [])
    assert.ok(await page.isVisible('#nomatch'))
    await page.keyboard.press('Escape')
    assert.equal(await page.inputValue('#filter'), '')
    assert.equal((await visibleNames(page)).length, 4)
    assert.ok(!(await page.isVisible('#nomatch')))
    assert.deepEqual(problems, [])
  })

  it('filters and sorts a 5000-entry directory', async (t) => {
    const { page, problems } = await open()
    const entries: Record<string, unknown> = {}
    for (let i = 0; i < 5000; i++)
      entries[`lib-${String(i).padStart(4, '0')}.so`] = { type: 'regular', size: (i * 7919) % 100000 }
    const root = parseListing(JSON.stringify({ version: 1, root: { type: 'directory', entries } })).root as Extract<
      ListingNode,
      { type: 'directory' }
    >
    const html = renderListingPage({
      base: `/nix/store/${app.hash}-big`,
      segments: ['lib'],
      directory: root,
      info: {
        storePath: { storeDir: '/nix/store', hash: app.hash, name: 'big' },
        narInfo: parseNarInfo(
          `StorePath: /nix/store/${app.hash}-big\nURL: nar/x.nar\nCompression: none\nNarHash: sha256:0b6ssqmhr7qj3rn30lghdvaj0i57yna801mqp4rc8k1pi4asadf5\nNarSize: 1\nReferences: \n`,
        ),
        upstream: { name: 'synthetic', get: async () => undefined },
        narKey: 'nar/x.nar',
        trustedBy: undefined,
      },
    })
    // Served on unnar's origin (so /_unnar/ comes from unnar), with the page rendered here.
    const url = `${unnar.url}/nix/store/${app.hash}-big/lib/`
    await page.route(url, (route) =>
      route.fulfill({ status: 200, contentType: 'text/html; charset=utf-8', body: html }),
    )
    await page.goto(url)
    await page.waitForSelector('.toolbar:not([hidden])')
    // A string, not a function: tsx would wrap named functions in a helper the page does not have.
    // Each step is timed to the next frame (style, layout and paint included), once: the timings
    // are only reported.
    const timings = (await page.evaluate(`(async () => {
      const input = document.getElementById('filter')
      const frame = () => new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)))
      const time = async (action) => {
        const start = performance.now()
        action()
        await frame()
        return performance.now() - start
      }
      const type = (value) => () => {
        input.value = value
        input.dispatchEvent(new Event('input'))
      }
      const sizeButton = document.querySelector('th.s button')
      const nameButton = document.querySelector('th.n button')
      const best = { filterOne: Infinity, filterMore: Infinity, clear: Infinity, sortSize: Infinity, sortName: Infinity }
      let visible = 0
      for (let run = 0; run < 1; run++) {
        best.filterOne = Math.min(best.filterOne, await time(type('lib-1')))
        best.filterMore = Math.min(best.filterMore, await time(type('lib-12')))
        visible = document.querySelectorAll('#entries tr:not([hidden])').length
        best.clear = Math.min(best.clear, await time(type('')))
        best.sortSize = Math.min(best.sortSize, await time(() => sizeButton.click()))
        best.sortName = Math.min(best.sortName, await time(() => nameButton.click()))
      }
      sizeButton.click()
      sizeButton.click()
      return { ...best, visible }
    })()`)) as Record<string, number>
    assert.equal(timings.visible, 100) // lib-1200…lib-1299
    // Reported, not asserted: wall-clock bounds made this test fail by machine (sorting by name took
    // 1.7-2.0 s here with Chromium 156 on an idle 2-core machine, under 1 s where it was written).
    t.diagnostic(`ms: ${JSON.stringify(timings)}`)
    const sizes = await page.$$eval('#entries tr', (rows) =>
      rows.slice(0, 3).map((r) => Number(r.getAttribute('data-size'))),
    )
    assert.ok(sizes[0]! <= sizes[1]! && sizes[1]! <= sizes[2]!, `ascending: ${sizes.join(', ')}`)
    assert.deepEqual(problems, [])
  })

  it('copies a curl command with the absolute, encoded URL of a file', async () => {
    const { page, problems } = await open()
    await page.context().grantPermissions(['clipboard-read', 'clipboard-write'], { origin: unnar.url })
    await page.goto(`${unnar.url}/nix/store/${trickyBase}/names/`)
    // Directories and symlinks have no copy button; files do.
    assert.equal(await page.locator('#entries tr.d button.copy, #entries tr.l button.copy').count(), 0)
    assert.equal(await page.locator('#entries tr.f button.copy').count(), await page.locator('#entries tr.f').count())

    await page.click('#entries tr:has(a:text-is("hash#sign.txt")) button.copy')
    await page.waitForSelector('#entries tr:has(a:text-is("hash#sign.txt")) button.copy.done')
    const copied = await page.evaluate(() => navigator.clipboard.readText())
    assert.equal(copied, `curl -fLO '${unnar.url}/nix/store/${trickyBase}/names/hash%23sign.txt'`)
    assert.match((await page.textContent('#toast')) ?? '', /^Copied: curl -fLO/)

    // Keyboard: Tab from the file's link reaches its copy button; Enter copies.
    await page.focus('#entries a:text-is("quote\'.txt")')
    await page.keyboard.press('Tab')
    assert.equal(
      await page.evaluate(() => document.activeElement?.getAttribute('aria-label')),
      "Copy curl command for quote'.txt",
    )
    await page.screenshot({ path: path.join(ARTIFACTS, 'listing-keyboard-focus.png') })
    await page.keyboard.press('Enter')
    await page.waitForSelector('#entries tr:has(a:text-is("quote\'.txt")) button.copy.done')
    const quoted = await page.evaluate(() => navigator.clipboard.readText())
    assert.equal(
      quoted,
      `curl -fLO '${unnar.url}/nix/store/${trickyBase}/names/quote%27.txt'`,
      'a quote cannot end the shell string',
    )
    const res = await fetch(quoted.slice("curl -fLO '".length, -1))
    assert.equal(res.status, 200)
    assert.deepEqual(problems, [])
  })

  it('falls back to execCommand("copy") where the Clipboard API is missing (plain http on a LAN host)', async () => {
    const { page, problems } = await open()
    await page.addInitScript(`
      Object.defineProperty(Navigator.prototype, 'clipboard', { get: () => undefined })
      window.__copied = []
      document.execCommand = function (command) {
        window.__copied.push([command, document.activeElement && document.activeElement.value])
        return true
      }
    `)
    await page.goto(`${unnar.url}/nix/store/${basicBase}/bin/`)
    await page.click('#entries tr:has(a:text-is("hello")) button.copy')
    await page.waitForSelector('button.copy.done')
    assert.deepEqual(await page.evaluate('window.__copied'), [
      ['copy', `curl -fLO '${unnar.url}/nix/store/${basicBase}/bin/hello'`],
    ])
    assert.equal(await page.locator('textarea').count(), 0, 'the helper textarea is removed')
    assert.deepEqual(problems, [])
  })

  it('shows hostile names as text, never running them, and keeps store HTML away from unnar', async () => {
    const { page, problems, dialogs } = await open()
    // Any dialog, or a call to one of these, would mean a name ran as script.
    await page.addInitScript(`
      window.__xss = false
      window.alert = function () { window.__xss = true }
      window.confirm = function () { window.__xss = true; return false }
      window.prompt = function () { window.__xss = true; return null }
    `)
    const listing = `${unnar.url}/nix/store/${XSS_BASE}/`
    await page.goto(listing)
    const names = await visibleNames(page)
    assert.deepEqual(names, [
      '"><svg onload=alert(1)>.txt',
      '"quote\'.html',
      '#hash?.txt',
      '%41 100%.txt',
      '<img src=x onerror=alert(1)>',
      '<script>alert(1)<',
      'dir&<i>x/',
      'dir-link',
      'evil.html',
      'js-link',
      'link-to-img',
      'run.sh',
      'über café.txt',
    ])
    const elements = await page.evaluate(() => ({
      img: document.querySelectorAll('img').length,
      svg: document.querySelectorAll('svg').length,
      scripts: Array.from(document.scripts).map((s) => s.getAttribute('src')),
      italic: document.querySelectorAll('#entries i:not(.i)').length,
    }))
    assert.deepEqual(elements, { img: 0, svg: 0, scripts: ['/_unnar/listing.js'], italic: 0 })
    // A target that leads nowhere in the store is text, not a link (javascript: included).
    assert.equal(await page.textContent('#entries tr:has(.link:text-is("js-link")) span.target'), 'javascript:alert(1)')
    await shot(page, 'listing-xss-light')

    // Filter, sort, and open every hostile name: each lands on its own URL.
    await page.fill('#filter', '<img')
    assert.deepEqual(await visibleNames(page), ['<img src=x onerror=alert(1)>'], 'names only, not symlink targets')
    await page.fill('#filter', '')
    await page.click('th.s button')
    for (const name of [
      '"><svg onload=alert(1)>.txt',
      '#hash?.txt',
      '%41 100%.txt',
      '<script>alert(1)<',
      'über café.txt',
    ]) {
      const [response] = await Promise.all([
        page.waitForResponse((r) => r.request().isNavigationRequest()),
        page.click(`#entries a:text-is(${JSON.stringify(name)})`),
      ])
      assert.equal(response.status(), 200, name)
      assert.equal(decodeURIComponent(new URL(response.url()).pathname), `/nix/store/${XSS_BASE}/${name}`)
      // Not goBack(): leaving a sandboxed store page swaps Chromium's renderer, and going back across
      // that swap once failed with "Not attached to an active page".
      await page.goto(listing)
      await page.click('th.s button')
    }
    await Promise.all([page.waitForURL(`${listing}dir%26%3Ci%3Ex/`), page.click('#entries a:text-is("dir&<i>x/")')])
    assert.equal(await page.textContent('h1.crumbs'), `/nix/store/${XSS_BASE}/dir&<i>x/`)
    await page.goto(listing)

    // evil.html runs (sandboxed) and cannot reach unnar's page, storage or cookies.
    const evil = await page.goto(`${listing}evil.html`)
    assert.match(evil?.headers()['content-security-policy'] ?? '', /\bsandbox\b/)
    assert.equal(await page.title(), 'evil ran')
    await page.goto(listing)
    await page.evaluate(async (src) => {
      const frame = document.createElement('iframe')
      frame.src = src
      const loaded = new Promise((resolve) => frame.addEventListener('load', resolve))
      document.body.appendChild(frame)
      await loaded
    }, `${listing}evil.html`)
    // Its load event (awaited above) comes after its synchronous script would have run.
    assert.notEqual(await page.textContent('body'), 'pwned')
    assert.ok(await page.isVisible('#entries'))
    assert.equal(await page.evaluate(() => localStorage.getItem('x')), null)
    assert.doesNotMatch(await page.evaluate(() => document.cookie), /pwned/)

    assert.equal(await page.evaluate(() => (window as unknown as { __xss: boolean }).__xss), false)
    assert.deepEqual(dialogs, [])
    assert.deepEqual(
      problems.filter((p) => !/evil|SecurityError|sandbox/i.test(p)),
      [],
    )
  })

  it('shows a failing upstream with its last error on the landing page', async () => {
    const broken = await startTestUpstream({ root: XSS_CACHE })
    broken.setFault(/./, { kind: 'status', status: 500 })
    const other = await startUnnar([broken.url, fixtures.url])
    try {
      const api = await fetch(`${other.url}/api/upstreams`)
      if (!api.ok) return // the API is not there yet: the first test covers the fallback
      assert.equal((await fetch(`${other.url}/nix/store/${basicBase}/`)).status, 200)
      const { page, problems } = await open()
      await page.goto(`${other.url}/`)
      await page.waitForSelector('#upstreams li.state-failing')
      const items = await page.$$eval('#upstreams li', (lis) =>
        lis.map((li) => [
          li.className,
          li.querySelector('.state')?.textContent,
          li.querySelector('.error')?.textContent ?? '',
        ]),
      )
      assert.deepEqual(
        items.map(([cls, state]) => [cls, state]),
        [
          ['state-failing', 'failing'],
          ['state-ok', 'ok'],
        ],
      )
      assert.match(items[0]![2]!, /500/)
      await shot(page, 'landing-failing')
      assert.deepEqual(problems, [])
    } finally {
      await other.stop()
      await broken.close()
    }
  })

  it('says "unknown" when the upstream list cannot be loaded', async () => {
    const { page } = await open()
    await page.route(`${unnar.url}/api/upstreams`, (route) =>
      route.fulfill({ status: 404, contentType: 'text/plain', body: 'no' }),
    )
    await page.goto(`${unnar.url}/`)
    await page.waitForSelector('#upstreams li .state:text-is("unknown")')
    assert.equal(await page.textContent('#upstreams li .name'), 'The upstreams could not be loaded')
  })

  it("needs nothing a strict Content-Security-Policy on unnar's own pages would forbid", async () => {
    const { page, problems } = await open()
    const csp =
      "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    const violations: string[] = []
    page.on('console', (message) => {
      if (/Content Security Policy|Refused to/i.test(message.text())) violations.push(message.text())
    })
    await page.route(`${unnar.url}/**`, async (route) => {
      if (route.request().resourceType() !== 'document') return route.continue()
      const response = await route.fetch()
      await route.fulfill({ response, headers: { ...response.headers(), 'content-security-policy': csp } })
    })
    await page.goto(`${unnar.url}/`)
    await page.waitForSelector('#upstreams li .state')
    await page.fill('#path', `${basicBase}/lib/`)
    await Promise.all([page.waitForURL(`${unnar.url}/nix/store/${basicBase}/lib/`), page.press('#path', 'Enter')])
    await page.click('th.s button')
    await page.fill('#filter', 'blob')
    assert.deepEqual(await visibleNames(page), ['blob.bin'])
    await page.goto(`${unnar.url}/nix/store/${basicBase}/nope`)
    assert.equal(await page.textContent('h1'), '404 Not Found')
    assert.deepEqual(violations, [])
    assert.deepEqual(problems, [])
  })

  it('works without JavaScript: rows and links, no inert controls', async () => {
    const { page } = await open({ javaScriptEnabled: false })
    await page.goto(`${unnar.url}/nix/store/${appBase}/bin/`)
    assert.deepEqual(await visibleNames(page), ['dep-link', 'uses-dep'])
    assert.ok(!(await page.isVisible('.toolbar')))
    // The only buttons are the forms' that ask for JSON and the downloads, which work without a script.
    assert.deepEqual(
      await page.$$eval('button', (buttons) =>
        buttons.map((b) => (b.closest('form') === null ? 'inert' : b.textContent)),
      ),
      ['JSON', 'tar', 'tar.gz', 'tar.zst', 'zip', 'NAR'],
    )
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('button[value="tar.gz"]')])
    assert.equal(download.suggestedFilename(), 'bin.tar.gz')
    assert.equal(new URL(download.url()).search, '?archive=tar.gz')
    await Promise.all([page.waitForURL(`${unnar.url}/nix/store/${depBase}/lib/dep.txt`), page.click('a.target')])
    await page.goto(`${unnar.url}/nix/store/${appBase}/bin/`)
    const [json] = await Promise.all([
      page.waitForResponse((r) => r.request().isNavigationRequest()),
      page.click('form.alt button'),
    ])
    assert.equal(new URL(json.url()).search, '?json=')
    assert.match(json.headers()['content-type'] ?? '', /^application\/json/)
  })

  it('renders in light and dark, and on a phone without overflowing', async () => {
    for (const colorScheme of ['light', 'dark'] as const) {
      const { page, problems } = await open({ colorScheme })
      await page.goto(`${unnar.url}/`)
      await page.waitForSelector('#upstreams li .state')
      await shot(page, `landing-${colorScheme}`)
      await page.goto(`${unnar.url}/nix/store/${basicBase}/lib/`)
      await shot(page, `listing-${colorScheme}`)
      await page.goto(`${unnar.url}/nix/store/${appBase}/bin/`)
      await shot(page, `listing-app-bin-${colorScheme}`)
      const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor)
      const foreground = await page.evaluate(() => getComputedStyle(document.body).color)
      assert.notEqual(background, foreground)
      if (colorScheme === 'dark') assert.match(background, /rgb\((\d|[1-4]\d),/, `dark background: ${background}`)
      else assert.match(background, /rgb\(2[0-5]\d,/, `light background: ${background}`)
      const res = await page.goto(`${unnar.url}/nix/store/${basicBase}/nope`)
      assert.equal(res?.status(), 404)
      await shot(page, `error-${colorScheme}`)
      assert.deepEqual(problems, [])
    }

    const { page, problems } = await open({
      viewport: { width: 390, height: 844 },
      isMobile: true,
      hasTouch: true,
      deviceScaleFactor: 2,
    })
    for (const [name, url] of [
      ['landing-mobile', '/'],
      ['listing-mobile', `/nix/store/${basicBase}/lib/`],
      ['listing-xss-mobile', `/nix/store/${XSS_BASE}/`],
      ['listing-many-mobile', `/nix/store/${trickyBase}/many/`],
    ] as const) {
      await page.goto(`${unnar.url}${url}`)
      if (name === 'landing-mobile') await page.waitForSelector('#upstreams li .state')
      const overflow = await page.evaluate(
        () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
      )
      assert.ok(overflow <= 0, `${name} overflows by ${overflow}px`)
      if (name === 'listing-many-mobile') {
        // Scrolled far down, the column headers stay in view.
        await page.evaluate(() => window.scrollTo(0, 3000))
        await page.evaluate(() => new Promise((resolve) => requestAnimationFrame(() => resolve(null)))) // laid out after the scroll
        const top = await page.evaluate(
          () => document.querySelector('table.listing thead')!.getBoundingClientRect().top,
        )
        assert.ok(Math.abs(top) < 2, `sticky header at ${top}`)
      }
      await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: name !== 'listing-many-mobile' })
    }
    // Less important columns are hidden on a phone.
    assert.equal(await page.locator('th.m').isVisible(), false)
    assert.deepEqual(problems, [])
  })
  it('searches the whole store path from the filter, and opens a hit', async () => {
    const { page, problems } = await open()
    await page.goto(`${unnar.url}/nix/store/${trickyBase}/unicode/`)
    assert.ok(!(await page.isVisible('#find-all')), 'offered only for a filter text')
    await page.fill('#filter', 'SIGN')
    assert.ok(await page.isVisible('#nomatch'))
    assert.equal(await page.textContent('#find-all'), 'Search the whole store path for “SIGN”')
    assert.equal(await page.getAttribute('#find-all', 'rel'), 'nofollow')
    await shot(page, 'listing-filter-find-all')
    await Promise.all([page.waitForURL(`${unnar.url}/nix/store/${trickyBase}/?find=SIGN`), page.click('#find-all')])
    assert.deepEqual(await visibleNames(page), ['names/hash#sign.txt', 'names/plus+sign.txt'])
    assert.equal(await page.inputValue('#find'), 'SIGN')
    assert.match((await page.textContent('.summary')) ?? '', /^2 entries whose path contains SIGN/)
    await shot(page, 'find-results')

    // The results filter and sort like a listing; the search box searches again.
    await page.fill('#filter', 'plus')
    assert.deepEqual(await visibleNames(page), ['names/plus+sign.txt'])
    await page.fill('#find', 'café')
    await Promise.all([page.waitForURL(/\?find=caf%C3%A9$/), page.press('#find', 'Enter')])
    assert.deepEqual(await visibleNames(page), ['unicode/über café.txt'])
    const [response] = await Promise.all([
      page.waitForResponse((r) => r.request().isNavigationRequest()),
      page.click('#entries a:text-is("unicode/über café.txt")'),
    ])
    assert.equal(response.status(), 200)
    assert.equal(decodeURIComponent(new URL(response.url()).pathname), `/nix/store/${trickyBase}/unicode/über café.txt`)
    assert.deepEqual(problems, [])
  })
  // A store path of its own, with a Nix file of 40 lines.
  const viewer = serveStorePath('viewer', () => {
    const nix = Array.from({ length: 40 }, (_, i) => `  option${i} = "value ${i}"; # comment ${i}`)
    return directory({ 'default.nix': regular(`{\n${nix.join('\n')}\n}\n`) })
  })

  it('views a file with line numbers: #L10-L20 highlights those lines, a click or shift-click picks lines', async () => {
    const { page, problems } = await open()
    await page.goto(`${unnar.url}/nix/store/${trickyBase}/many/`)
    // listing.js adds a nofollow "view" link to text files.
    const viewLink = page.locator('#entries tr:has(a:text-is("f00001.txt")) a.view')
    assert.equal(await viewLink.getAttribute('rel'), 'nofollow')
    assert.equal(await viewLink.getAttribute('href'), 'f00001.txt?view')

    await viewLines(page, `${viewer.unnar.url}/nix/store/${viewer.base}/default.nix?view`)
    assert.deepEqual(problems, [])
  })

  async function viewLines(page: Page, url: string): Promise<void> {
    await page.goto(`${url}#L10-L20`)
    const highlighted = () => page.$$eval('table.code tr.hl', (rows) => rows.map((row) => row.id))
    assert.deepEqual(
      await highlighted(),
      Array.from({ length: 11 }, (_, i) => `L${i + 10}`),
    )
    assert.ok((await page.locator('table.code .hljs-string').count()) > 0, 'highlighted as Nix')
    await shot(page, 'view-range')
    await page.goto(`${url}#L3-L5`)
    assert.deepEqual(await highlighted(), ['L3', 'L4', 'L5'])
    await page.click('table.code tr#L2 td.ln a')
    assert.equal(new URL(page.url()).hash, '#L2')
    assert.deepEqual(await highlighted(), ['L2'])
    await page.click('table.code tr#L4 td.ln a', { modifiers: ['Shift'] })
    assert.equal(new URL(page.url()).hash, '#L2-L4')
    assert.deepEqual(await highlighted(), ['L2', 'L3', 'L4'])
    // Line numbers are not part of the text: selecting the code copies no numbers.
    assert.equal(await page.textContent('table.code tr#L1 td.ln'), '')
    const dark = await open({ colorScheme: 'dark' })
    await dark.page.goto(`${url}#L10`)
    await shot(dark.page, 'view-dark')
    assert.deepEqual(dark.problems, [])
  }
})
