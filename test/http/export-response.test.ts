/** Tests for src/http/export-response.ts: the download's name in Content-Disposition. */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import fc from 'fast-check'
import { attachment } from '../../src/http/export-response.js'

describe('attachment', () => {
  const cases: ReadonlyArray<readonly [string, string]> = [
    ['fixture-basic-1.tar.gz', 'attachment; filename="fixture-basic-1.tar.gz"'],
    ['with space#?.zip', 'attachment; filename="with space#?.zip"'],
    // Quotes and backslashes would end or escape the quoted string; `%` some clients decode.
    ['quote".nar', `attachment; filename="quote_.nar"; filename*=UTF-8''quote%22.nar`],
    ['back\\slash.tar', `attachment; filename="back_slash.tar"; filename*=UTF-8''back%5Cslash.tar`],
    ['percent%41.tar', `attachment; filename="percent_41.tar"; filename*=UTF-8''percent%2541.tar`],
    ['new\nline.tar', `attachment; filename="new_line.tar"; filename*=UTF-8''new%0Aline.tar`],
    ["it's (1)*.zip", `attachment; filename="it's (1)*.zip"`],
    ['über 日本.zip', `attachment; filename="_ber __.zip"; filename*=UTF-8''%C3%BCber%20%E6%97%A5%E6%9C%AC.zip`],
  ]
  for (const [name, header] of cases) {
    it(`names ${JSON.stringify(name)}`, () => assert.equal(attachment(name), header))
  }

  it('gives a valid header value from which the exact name is read back, for any name', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', minLength: 1 }), (name) => {
        const header = attachment(name)
        assert.match(header, /^[\x20-\x7e]+$/, 'printable ASCII only')
        const exact = /; filename\*=UTF-8''([A-Za-z0-9!#$&+\-.^_`|~%]+)$/.exec(header)
        const plain = /^attachment; filename="([^"\\]*)"$/.exec(header)
        assert.equal(exact === null ? plain?.[1] : decodeURIComponent(exact[1]!), name)
      }),
    )
  })
})
