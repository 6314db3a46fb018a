/** Tests for src/formats/nixbase32.ts. */
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { describe, it } from 'node:test'
import {
  NIX32_ALPHABET,
  Nix32Error,
  decodeNix32,
  encodeNix32,
  isNix32,
  nix32Length,
} from '../../src/formats/nixbase32.js'

// sha256 of the 128-byte NAR of a file containing "Hello World!" (nix-formats.md §1.4, made by Nix 2.8).
const HELLO_HEX = '03e7f63be30b065d78bcf615f5473545fdb4eb69aa416f43495b4e05cdfb8040'
const HELLO_NIX32 = '0h40zg6hakjv951nyhdad7mv9za56m3za5gnpiw5s1hbwcxzdrq3'

/** Deterministic pseudo-random bytes. */
function sampleBytes(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length)
  let block = Buffer.alloc(0)
  for (let i = 0, counter = 0; i < length; i++) {
    if (i % 32 === 0) block = createHash('sha256').update(`${seed}:${counter++}`).digest()
    out[i] = block[i % 32]!
  }
  return out
}

/** The definition in nix-formats.md §5: the bytes as a little-endian integer, printed in base 32. */
function referenceEncode(bytes: Uint8Array): string {
  let value = 0n
  for (let i = bytes.length - 1; i >= 0; i--) value = (value << 8n) | BigInt(bytes[i]!)
  let out = ''
  for (let n = 0; n < nix32Length(bytes.length); n++) {
    out = NIX32_ALPHABET[Number(value & 31n)] + out
    value >>= 5n
  }
  return out
}

describe('nix32Length', () => {
  it('gives the lengths Nix uses for each digest size', () => {
    const cases: [bytes: number, chars: number][] = [
      [0, 0],
      [1, 2],
      [16, 26], // md5
      [20, 32], // sha1, and store path hashes
      [32, 52], // sha256
      [64, 103], // sha512
    ]
    for (const [bytes, chars] of cases) assert.equal(nix32Length(bytes), chars, `${bytes} bytes`)
  })

  it('rejects a negative or fractional byte count', () => {
    assert.throws(() => nix32Length(-1), RangeError)
    assert.throws(() => nix32Length(1.5), RangeError)
  })
})

describe('encodeNix32', () => {
  it('encodes the sha256 of the hello NAR as Nix prints it', () => {
    assert.equal(encodeNix32(Buffer.from(HELLO_HEX, 'hex')), HELLO_NIX32)
  })

  it('prints the little-endian integer value, most significant digit first', () => {
    for (let length = 0; length <= 70; length++) {
      const input = sampleBytes(length, length)
      assert.equal(encodeNix32(input), referenceEncode(input), `length ${length}`)
    }
  })

  it('encodes inputs far longer than a hash, whose characters are built in pieces', () => {
    for (const length of [5119, 5120, 5121]) {
      const input = sampleBytes(length, length)
      assert.equal(encodeNix32(input), referenceEncode(input), `length ${length}`)
    }
    // Past what one spread of arguments can take; the reference encoder is too slow for it.
    const big = sampleBytes(200_000, 1)
    assert.deepEqual(decodeNix32(encodeNix32(big)), big)
  })

  it('puts the first byte in the last characters, unlike RFC 4648', () => {
    assert.equal(encodeNix32(Uint8Array.of(1)), '01')
    assert.equal(encodeNix32(Uint8Array.of(0x1f, 0, 0, 0, 0)), '0000000z')
    assert.equal(encodeNix32(Uint8Array.of(0, 0, 0, 0, 0xff)), 'zw000000')
  })

  it('encodes every sha256 with a leading 0 or 1', () => {
    for (let seed = 0; seed < 50; seed++) assert.match(encodeNix32(sampleBytes(32, seed)), /^[01]/)
  })
})

