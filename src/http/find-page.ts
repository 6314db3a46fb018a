/**
 * The HTML page of a `?find=` search: the directory's breadcrumbs, a search box, and one row per
 * hit linking to it. Rows have the listing's shape (ids, classes, data-size), so /_unnar/listing.js
 * sorts, filters and copies them too. Every path is HTML-escaped and every link percent-encoded.
 */
import type { ListingNode } from '../formats/listing.js'
import { encodePath, escapeHtml } from './html.js'
import { breadcrumbs, directoryRow, regularRow, tableHead } from './listing-page.js'
import { pageEnd, pageStart, type PageFrame } from './page-frame.js'
import { MAX_FIND_HITS, type TreeSearch } from './tree-search.js'
import { isViewable } from './view-language.js'

export interface FindPageOptions {
  /** `/nix/store/<hash>-<name>`, without a trailing slash. */
  readonly base: string
  /** The searched directory's path inside the store path ([] is its root). */
  readonly segments: readonly string[]
  readonly text: string
  readonly search: TreeSearch
}

export function renderFindPage({ base, segments, text, search }: FindPageOptions): string {
  const slash = base.lastIndexOf('/')
  const frame: PageFrame = {
    title: `“${text}” in ${[base, ...segments].join('/')}/`,
    bodyClass: 'listing-page find-page',
    scripts: ['/_unnar/listing.js'],
  }
  const rows = search.hits.map(({ path, node }) => hitRow(path, node))
  const value = escapeHtml(text)
  return (
    pageStart(frame) +
    `<main class="layout wide"><h1 class="crumbs">${breadcrumbs(base.slice(0, slash), base.slice(slash + 1), segments)}</h1>` +
    `<section class="files" aria-label="Search results">` +
    // Forms, not links: mirroring tools follow links, never forms (as for `?json` on listings).
    `<form class="find" method="get" action="" role="search"><label for="find">Find</label>` +
    `<input id="find" name="find" type="search" value="${value}" required autocomplete="off" spellcheck="false">` +
    `<button type="submit">Search</button> <a href="./">back to the listing</a></form>` +
    `<div class="bar"><p class="summary">${summary(text, search)}</p>` +
    `<form class="alt" method="get" action=""><input type="hidden" name="find" value="${value}">` +
    `<input type="hidden" name="json" value="">as <button type="submit" class="as-link">JSON</button></form></div>` +
    tableHead('Path') +
    `<tbody id="entries">${rows.join('\n')}</tbody></table>` +
    (rows.length === 0 ? `<p class="empty">No entry below this directory matches.</p>` : '') +
    `<p class="empty" id="nomatch" hidden>No entry matches the filter.</p>` +
    `</section></main><div class="toast" id="toast" role="status" aria-live="polite"></div>` +
    pageEnd(frame)
  )
}

function summary(text: string, search: TreeSearch): string {
  const count = search.hits.length
  const what = `${count.toLocaleString('en-US')} ${count === 1 ? 'entry' : 'entries'} whose path contains <q>${escapeHtml(text)}</q> (any case)`
  return search.truncated
    ? `${what}: the search stopped there (at most ${MAX_FIND_HITS.toLocaleString('en-US')}); try a longer text`
    : what
}

/** Every hit is a link to its own path: a symlink's redirects to where its chain ends. */
function hitRow(path: string, node: ListingNode): string {
  const href = escapeHtml(encodePath(path.split('/')))
  const label = escapeHtml(path)
  if (node.type === 'directory') return directoryRow(href, label)
  if (node.type === 'regular') return regularRow(href, label, node, isViewable(path.slice(path.lastIndexOf('/') + 1)))
  return (
    `<tr class="l" data-size="-1"><td class="t"><i class="i" role="img" aria-label="symbolic link"></i></td>` +
    `<td class="n"><a href="${href}">${label}</a> <span class="arrow" aria-label="points to">→</span> ` +
    `<span class="target">${escapeHtml(node.target)}</span></td><td class="s"></td><td class="m">lrwxrwxrwx</td><td class="c"></td></tr>`
  )
}
