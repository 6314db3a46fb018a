/**
 * The HTML page for a directory inside a store path: breadcrumbs, one row per entry, and the store
 * path's narinfo. Every name is HTML-escaped and every link percent-encoded; the page works without
 * JavaScript, and /_unnar/listing.js adds sorting, filtering and "copy curl command" buttons.
 */
import { formatHashNix32 } from '../formats/hash.js'
import type { ListingNode } from '../formats/listing.js'
import { ARCHIVE_FORMATS } from '../store/tree-archive.js'
import type { PathInfo } from '../upstream/path-info-lookup.js'
import { encodePath, encodeSegment, escapeHtml } from './html.js'
import { isViewable } from './view-language.js'

type DirectoryNode = Extract<ListingNode, { type: 'directory' }>

export interface ListingPageOptions {
  /** `/nix/store/<hash>-<name>`, without a trailing slash. */
  readonly base: string
  /** The directory's path inside the store path ([] is its root). */
  readonly segments: readonly string[]
  /** Entries in NAR (byte) order. */
  readonly directory: DirectoryNode
  readonly info: PathInfo
  /** Where a percent-encoded `/nix/store/…` URL path is served (another host, in subdomain mode); default: there. */
  readonly storeHref?: (storePath: string) => string
  /** Where each symlink's chain ends, as a link (none: dangling, looping or leaving the store). */
  readonly symlinkHrefs?: ReadonlyMap<string, string>
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'] as const

/** `0 B`, `1023 B`, `1.0 KiB`, `2.9 MiB`, `293 KiB`: one decimal below 100, binary units. */
export function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`
  let value = bytes
  let unit = 0
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024
    unit += 1
  }
  let text = value < 100 ? value.toFixed(1) : String(Math.round(value))
  // 1023.96 KiB would print as "1024 KiB": move up a unit instead.
  if (text === '1024' && unit < UNITS.length - 1) {
    unit += 1
    text = '1.0'
  }
  return `${text} ${UNITS[unit]}`
}

/** `1 byte`, `3,000,000 bytes`: the exact size for a title attribute. */
export function formatBytes(bytes: number): string {
  return `${bytes.toLocaleString('en-US')} ${bytes === 1 ? 'byte' : 'bytes'}`
}

export function renderListingPage({
  base,
  segments,
  directory,
  info,
  storeHref = (path) => path,
  symlinkHrefs = new Map(),
}: ListingPageOptions): string {
  const slash = base.lastIndexOf('/')
  const storeDir = base.slice(0, slash)
  const baseName = base.slice(slash + 1)
  const fullPath = [base, ...segments].join('/') + '/'
  const rows = [...directory.entries].map(([name, node]) => entryRow(name, node, symlinkHrefs))
  return (
    `<!doctype html><html lang="en"><head><meta charset="utf-8">` +
    `<meta name="viewport" content="width=device-width, initial-scale=1"><meta name="color-scheme" content="light dark">` +
    `<title>${escapeHtml(fullPath)}</title><link rel="stylesheet" href="/_unnar/unnar.css">` +
    `<link rel="icon" href="/_unnar/favicon.svg" type="image/svg+xml"></head>` +
    `<body class="listing-page"><header class="top"><a class="brand" href="/">unnar</a></header><main class="layout">` +
    `<h1 class="crumbs">${breadcrumbs(storeDir, baseName, segments)}</h1>` +
    `<section class="files" aria-label="Directory entries">` +
    `<div class="bar"><p class="summary">${summary(directory)}</p>` +
    // A form, not a link: mirroring tools follow links (wget saves `index.html?json` in every
    // directory), never forms. Submitted, it asks for `?json=`, the same thing.
    `<form class="alt" method="get" action=""><input type="hidden" name="json" value="">as <button type="submit" class="as-link">JSON</button></form>` +
    downloadsForm() +
    `</div>` +
    tableHead('Name') +
    parentRow(segments) +
    `<tbody id="entries">${rows.join('\n')}</tbody></table>` +
    (rows.length === 0 ? `<p class="empty">This directory is empty.</p>` : '') +
    `<p class="empty" id="nomatch" hidden>No entry matches the filter.</p>` +
    `</section>` +
    infoPanel(info, storeDir, baseName, storeHref) +
    `</main><div class="toast" id="toast" role="status" aria-live="polite"></div>` +
    `<script src="/_unnar/listing.js" defer></script></body></html>\n`
  )
}

/** `?archive=<format>` and `?nar` downloads of this directory: a form too, never followed by mirroring tools. */
function downloadsForm(): string {
  const buttons = ARCHIVE_FORMATS.map(
    (format) => `<button type="submit" name="archive" value="${format}" class="as-link">${format}</button>`,
  )
  buttons.push(`<button type="submit" name="nar" value="" class="as-link" title="nix-store --restore">NAR</button>`)
  return `<form class="alt" method="get" action="" rel="nofollow">download ${buttons.join(' · ')}</form>`
}

function entryRow(name: string, node: ListingNode, symlinkHrefs: ReadonlyMap<string, string>): string {
  const href = escapeHtml(encodeSegment(name))
  const label = escapeHtml(name)
  if (node.type === 'directory') return directoryRow(href, label)
  if (node.type === 'regular') return regularRow(href, label, node, isViewable(name))
  // Only the target is a link: a mirroring tool (wget, rclone, lftp) then finds what it points
  // to where it really is, and makes no copy of it under the link's name.
  const targetHref = symlinkHrefs.get(name)
  const target =
    targetHref === undefined
      ? `<span class="target">${escapeHtml(node.target)}</span>`
      : `<a class="target" href="${escapeHtml(targetHref)}">${escapeHtml(node.target)}</a>`
  return (
    `<tr class="l" data-size="-1"><td class="t"><i class="i" role="img" aria-label="symbolic link"></i></td>` +
    `<td class="n"><span class="link">${label}</span> <span class="arrow" aria-label="points to">→</span> ${target}</td>` +
    `<td class="s"></td><td class="m">lrwxrwxrwx</td><td class="c"></td></tr>`
  )
}

/** The filter (shown by listing.js) and the table's head, up to its rows; `column`: what rows name. */
export function tableHead(column: 'Name' | 'Path'): string {
  return (
    `<div class="toolbar" hidden><label for="filter">Filter</label>` +
    `<input id="filter" type="search" autocomplete="off" spellcheck="false" placeholder="${column.toLowerCase()} contains…">` +
    `<output id="count" for="filter" aria-live="polite"></output></div>` +
    `<table class="listing" id="listing"><thead><tr>` +
    `<th class="t" scope="col"><span class="vh">Type</span></th><th class="n" scope="col" data-sort="name">${column}</th>` +
    `<th class="s" scope="col" data-sort="size">Size</th><th class="m" scope="col">Mode</th>` +
    `<th class="c" scope="col"><span class="vh">Actions</span></th></tr></thead>`
  )
}

/** A directory's row; `href` and `label` are escaped, without the trailing slash. */
export function directoryRow(href: string, label: string): string {
  return (
    `<tr class="d" data-size="-1"><td class="t"><i class="i" role="img" aria-label="directory"></i></td>` +
    `<td class="n"><a href="${href}/">${label}/</a></td><td class="s"></td><td class="m">dr-xr-xr-x</td><td class="c"></td></tr>`
  )
}

/** A file's row; `viewable`: listing.js adds a "view" link (file-view.ts) to it. */
export function regularRow(
  href: string,
  label: string,
  node: Extract<ListingNode, { type: 'regular' }>,
  viewable: boolean,
): string {
  const kind = node.executable ? 'x' : 'f'
  return (
    `<tr class="${kind}" data-size="${node.size}"${viewable ? ' data-view' : ''}><td class="t"><i class="i" role="img" aria-label="${node.executable ? 'executable file' : 'file'}"></i></td>` +
    `<td class="n"><a href="${href}">${label}</a></td>` +
    `<td class="s" title="${formatBytes(node.size)}">${formatSize(node.size)}</td>` +
    `<td class="m">${node.executable ? '<span class="exec" title="executable">-r-xr-xr-x</span>' : '-r--r--r--'}</td><td class="c"></td></tr>`
  )
}

/** `2 directories, 3 files · 1.2 MiB in files`, or `Empty directory`. */
function summary(directory: DirectoryNode): string {
  let directories = 0
  let files = 0
  let symlinks = 0
  let fileBytes = 0
  for (const node of directory.entries.values()) {
    if (node.type === 'directory') directories += 1
    else if (node.type === 'regular') {
      files += 1
      fileBytes += node.size
    } else symlinks += 1
  }
  const counts = [
    plural(directories, 'directory', 'directories'),
    plural(files, 'file', 'files'),
    plural(symlinks, 'symlink', 'symlinks'),
  ].filter((part) => part !== '')
  return (
    (counts.length === 0 ? 'Empty directory' : counts.join(', ')) +
    (files > 0 ? ` · <span title="${formatBytes(fileBytes)}">${formatSize(fileBytes)}</span> in files` : '')
  )
}

/** The `..` row, below the store path's root only. */
function parentRow(segments: readonly string[]): string {
  if (segments.length === 0) return ''
  return (
    `<tbody class="up"><tr class="p"><td class="t"><i class="i" role="img" aria-label="parent directory"></i></td>` +
    `<td class="n"><a href="../">..</a></td><td class="s"></td><td class="m"></td><td class="c"></td></tr></tbody>`
  )
}

/** The store path's narinfo, and where it came from. */
function infoPanel(
  info: PathInfo,
  storeDir: string,
  baseName: string,
  storeHref: (storePath: string) => string,
): string {
  const narInfo = info.narInfo
  const items: string[] = []
  const add = (term: string, value: string): void => {
    items.push(`<dt>${term}</dt><dd>${value}</dd>`)
  }
  add('StorePath', `<code>${escapeHtml(narInfo.storePath)}</code>`)
  add('NarHash', `<code>${escapeHtml(formatHashNix32(narInfo.narHash))}</code>`)
  add('NarSize', sizeWithBytes(narInfo.narSize))
  add('Compression', escapeHtml(narInfo.compression))
  if (narInfo.fileSize !== undefined) add('FileSize', sizeWithBytes(narInfo.fileSize))
  add('Upstream', `<code>${escapeHtml(info.upstream.name)}</code>`)
  add('Trusted by', trustedBy(info.trustedBy))
  add(
    'Deriver',
    narInfo.deriver === undefined ? '<span class="none">unknown</span>' : `<code>${escapeHtml(narInfo.deriver)}</code>`,
  )
  if (narInfo.system !== undefined) add('System', `<code>${escapeHtml(narInfo.system)}</code>`)
  if (narInfo.ca !== undefined) add('CA', `<code>${escapeHtml(narInfo.ca)}</code>`)
  add(
    `References <span class="n">(${narInfo.references.length})</span>`,
    referenceList(narInfo.references, storeDir, baseName, storeHref),
  )
  add(
    `Signatures <span class="n">(${narInfo.sigs.length})</span>`,
    narInfo.sigs.length === 0
      ? '<span class="none">none</span>'
      : `<ul class="sigs">${narInfo.sigs.map((sig) => `<li><code>${escapeHtml(sig)}</code></li>`).join('')}</ul>`,
  )
  return `<aside class="info" aria-labelledby="info-title"><h2 id="info-title">Store path</h2><dl>${items.join('')}</dl></aside>`
}

function trustedBy(trust: PathInfo['trustedBy']): string {
  if (trust === undefined) return 'not checked'
  if (trust === 'content-address') return 'content address'
  return `key <code>${escapeHtml(trust)}</code>`
}

/** Each reference as a link to its listing; the store path's own one is marked. */
function referenceList(
  references: readonly string[],
  storeDir: string,
  baseName: string,
  storeHref: (storePath: string) => string,
): string {
  if (references.length === 0) return '<span class="none">none</span>'
  const items = references.map((ref) => {
    const self = ref === baseName ? ' <span class="self">(this path)</span>' : ''
    return `<li><a href="${escapeHtml(storeHref(`${encodePath(storeDir.split('/'))}/${encodeURIComponent(ref)}/`))}">${escapeHtml(ref)}</a>${self}</li>`
  })
  return `<ul class="refs">${items.join('')}</ul>`
}

/**
 * `/nix/store/ <hash>-<name> / bin /` with every component a link, and `file` after them when the
 * page is a file's (the viewer). The links are relative to the page (served at the directory, with
 * a trailing slash, or at a file in it), so they do not depend on the host.
 */
export function breadcrumbs(storeDir: string, baseName: string, segments: readonly string[], file?: string): string {
  const depth = segments.length
  const up = (levels: number): string => (levels === 0 ? './' : '../'.repeat(levels))
  const parts = [`<span class="store">${escapeHtml(storeDir)}/</span>`]
  const names = [baseName, ...segments]
  names.forEach((name, index) => {
    // The page itself is no link: a listing reader (lftp) would list it as an entry `.`.
    const crumb =
      index === names.length - 1 && file === undefined
        ? `<span aria-current="page">${escapeHtml(name)}</span>`
        : `<a href="${up(depth - index)}">${escapeHtml(name)}</a>`
    parts.push(`${crumb}<span class="sep">/</span>`)
  })
  if (file !== undefined) parts.push(`<span aria-current="page">${escapeHtml(file)}</span>`)
  return parts.join('')
}

function sizeWithBytes(bytes: number): string {
  return `${formatSize(bytes)} <span class="bytes">(${formatBytes(bytes)})</span>`
}

function plural(count: number, one: string, many: string): string {
  if (count === 0) return ''
  return `${count.toLocaleString('en-US')} ${count === 1 ? one : many}`
}
