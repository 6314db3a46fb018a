/** Request targets as clients send them: the path the route sees, and what parses as a store request. */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { HttpError } from '../../src/http/errors.js'
import { parseStoreRequest, storeRequestRest, targetPath } from '../../src/http/request-path.js'

const hash = '8gxcdyzlr8aa09pp43z8zbxd9zm00qzk'

const refused = (run: () => unknown, message: RegExp) =>
  assert.throws(run, (err) => err instanceof HttpError && err.status === 400 && message.test(err.message))

describe('targetPath', () => {
  it('takes the undecoded path of origin-form and absolute-form targets, dot segments kept', () => {
    assert.equal(targetPath(`/nix/store/${hash}/../x?a=1#f`), `/nix/store/${hash}/../x`)
    assert.equal(targetPath(`http://example.org/nix/store/${hash}/%2e%2e/x?q`), `/nix/store/${hash}/%2e%2e/x`)
    assert.equal(targetPath('http://example.org'), '')
  })
})

describe('storeRequestRest', () => {
  it('returns what follows the store dir', () => {
    assert.equal(storeRequestRest(`/nix/store/${hash}/bin`, '/nix/store'), `${hash}/bin`)
  })

  it('refuses a path that only reached the store route through dot segments', () => {
    refused(() => storeRequestRest(`/x/../nix/store/${hash}/bin`, '/nix/store'), /"\." and "\.\." segments/)
    refused(() => storeRequestRest(`/nix/./store/${hash}`, '/nix/store'), /"\." and "\.\." segments/)
  })
})

describe('parseStoreRequest', () => {
  it('decodes segments and splits off the name', () => {
    assert.deepEqual(parseStoreRequest(`${hash}-hello/share/%C3%BCber%20caf%C3%A9.txt`), {
      hash,
      name: 'hello',
      segments: ['share', 'über café.txt'],
      trailingSlash: false,
    })
  })

  it('refuses a raw backslash, which URL parsers read as a slash, but takes an encoded one', () => {
    refused(() => parseStoreRequest(`${hash}/dir\\..\\x`), /backslash/)
    assert.deepEqual(parseStoreRequest(`${hash}/a%5Cb`).segments, ['a\\b'])
  })

  it('names a long bad first segment without echoing it whole', () => {
    assert.throws(
      () => parseStoreRequest('a'.repeat(10_000)),
      (err) => err instanceof HttpError && err.status === 400 && err.message.length < 300,
    )
  })
})
