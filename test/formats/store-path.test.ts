/** Tests for src/formats/store-path.ts. */
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import {
  DEFAULT_STORE_DIR,
  MAX_STORE_NAME_LENGTH,
  STORE_HASH_LENGTH,
  StorePathError,
  formatStorePath,
  isStoreHash,
  isStoreName,
  parseStoreBaseName,
  parseStorePath,
} from '../../src/formats/store-path.js'
import { CACHES_DIR } from './fixtures.js'

const HASH = '1k87k4082pzf85pfmqzjslxn34n5vrjn'

describe('parseStorePath', () => {
  it('parses and re-formats every fixture store path', () => {
    const lines = readFileSync(join(CACHES_DIR, 'paths.txt'), 'utf8').trim().split('\n')
    assert.equal(lines.length, 5)
    for (const line of lines) {
      const path = line.split(' ')[1]!
      const parsed = parseStorePath(path)
      assert.equal(parsed.storeDir, DEFAULT_STORE_DIR)
      assert.equal(parsed.hash.length, STORE_HASH_LENGTH)
      assert.match(parsed.name, /^fixture-[a-z]+-1$/)
      assert.equal(formatStorePath(parsed), path)
    }
  })

  it('splits hash and name', () => {
    assert.deepEqual(parseStorePath(`/nix/store/${HASH}-fixture-dep-1`), {
      storeDir: '/nix/store',
      hash: HASH,
      name: 'fixture-dep-1',
    })
  })

  it('accepts another store directory when asked to', () => {
    assert.deepEqual(parseStorePath(`/gnu/store/${HASH}-x`, '/gnu/store'), {
      storeDir: '/gnu/store',
      hash: HASH,
      name: 'x',
    })
  })

  it('rejects what is not a store path', () => {
    const cases: [path: string, why: string][] = [
      [`/gnu/store/${HASH}-x`, 'another store directory'],
      [`/nix/store//${HASH}-x`, 'store directory must match exactly'],
      [`/nix/store/${HASH}-x/bin/sh`, 'a path below a store path'],
      [`/nix/store/${HASH}-x/`, 'trailing slash'],
      [`nix/store/${HASH}-x`, 'relative'],
      [`${HASH}-x`, 'a base name alone'],
      ['/nix/store', 'the store directory itself'],
      [`/nix/store/${HASH.slice(1)}-x`, 'hash part too short'],
      [`/nix/store/${HASH}`, 'no name'],
      [`/nix/store/${HASH}-`, 'empty name'],
      [`/nix/store/${HASH}_x`, "no '-' after the hash"],
    ]
    for (const [path, why] of cases) assert.throws(() => parseStorePath(path), StorePathError, why)
  })
})

describe('parseStoreBaseName', () => {
  it('returns hash and name', () => {
    assert.deepEqual(parseStoreBaseName(`${HASH}-fixture-dep-1`), { hash: HASH, name: 'fixture-dep-1' })
    assert.deepEqual(parseStoreBaseName(`${HASH}-foo.drv`), { hash: HASH, name: 'foo.drv' })
  })

  it('rejects a bad hash part or name, saying which', () => {
    const cases: [baseName: string, pattern: RegExp, why: string][] = [
      [`${HASH.slice(0, 31)}e-x`, /32 nix32 characters/, 'e is not nix32'],
      [`${HASH.toUpperCase()}-x`, /32 nix32 characters/, 'upper case hash'],
      [`${HASH}x`, /expected '-'/, 'no separator'],
      [`${HASH}-a/b`, /name must be/, "'/' in the name"],
      [`${HASH}-a b`, /name must be/, 'space in the name'],
      [`${HASH}-${'a'.repeat(MAX_STORE_NAME_LENGTH + 1)}`, /name must be/, 'name too long'],
    ]
    for (const [baseName, pattern, why] of cases) {
      assert.throws(
        () => parseStoreBaseName(baseName),
        (error: unknown) => error instanceof StorePathError && pattern.test(error.message),
        why,
      )
    }
  })
})

describe('isStoreHash', () => {
  it('wants exactly 32 nix32 characters', () => {
    assert.equal(isStoreHash(HASH), true)
    assert.equal(isStoreHash(HASH.slice(1)), false)
    assert.equal(isStoreHash(`${HASH}0`), false)
    assert.equal(isStoreHash(`${HASH.slice(1)}t`), false)
  })
})

describe('isStoreName', () => {
  it('accepts Nix names', () => {
    for (const name of [
      'a',
      'hello-2.12.1',
      '.foo',
      '..foo',
      '...',
      '-x',
      'foo?bar=1+x_y',
      'A'.repeat(MAX_STORE_NAME_LENGTH),
    ]) {
      assert.equal(isStoreName(name), true, name)
    }
  })

  it('rejects names newer Nix rejects', () => {
    const cases: [name: string, why: string][] = [
      ['', 'empty'],
      ['.', 'dot'],
      ['..', 'dot dot'],
      ['.-foo', "starts with '.-'"],
      ['..-foo', "starts with '..-'"],
      ['a/b', 'slash'],
      ['a@b', 'character outside the set'],
      ['über', 'non-ASCII'],
      ['A'.repeat(MAX_STORE_NAME_LENGTH + 1), 'longer than 211'],
    ]
    for (const [name, why] of cases) assert.equal(isStoreName(name), false, why)
  })
})
