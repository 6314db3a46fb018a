/** Tests for src/formats/nar-writer.ts: against Nix's own NARs (`nix-store --dump`) and random trees. */
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { after, describe, it } from 'node:test'
import fc from 'fast-check'
import { type ListingNode, listingFromEntries } from '../../src/formats/listing.js'
import { NarIndexer } from '../../src/formats/nar-indexer.js'
import { narPieces } from '../../src/formats/nar-writer.js'
import { narTree } from '../fuzz/arbitraries.js'
import { buildNar, concat, directory, nodeBytes, regular, str, symlink, type NarTree } from './nar-builder.js'
import { uncompressedNars } from './fixtures.js'

function listingOf(nar: Uint8Array): ListingNode {
  const indexer = new NarIndexer()
  const entries = indexer.push(nar)
  indexer.end()
  return listingFromEntries(entries).root
}

/** The pieces of `node`, with each file's contents copied from `nar`, as one buffer. */
function written(node: ListingNode, nar: Uint8Array): Uint8Array {
  const parts: Uint8Array[] = []
  for (const piece of narPieces(node)) {
    parts.push(piece.kind === 'bytes' ? piece.bytes : nar.subarray(piece.narOffset, piece.narOffset + piece.size))
  }
  return concat(parts)
}

/** Every node below `node` with its path, itself first. */
function* nodesOf(node: ListingNode, at: string[] = []): Generator<[string[], ListingNode]> {
  yield [at, node]
  if (node.type === 'directory') for (const [name, child] of node.entries) yield* nodesOf(child, [...at, name])
}

function* treesOf(tree: NarTree): Generator<NarTree> {
  yield tree
  if (tree.type === 'directory') for (const [, child] of tree.entries) yield* treesOf(child)
}

const hasNix = (() => {
  try {
    execFileSync('nix-store', ['--version'], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
})()

describe('narPieces', () => {
  const work = mkdtempSync(path.join(os.tmpdir(), 'unnar-nar-writer-'))
  after(() => rmSync(work, { recursive: true, force: true }))

  it('writes every fixture NAR byte for byte from its own listing', () => {
    for (const { storePath, nar } of uncompressedNars()) {
      assert.deepEqual(Buffer.from(written(listingOf(nar), nar)), nar, storePath)
    }
  })

  it("writes each node of Nix's NARs as nix-store --dump of it restored", { skip: !hasNix && 'no nix-store' }, () => {
    for (const { storePath, hashPart, nar } of uncompressedNars()) {
      const out = path.join(work, hashPart)
      execFileSync('nix-store', ['--restore', out], { input: nar })
      const root = listingOf(nar)
      // Every node but the many files of the tricky fixture's big directories: one nix-store each.
      const nodes = [...nodesOf(root)].filter(([at]) => !/^many/.test(at[0] ?? '') || at.length < 2)
      for (const [at, node] of nodes) {
        const dumped = execFileSync('nix-store', ['--dump', path.join(out, ...at)], { maxBuffer: 64 << 20 })
        assert.deepEqual(Buffer.from(written(node, nar)), dumped, `${storePath}/${at.join('/')}`)
      }
    }
  })

  it('writes the NAR of any node of a random tree, a file or symlink alone included', () => {
    fc.assert(
      fc.property(narTree, (tree) => {
        const nar = buildNar(tree)
        const root = listingOf(nar)
        const nodes = [...nodesOf(root)].map(([, node]) => node)
        const trees = [...treesOf(tree)]
        assert.equal(nodes.length, trees.length)
        nodes.forEach((node, i) => {
          assert.deepEqual(written(node, nar), concat([str('nix-archive-1'), nodeBytes(trees[i]!)]))
        })
      }),
    )
  })

  it('hands out framing in bounded runs, and contents as references', () => {
    const big = directory(Object.fromEntries(Array.from({ length: 3000 }, (_, i) => [`f${i}`, symlink('t')])))
    const nar = buildNar(directory({ big, file: regular('hello', true), empty: regular('') }))
    const pieces = [...narPieces(listingOf(nar))]
    assert.ok(pieces.filter((p) => p.kind === 'bytes').length > 2, 'the big directory comes in several runs')
    for (const piece of pieces) if (piece.kind === 'bytes') assert.ok(piece.bytes.length < 128 * 1024)
    // The empty file has no contents to copy.
    assert.deepEqual(
      pieces.filter((p) => p.kind === 'contents').map((p) => p.kind === 'contents' && p.size),
      [5],
    )
  })

  it('refuses a regular file without narOffset', () => {
    assert.throws(() => [...narPieces({ type: 'regular', size: 1, executable: false })], /without narOffset/)
  })
})