describe('decodeNix32', () => {
  it('decodes the hello NAR hash back to its bytes', () => {
    const bytes = decodeNix32(HELLO_NIX32)
    assert.equal(Buffer.from(bytes).toString('hex'), HELLO_HEX)
    assert.equal(Object.getPrototypeOf(bytes), Uint8Array.prototype)
  })

  it('round-trips bytes of every length up to 70', () => {
    for (let length = 0; length <= 70; length++) {
      const input = sampleBytes(length, 1000 + length)
      const text = encodeNix32(input)
      assert.equal(text.length, nix32Length(length))
      assert.deepEqual(decodeNix32(text), input, `length ${length}`)
    }
  })

  it('decodes a store path hash part into 20 bytes and back', () => {
    const hash = '1k87k4082pzf85pfmqzjslxn34n5vrjn'
    const bytes = decodeNix32(hash)
    assert.equal(bytes.length, 20)
    assert.equal(encodeNix32(bytes), hash)
  })

  it('rejects characters outside the alphabet, naming them', () => {
    const cases: [text: string, bad: string, why: string][] = [
      ['0h40zg6hakjv951nyhdad7mv9za56m3za5gnpiw5s1hbwcxzdrqe', 'e', 'e is not in the alphabet'],
      ['0h40zg6hakjv951nyhdad7mv9za56m3za5gnpiw5s1hbwcxzdrqo', 'o', 'o is not in the alphabet'],
      ['0h40zg6hakjv951nyhdad7mv9za56m3za5gnpiw5s1hbwcxzdrqu', 'u', 'u is not in the alphabet'],
      ['0h40zg6hakjv951nyhdad7mv9za56m3za5gnpiw5s1hbwcxzdrqt', 't', 't is not in the alphabet'],
      ['0H40zg6hakjv951nyhdad7mv9za56m3za5gnpiw5s1hbwcxzdrq3', 'H', 'no upper case'],
      ['0h40zg6hakjv951nyhdad7mv9za56m3za5gnpiw5s1hbwcxzdr=3', '=', 'no padding character'],
      ['0h40zg6hakjv951nyhdad7mv9za56m3za5gnpiw5s1hbwcxzdr\u00e93', '\u00e9', 'non-ASCII'],
    ]
    for (const [text, bad, why] of cases) {
      assert.throws(
        () => decodeNix32(text),
        (error: unknown) =>
          error instanceof Nix32Error &&
          error.message.includes(JSON.stringify(bad)) &&
          error.message.includes('invalid character'),
        why,
      )
    }
  })

  it('rejects non-zero overflow bits in the first character', () => {
    // 52 characters hold 260 bits for 256: the first character may only be 0 or 1.
    assert.deepEqual(decodeNix32('1' + '0'.repeat(51)), Uint8Array.of(...new Array<number>(31).fill(0), 0x80))
    for (const first of ['2', '9', 'z']) {
      assert.throws(() => decodeNix32(first + '0'.repeat(51)), /overflow/, `first character ${first}`)
    }
    // 2 characters hold 10 bits for 8: the first may be at most 7.
    assert.deepEqual(decodeNix32('7z'), Uint8Array.of(0xff))
    assert.throws(() => decodeNix32('8z'), Nix32Error)
  })

  it('rejects lengths that no byte count encodes to', () => {
    for (const text of ['0', '000', '000000', '0'.repeat(54)]) {
      assert.throws(
        () => decodeNix32(text),
        (error: unknown) => error instanceof Nix32Error && /length/.test(error.message),
        `length ${text.length}`,
      )
    }
    assert.deepEqual(decodeNix32(''), new Uint8Array(0))
  })
})

describe('isNix32', () => {
  it('accepts only characters of the alphabet', () => {
    assert.equal(isNix32(NIX32_ALPHABET), true)
    assert.equal(isNix32(HELLO_NIX32), true)
    assert.equal(isNix32(''), true)
    for (const text of ['e', 'o', 'u', 't', 'A', '0-1', ' ', '\u00e9'])
      assert.equal(isNix32(text), false, JSON.stringify(text))
  })
})
