/** Content-Type by name and by sniffing. */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { contentTypeByName, contentTypeBySniffing } from '../../src/http/content-type.js'

describe('contentTypeByName', () => {
  it('maps known extensions, with a charset for text', () => {
    assert.equal(contentTypeByName('index.html'), 'text/html; charset=utf-8')
    assert.equal(contentTypeByName('a.tar.gz'), 'application/gzip')
    assert.equal(contentTypeByName('x.wasm'), 'application/wasm')
  })
  it('leaves names without a telling extension to sniffing', () => {
    for (const name of ['hello', 'Makefile', '.bashrc', 'weird.zzzunknown'])
      assert.equal(contentTypeByName(name), undefined, name)
  })
})

describe('contentTypeBySniffing', () => {
  const enc = (s: string) => new TextEncoder().encode(s)
  it('calls UTF-8 text text/plain, even when the sample cuts a character in half', () => {
    assert.equal(contentTypeBySniffing(enc('#!/bin/sh\necho hi\n')), 'text/plain; charset=utf-8')
    const cut = enc('ab日').subarray(0, 4)
    assert.equal(contentTypeBySniffing(cut), 'text/plain; charset=utf-8')
  })
  it('calls NULs, control bytes and invalid UTF-8 binary', () => {
    for (const bytes of [
      [0x7f, 0x45, 0x4c, 0x46, 0x02, 0x01, 0x01, 0x00],
      [0x01, 0x02],
      [0xff, 0xfe, 0x41],
    ]) {
      assert.equal(contentTypeBySniffing(new Uint8Array(bytes)), 'application/octet-stream')
    }
  })
})
