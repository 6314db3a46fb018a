/** Tests for src/http/tree-search.ts. */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { type ListingNode, parseListing } from '../../src/formats/listing.js'
import { MAX_FIND_HITS, MAX_FIND_PATH_CHARS, searchTree } from '../../src/http/tree-search.js'

type DirectoryNode = Extract<ListingNode, { type: 'directory' }>

function tree(entries: Record<string, unknown>): DirectoryNode {
  return parseListing(JSON.stringify({ version: 1, root: { type: 'directory', entries } })).root as DirectoryNode
}

const file = { type: 'regular', size: 1 }
const sample = tree({
  bin: { type: 'directory', entries: { Hello: file, 'hello-wrapped': { type: 'symlink', target: 'Hello' } } },
  share: { type: 'directory', entries: { doc: { type: 'directory', entries: { 'HELLO.md': file } } } },
  'zz-hello': file,
})

describe('searchTree', () => {
  it('finds paths containing the text in any case, each directory before its entries, in NAR order', () => {
    const { hits, truncated } = searchTree(sample, 'hello')
    assert.equal(truncated, false)
    assert.deepEqual(
      hits.map((h) => h.path),
      ['bin/Hello', 'bin/hello-wrapped', 'share/doc/HELLO.md', 'zz-hello'],
    )
    assert.equal(hits[1]?.node.type, 'symlink')
  })

  it('matches across slashes, and directories by their own path', () => {
    assert.deepEqual(
      searchTree(sample, 'E/D').hits.map((h) => h.path),
      ['share/doc', 'share/doc/HELLO.md'],
    )
    assert.deepEqual(searchTree(sample, 'nothing').hits, [])
  })

  it(`stops at ${MAX_FIND_HITS} hits and says so`, () => {
    const entries: Record<string, unknown> = {}
    for (let i = 0; i <= MAX_FIND_HITS; i++) entries[`f${String(i).padStart(5, '0')}`] = file
    const { hits, truncated } = searchTree(tree(entries), 'f')
    assert.equal(hits.length, MAX_FIND_HITS)
    assert.equal(truncated, true)
    assert.equal(searchTree(tree(entries), 'f01000').truncated, false)
  })

  it(`stops before its paths pass ${MAX_FIND_PATH_CHARS} characters`, () => {
    const entries: Record<string, unknown> = {}
    // Longer names than a NAR allows: the bound holds whatever a `.ls` says.
    const long = 'x'.repeat(1100)
    for (let i = 0; i < MAX_FIND_HITS; i++) entries[`${String(i).padStart(4, '0')}${long}`] = file
    const { hits, truncated } = searchTree(tree(entries), 'x')
    assert.equal(truncated, true)
    assert.ok(hits.length < MAX_FIND_HITS)
    assert.ok(hits.reduce((sum, h) => sum + h.path.length, 0) <= MAX_FIND_PATH_CHARS)
  })
})
