/** Fingerprints, ed25519 narinfo signatures and the content-address trust rule, on real Nix-made narinfos. */
import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { describe, it } from 'node:test'
import { parseNarInfo } from '../../src/formats/narinfo.js'
import { CACHE_NIXOS_ORG_KEY, fingerprint, isContentAddressed, parsePublicKey, parsePublicKeys, SignatureError, verifyNarInfo } from '../../src/formats/signature.js'
import { cacheDir, FIXTURE_CACHES } from '../helpers/fixtures.js'
import { DOC_KEY as DOC_KEY_TEXT, DOC_NARINFO_HELLO, DOC_NARINFO_REFS } from './fixtures.js'

const testKeys = parsePublicKeys(readFileSync(path.join(FIXTURE_CACHES, 'test-key.pub'), 'utf8'))
const narinfos = (cache: string) =>
  readdirSync(cacheDir(cache))
    .filter((f) => f.endsWith('.narinfo'))
    .map((f) => parseNarInfo(readFileSync(path.join(cacheDir(cache), f), 'utf8')))

// Vectors from ../shared/reference/nix-formats.md §3.4 and §4.1 (made and checked with Nix 2.8).
const REFS = DOC_NARINFO_REFS
const HELLO = DOC_NARINFO_HELLO
const DOC_KEY = parsePublicKey(DOC_KEY_TEXT)

describe('fingerprint', () => {
  it('matches Nix: full, sorted reference paths and the NarHash as sha256:nix32', () => {
    assert.equal(
      fingerprint(parseNarInfo(REFS)),
      '1;/nix/store/wi32l2ngn8irgnjb81408mpn1n6nncy1-refs;sha256:1plynzzh6y7vnyy398z8b19c8whilf1v42n0v595kl91jbhxsb55;168;/nix/store/925f1jb1ajrypjbyq7rylwryqwizvhp0-hello.txt',
    )
    assert.equal(fingerprint(parseNarInfo(HELLO)), '1;/nix/store/925f1jb1ajrypjbyq7rylwryqwizvhp0-hello.txt;sha256:0h40zg6hakjv951nyhdad7mv9za56m3za5gnpiw5s1hbwcxzdrq3;128;')
  })
})

describe('verifyNarInfo', () => {
  it('verifies the documented vectors with their key', () => {
    assert.equal(verifyNarInfo(parseNarInfo(REFS), [DOC_KEY]), 'test-cache-1')
    assert.equal(verifyNarInfo(parseNarInfo(HELLO), [DOC_KEY]), 'test-cache-1')
  })

  it('verifies every signed fixture narinfo with the fixture key, and none with another key', () => {
    for (const info of narinfos('xz')) {
      assert.equal(verifyNarInfo(info, testKeys), 'nar-serve-test-1', info.storePath)
      assert.equal(verifyNarInfo(info, [parsePublicKey(CACHE_NIXOS_ORG_KEY)]), undefined)
    }
  })

  it('rejects a signature over changed fields, and ignores unsigned narinfos', () => {
    assert.equal(verifyNarInfo(parseNarInfo(REFS.replace('NarSize: 168', 'NarSize: 169')), [DOC_KEY]), undefined)
    assert.equal(verifyNarInfo(parseNarInfo(REFS.replace('References: 925f', 'References: 825f')), [DOC_KEY]), undefined)
    for (const info of narinfos('unsigned')) assert.equal(verifyNarInfo(info, testKeys), undefined)
  })

  it('ignores signatures that are malformed or by unknown keys', () => {
    const text = REFS.replace(/^Sig: .*$/m, 'Sig: test-cache-1:AAAA\nSig: other:QKoLcFUQal6lVkmX3vgs9vNVukbL7ldwByo5neSIkvzY/9I1RtHNBJ0rN6O0kBz3UvmjMg0qPBA3X9F2Dod+BQ==')
    assert.equal(verifyNarInfo(parseNarInfo(text), [DOC_KEY]), undefined)
  })
})

describe('isContentAddressed', () => {
  it('recomputes fixed:r:sha256 paths (the CA fixtures and the documented vector)', () => {
    assert.ok(isContentAddressed(parseNarInfo(HELLO)))
    const ca = narinfos('unsigned').filter((i) => i.ca !== undefined)
    assert.equal(ca.length, 3)
    for (const info of ca) assert.ok(isContentAddressed(info), info.storePath)
  })

  it('refuses a CA field that does not produce the store path, and paths without one', () => {
    assert.ok(!isContentAddressed(parseNarInfo(HELLO.replace('hello.txt\nURL', 'hello.tx\nURL').replace('-hello.txt\n', '-hello.tx\n'))))
    assert.ok(!isContentAddressed(parseNarInfo(HELLO.replace(/CA: .*\n/, 'CA: fixed:r:sha256:1h40zg6hakjv951nyhdad7mv9za56m3za5gnpiw5s1hbwcxzdrq3\n'))))
    assert.ok(!isContentAddressed(parseNarInfo(REFS)))
  })
})

describe('parsePublicKey', () => {
  it('rejects keys without a name or of the wrong length', () => {
    for (const bad of ['nocolon', ':oIrzGFlHoLyk2IdOBAO/WHZfxNuKsFwxOjl+cCKZzJ8=', 'name:AAAA']) {
      assert.throws(() => parsePublicKey(bad), SignatureError, bad)
    }
  })
  it('keeps the first of two keys with one name, like Nix', () => {
    const keys = parsePublicKeys(`${DOC_KEY.text}  test-cache-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=`)
    assert.equal(keys.length, 1)
    assert.equal(keys[0]!.text, DOC_KEY.text)
  })
})
