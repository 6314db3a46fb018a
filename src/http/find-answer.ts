/** `<dir>/?find=<text>`: the search of tree-search.ts as JSON, plain text or the HTML results page. */
import type { ListingNode } from '../formats/listing.js'
import { HttpError } from './errors.js'
import { renderFindPage } from './find-page.js'
import { escapeLikeLs, type ListingFormat, shallow } from './listing-formats.js'
import { MAX_FIND_TEXT_CHARS, searchTree, type TreeSearch } from './tree-search.js'

type DirectoryNode = Extract<ListingNode, { type: 'directory' }>

export interface FindRequest {
  /** `/nix/store/<hash>-<name>`, without a trailing slash. */
  readonly base: string
  readonly segments: readonly string[]
  readonly directory: DirectoryNode
  /** The `find` query parameter. */
  readonly text: string
}

/** Content type and body; an empty or overlong text is a 400. */
export function findAnswer(format: ListingFormat, request: FindRequest): readonly [type: string, body: string] {
  const { text } = request
  if (text === '') throw new HttpError(400, '?find= needs a text to look for in the paths below this directory')
  if (text.length > MAX_FIND_TEXT_CHARS)
    throw new HttpError(400, `?find= text is longer than a path can be (${MAX_FIND_TEXT_CHARS} characters)`)
  const search = searchTree(request.directory, text)
  if (format === 'json') return ['application/json', formatFindJson(text, search)]
  if (format === 'text') return ['text/plain; charset=utf-8', formatFindText(search)]
  return ['text/html; charset=utf-8', renderFindPage({ ...request, search })]
}

/** `{"find":…,"truncated":…,"entries":[{"path":…,"type":…,…}]}`, each entry as in a JSON listing. */
export function formatFindJson(text: string, search: TreeSearch): string {
  const entries = search.hits.map(({ path, node }) => ({ path, ...shallow(node) }))
  return JSON.stringify({ find: text, truncated: search.truncated, entries }) + '\n'
}

/**
 * One path per line, escaped like the text listing (GNU `ls -b`), directories ending in `/`. When
 * the search stopped at its limit, a last line says so: it has unescaped spaces, so no path reads
 * like it.
 */
export function formatFindText(search: TreeSearch): string {
  const lines = search.hits.map(({ path, node }) => escapeLikeLs(path) + (node.type === 'directory' ? '/' : ''))
  if (search.truncated) lines.push(`# cut after ${lines.length} entries: search for a longer text`)
  return lines.join('\n') + (lines.length > 0 ? '\n' : '')
}
