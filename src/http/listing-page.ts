/** The HTML page for a directory inside a store path. */
import type { ListingNode } from '../formats/listing.js'
import type { PathInfo } from '../upstream/path-info-lookup.js'
import { encodePath, escapeHtml } from './html.js'

type DirectoryNode = Extract<ListingNode, { type: 'directory' }>

export interface ListingPageOptions {
  readonly base: string
  readonly segments: readonly string[]
  readonly directory: DirectoryNode
  readonly info: PathInfo
}

export function renderListingPage({ base, segments, directory, info }: ListingPageOptions): string {
  const title = [base, ...segments].join('/') + '/'
  const rows: string[] = []
  if (segments.length > 0) rows.push(`<tr><td class="type">dir</td><td></td><td class="size"></td><td><a href="../">../</a></td></tr>`)
  for (const [name, node] of directory.entries) {
    const href = encodePath([name]) + (node.type === 'directory' ? '/' : '')
    const label = escapeHtml(name) + (node.type === 'directory' ? '/' : '')
    if (node.type === 'regular') {
      rows.push(
        `<tr><td class="type">file</td><td class="mode">${node.executable ? 'x' : ''}</td><td class="size">${node.size}</td><td><a href="${escapeHtml(href)}">${label}</a></td></tr>`,
      )
    } else if (node.type === 'symlink') {
      rows.push(
        `<tr><td class="type">link</td><td></td><td class="size"></td><td><a href="${escapeHtml(href)}">${label}</a> → ${escapeHtml(node.target)}</td></tr>`,
      )
    } else {
      rows.push(`<tr><td class="type">dir</td><td></td><td class="size"></td><td><a href="${escapeHtml(href)}">${label}</a></td></tr>`)
    }
  }
  return (
    `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">` +
    `<title>${escapeHtml(title)}</title><link rel="stylesheet" href="/static/unnar.css"></head><body><main>` +
    `<h1>${escapeHtml(title)}</h1>` +
    `<table class="listing"><thead><tr><th>type</th><th>exec</th><th>size</th><th>name</th></tr></thead><tbody>${rows.join('')}</tbody></table>` +
    `<p class="meta">from ${escapeHtml(info.upstream.name)} · NarSize ${info.narInfo.narSize} · Compression ${escapeHtml(info.narInfo.compression)}</p>` +
    `</main></body></html>\n`
  )
}
