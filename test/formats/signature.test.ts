/** Fingerprints, ed25519 narinfo signatures and the content-address trust rule, on real Nix-made narinfos. */
import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { describe, it } from 'node:test'
import { parseNarInfo } from '../../src/formats/narinfo.js'
import {
  CACHE_NIXOS_ORG_KEY,
  fingerprint,
  isContentAddressed,
  parsePublicKey,
  parsePublicKeys,
  SignatureError,
  verifyNarInfo,
} from '../../src/formats/signature.js'
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
    assert.equal(
      fingerprint(parseNarInfo(HELLO)),
      '1;/nix/store/925f1jb1ajrypjbyq7rylwryqwizvhp0-hello.txt;sha256:0h40zg6hakjv951nyhdad7mv9za56m3za5gnpiw5s1hbwcxzdrq3;128;',
    )
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
    assert.equal(
      verifyNarInfo(parseNarInfo(REFS.replace('References: 925f', 'References: 825f')), [DOC_KEY]),
      undefined,
    )
    for (const info of narinfos('unsigned')) assert.equal(verifyNarInfo(info, testKeys), undefined)
  })

  it('ignores signatures that are malformed or by unknown keys', () => {
    const text = REFS.replace(
      /^Sig: .*$/m,
      'Sig: test-cache-1:AAAA\nSig: other:QKoLcFUQal6lVkmX3vgs9vNVukbL7ldwByo5neSIkvzY/9I1RtHNBJ0rN6O0kBz3UvmjMg0qPBA3X9F2Dod+BQ==',
    )
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

  it('refuses a NarHash other than the CA hash: a forged NAR would pass as trusted', () => {
    const forged = HELLO.replace(
      /^NarHash: .*$/m,
      'NarHash: sha256:1h40zg6hakjv951nyhdad7mv9za56m3za5gnpiw5s1hbwcxzdrq3',
    )
    assert.notEqual(forged, HELLO)
    assert.ok(!isContentAddressed(parseNarInfo(forged)))
  })

  it('asks for a signature for flat, text and non-sha256 CA, whose hash is not the NAR hash unnar checks', () => {
    // Written by Nix 2.8 (`nix store add-file`, builtins.toFile, `nix store add-path --hash-algo sha1`):
    // their CA recomputes to the store path, but the CA hash covers the file's contents.
    const nixMade = [
      'StorePath: /nix/store/07r4mkxdkiaq7kldrv9z0nqffal1rsi4-tf\nURL: nar/0bjqk13g62cw9fqjsnxm4qmcfiiqzm0yyq3093skrgj1bvvy5pbc.nar\nCompression: none\nNarHash: sha256:0bjqk13g62cw9fqjsnxm4qmcfiiqzm0yyq3093skrgj1bvvy5pbc\nNarSize: 128\nReferences: \nCA: text:sha256:058n00fj78mgy7p37dn8vzklwxrp40dkn62194z1r082qfrgnrrb\n',
      'StorePath: /nix/store/n0pn1djbpi1ssfqgg8b9r4hnvmhbfabx-flat.txt\nURL: nar/0xygsgc29q39s4k915db2bi2pcil5x35y6q96p898mc1gvv2lrfv.nar\nCompression: none\nNarHash: sha256:0xygsgc29q39s4k915db2bi2pcil5x35y6q96p898mc1gvv2lrfv\nNarSize: 128\nReferences: \nCA: fixed:sha512:2dw177whfvpx9rdihcq1q79w66a8fxl8rqxqkzbq70797s8c0j6a09znfldylf954p42xl02zqn5l0w0haipbyqwf68j4vr67vfrvxv\n',
      'StorePath: /nix/store/0sc2mx1fb0dlsgifkf46c9apixwj7cni-dir\nURL: nar/00a3r8cv7xaw55wjf3lb0gzmfpgsj083h29s5mslnml9k8c0w0zc.nar\nCompression: none\nNarHash: sha256:00a3r8cv7xaw55wjf3lb0gzmfpgsj083h29s5mslnml9k8c0w0zc\nNarSize: 288\nReferences: \nCA: fixed:r:sha1:rvwfpafnra1xswq1v577n1i9hcsihpxc\n',
    ]
    for (const text of nixMade) assert.ok(!isContentAddressed(parseNarInfo(text)), text.split('\n')[0])
  })

  it('refuses a CA field that does not produce the store path, and paths without one', () => {
    assert.ok(
      !isContentAddressed(
        parseNarInfo(HELLO.replace('hello.txt\nURL', 'hello.tx\nURL').replace('-hello.txt\n', '-hello.tx\n')),
      ),
    )
    assert.ok(
      !isContentAddressed(
        parseNarInfo(
          HELLO.replace(/CA: .*\n/, 'CA: fixed:r:sha256:1h40zg6hakjv951nyhdad7mv9za56m3za5gnpiw5s1hbwcxzdrq3\n'),
        ),
      ),
    )
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
