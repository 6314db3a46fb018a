/** Tests for src/formats/hash.ts. */
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { describe, it } from 'node:test'
import {
  HashError,
  formatHashHex,
  formatHashNix32,
  formatHashSri,
  hashEquals,
  parseHash,
  parseHashWithEncoding,
} from '../../src/formats/hash.js'
import type { HashAlgorithm } from '../../src/formats/hash.js'
import { encodeNix32 } from '../../src/formats/nixbase32.js'

const HELLO_HEX = '03e7f63be30b065d78bcf615f5473545fdb4eb69aa416f43495b4e05cdfb8040'
const HELLO_NIX32 = '0h40zg6hakjv951nyhdad7mv9za56m3za5gnpiw5s1hbwcxzdrq3'
const HELLO_BASE64 = Buffer.from(HELLO_HEX, 'hex').toString('base64')

describe('parseHash', () => {
  it('reads the same sha256 written in base16, nix32, base64 and SRI', () => {
    const forms: [text: string, encoding: string][] = [
      [`sha256:${HELLO_HEX}`, 'base16'],
      [`sha256:${HELLO_HEX.toUpperCase()}`, 'base16'],
      [`sha256:${HELLO_NIX32}`, 'nix32'],
      [`sha256:${HELLO_BASE64}`, 'base64'],
      [`sha256-${HELLO_BASE64}`, 'sri'],
    ]
    for (const [text, encoding] of forms) {
      const parsed = parseHashWithEncoding(text)
      assert.equal(parsed.encoding, encoding, text)
      assert.equal(parsed.hash.algorithm, 'sha256')
      assert.equal(Buffer.from(parsed.hash.digest).toString('hex'), HELLO_HEX, text)
      assert.deepEqual(parseHash(text), parsed.hash)
    }
  })

  it('tells encodings apart by length for every algorithm', () => {
    const algorithms: HashAlgorithm[] = ['md5', 'sha1', 'sha256', 'sha512']
    for (const algorithm of algorithms) {
      const digest = createHash(algorithm).update('unnar').digest()
      const forms = [
        `${algorithm}:${digest.toString('hex')}`,
        `${algorithm}:${encodeNix32(digest)}`,
        `${algorithm}:${digest.toString('base64')}`,
        `${algorithm}-${digest.toString('base64')}`,
      ]
      for (const text of forms) {
        const hash = parseHash(text)
        assert.equal(hash.algorithm, algorithm, text)
        assert.deepEqual(hash.digest, new Uint8Array(digest), text)
      }
    }
  })

  it('rejects malformed hashes with a HashError', () => {
    const cases: [text: string, why: string][] = [
      [HELLO_NIX32, 'no algorithm prefix'],
      [`sha3:${HELLO_NIX32}`, 'unknown algorithm'],
      [`SHA256:${HELLO_NIX32}`, 'algorithm names are lower case'],
      ['sha256:', 'empty digest'],
      [`sha256:${HELLO_NIX32}0`, 'length matches no encoding'],
      [`md5:${HELLO_NIX32}`, 'sha256 length under an md5 prefix'],
      [`sha256:${HELLO_HEX.slice(0, 63)}g`, 'g is not hex'],
      [`sha256:${HELLO_NIX32.slice(0, 51)}e`, 'e is not nix32'],
      [`sha256:2${HELLO_NIX32.slice(1)}`, 'nix32 overflow bits'],
      [`sha256:${HELLO_BASE64.slice(0, 42)}!=`, '! is not base64'],
      [`sha256:${HELLO_BASE64.slice(0, 43)}A`, 'base64 without the padding its length needs'],
      [`sha256-${HELLO_HEX}`, 'SRI must be base64'],
      [`sha256-${HELLO_BASE64.replaceAll('+', '-').replaceAll('/', '_')}`, 'base64url is not accepted'],
    ]
    for (const [text, why] of cases) assert.throws(() => parseHash(text), HashError, why)
  })

  it('names the algorithm and the expected lengths in its error', () => {
    assert.throws(() => parseHash('sha256:abc'), /has length 3; expected 64 \(base16\), 52 \(nix32\) or 44 \(base64\)/)
    assert.throws(() => parseHash('blake3:abc'), /unknown hash algorithm "blake3"/)
  })
})

describe('formatHashNix32 and formatHashHex', () => {
  it('print the prefixed nix32 form and the bare hex digest', () => {
    const hash = parseHash(`sha256:${HELLO_HEX}`)
    assert.equal(formatHashNix32(hash), `sha256:${HELLO_NIX32}`)
    assert.equal(formatHashHex(hash), HELLO_HEX)
    assert.equal(formatHashSri(hash), `sha256-${HELLO_BASE64}`)
  })

  it('print only the viewed bytes of a digest that is a view into a larger buffer', () => {
    const big = Buffer.concat([Buffer.from('xxxx'), Buffer.from(HELLO_HEX, 'hex'), Buffer.from('yyyy')])
    const hash = { algorithm: 'sha256' as const, digest: big.subarray(4, 36) }
    assert.equal(formatHashHex(hash), HELLO_HEX)
    assert.equal(formatHashNix32(hash), `sha256:${HELLO_NIX32}`)
  })
})

describe('hashEquals', () => {
  it('compares algorithm and digest bytes', () => {
    const a = parseHash(`sha256:${HELLO_NIX32}`)
    assert.equal(hashEquals(a, parseHash(`sha256:${HELLO_HEX}`)), true)
    assert.equal(hashEquals(a, { algorithm: 'sha256', digest: Buffer.from(HELLO_HEX, 'hex') }), true)
    const flipped = new Uint8Array(a.digest)
    flipped[31] = flipped[31]! ^ 1
    assert.equal(hashEquals(a, { algorithm: 'sha256', digest: flipped }), false)
    assert.equal(hashEquals(a, { algorithm: 'sha512', digest: a.digest }), false)
    assert.equal(hashEquals(a, { algorithm: 'sha256', digest: a.digest.subarray(0, 31) }), false)
  })
})
