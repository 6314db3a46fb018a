/** `?find=`: every entry below a directory whose relative path contains a text, case-insensitively. */
import type { ListingNode } from '../formats/listing.js'

type DirectoryNode = Extract<ListingNode, { type: 'directory' }>

/** One entry found: its path relative to the searched directory, and its node. */
export interface TreeHit {
  readonly path: string
  readonly node: ListingNode
}

export interface TreeSearch {
  /** In NAR order: a directory before what it holds, names in byte order. */
  readonly hits: readonly TreeHit[]
  /** More entries matched than the answer holds (see the limits below). */
  readonly truncated: boolean
}

/** The most hits one answer lists: more is no longer a search result but a listing of the tree. */
export const MAX_FIND_HITS = 1000
/** And the most UTF-16 code units of their paths (2 MiB of strings), however long the names are. */
export const MAX_FIND_PATH_CHARS = 1024 * 1024
/** A longer text cannot match: NAR entry paths are at most 4095 bytes (nar-indexer.ts). */
export const MAX_FIND_TEXT_CHARS = 4095

/**
 * The entries below `directory` whose path relative to it contains `text`, compared in lower case
 * (`toLowerCase()`, so `README` finds `readme.md` and `É` finds `é`). Walks the whole tree once,
 * without recursion; the first hits in NAR order are kept up to the limits above.
 */
export function searchTree(directory: DirectoryNode, text: string): TreeSearch {
  const needle = text.toLowerCase()
  const hits: TreeHit[] = []
  let chars = 0
  const pending: Array<readonly [string, ListingNode]> = []
  pushChildren(pending, '', directory)
  for (let item = pending.pop(); item !== undefined; item = pending.pop()) {
    const [path, node] = item
    if (path.toLowerCase().includes(needle)) {
      if (hits.length === MAX_FIND_HITS || chars + path.length > MAX_FIND_PATH_CHARS) return { hits, truncated: true }
      hits.push({ path, node })
      chars += path.length
    }
    if (node.type === 'directory') pushChildren(pending, path, node)
  }
  return { hits, truncated: false }
}

/** Pushes the entries of `directory` last first, so that popping them visits them in NAR order. */
function pushChildren(pending: Array<readonly [string, ListingNode]>, path: string, directory: DirectoryNode): void {
  const start = pending.length
  for (const [name, node] of directory.entries) pending.push([path === '' ? name : `${path}/${name}`, node])
  for (let i = start, j = pending.length - 1; i < j; i++, j--) [pending[i], pending[j]] = [pending[j]!, pending[i]!]
}
