/**
 * The file viewer's HTML: breadcrumbs, links to the raw file, and one table row per line, each
 * with an anchor (`#L10`); /_unnar/viewer.js highlights `#L10-L20` ranges and picks lines on click.
 * Line numbers are CSS content, so copying code copies no numbers. Text arrives escaped
 * (highlight.ts); names are escaped and links percent-encoded here.
 */
import { encodeSegment, escapeHtml } from './html.js'
import { breadcrumbs, formatBytes, formatSize } from './listing-page.js'
import { pageEnd, pageStart, type PageFrame } from './page-frame.js'
import type { ViewLanguage } from './view-language.js'

export interface ViewPage {
  /** `/nix/store/<hash>-<name>`, without a trailing slash. */
  readonly base: string
  readonly segments: readonly string[]
  readonly name: string
  readonly size: number
}

export interface TextViewPage extends ViewPage {
  /** How many of the file's bytes the lines hold. */
  readonly shown: number
  readonly language: ViewLanguage | undefined
  /** HTML of each line. */
  readonly lines: readonly string[]
}

export function renderTextPage(page: TextViewPage): string {
  const rows = page.lines.map(
    (line, index) =>
      `<tr id="L${index + 1}"><td class="ln"><a href="#L${index + 1}" data-line="${index + 1}" aria-label="line ${index + 1}"></a></td><td class="lc">${line}</td></tr>`,
  )
  const count = page.lines.length
  const facts = [
    `${count.toLocaleString('en-US')} ${count === 1 ? 'line' : 'lines'}`,
    `<span title="${formatBytes(page.size)}">${formatSize(page.size)}</span>`,
    page.language ?? 'plain text',
  ]
  const cut =
    page.shown < page.size
      ? `<p class="notice">Showing the first ${facts[0]}, ${formatSize(page.shown)} of ${formatSize(page.size)}. ${rawLink(page, 'Open the whole file')}.</p>`
      : ''
  const body =
    count === 0
      ? `<p class="empty">This file is empty.</p>`
      : `<div class="code-wrap"><table class="code"><tbody>${rows.join('')}</tbody></table></div>`
  return frame(page, `<div class="bar"><p class="summary">${facts.join(' · ')}</p>${links(page)}</div>${cut}${body}`)
}

export function renderBinaryPage(page: ViewPage): string {
  const notice = `<p class="notice">This file is binary: it has NUL bytes or control characters, or is not UTF-8. ${rawLink(page, 'Open the raw file')}.</p>`
  const size = `<span title="${formatBytes(page.size)}">${formatSize(page.size)}</span> · binary`
  return frame(page, `<div class="bar"><p class="summary">${size}</p>${links(page)}</div>${notice}`)
}

function frame(page: ViewPage, content: string): string {
  const slash = page.base.lastIndexOf('/')
  const storeDir = page.base.slice(0, slash)
  const baseName = page.base.slice(slash + 1)
  // A store path may itself be a file: then its name is the whole trail.
  const crumbs =
    page.segments.length === 0
      ? breadcrumbs(storeDir, baseName, [])
      : breadcrumbs(storeDir, baseName, page.segments.slice(0, -1), page.name)
  const head: PageFrame = {
    title: [page.base, ...page.segments].join('/'),
    bodyClass: 'view-page',
    // highlight.js's GitHub themes, served from its package (static-assets.ts).
    stylesheets: [
      ['/_unnar/hljs-light.css', '(prefers-color-scheme: light)'],
      ['/_unnar/hljs-dark.css', '(prefers-color-scheme: dark)'],
    ],
    scripts: ['/_unnar/viewer.js'],
  }
  return (
    pageStart(head) + `<main class="viewer"><h1 class="crumbs">${crumbs}</h1>` + `${content}</main>` + pageEnd(head)
  )
}

/** The file itself, relative to the page (served at the file's own URL). */
function rawLink(page: ViewPage, text: string): string {
  return `<a href="${escapeHtml(encodeSegment(page.name))}">${text}</a>`
}

function links(page: ViewPage): string {
  const href = escapeHtml(encodeSegment(page.name))
  return `<p class="alt"><a href="${href}">raw</a> · <a href="${href}?download">download</a></p>`
}
