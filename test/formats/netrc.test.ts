/** The netrc format as Nix (through curl) reads it. */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { findNetrcEntry, NetrcSyntaxError, parseNetrc } from '../../src/formats/netrc.js'

describe('parseNetrc', () => {
  it('reads one entry per line, as the Nix manual shows it', () => {
    const entries = parseNetrc(
      'machine cache.example.org login alice password s3cret\nmachine other.example.org login bob password hunter2\n',
    )
    assert.deepEqual(entries, [
      { machine: 'cache.example.org', login: 'alice', password: 's3cret' },
      { machine: 'other.example.org', login: 'bob', password: 'hunter2' },
    ])
  })

  it('accepts entries spread over several lines, in any order, with tabs and CRLF', () => {
    const entries = parseNetrc('machine\tcache.example.org\r\n  password  s3cret\r\n\tlogin alice\r\n')
    assert.deepEqual(entries, [{ machine: 'cache.example.org', login: 'alice', password: 's3cret' }])
  })

  it('reads a default entry', () => {
    assert.deepEqual(parseNetrc('default login anonymous password guest'), [
      { machine: undefined, login: 'anonymous', password: 'guest' },
    ])
  })

  it('treats a token starting with # as the start of a comment', () => {
    const entries = parseNetrc(
      '# my caches\nmachine a.example login x password y # the password is y\n  #machine b.example login z password w\n',
    )
    assert.deepEqual(entries, [{ machine: 'a.example', login: 'x', password: 'y' }])
  })

  it('keeps a # inside a password', () => {
    assert.equal(parseNetrc('machine a login x password pa#ss')[0]!.password, 'pa#ss')
  })

  it('reads quoted tokens with blanks and escapes', () => {
    const [entry] = parseNetrc('machine a login "alice smith" password "with \\"quotes\\" and \\\\ and\\ttab"')
    assert.equal(entry!.login, 'alice smith')
    assert.equal(entry!.password, 'with "quotes" and \\ and\ttab')
  })

  it('refuses an unterminated quote, naming the line but not the text', () => {
    assert.throws(
      () => parseNetrc('machine a\nlogin x password "secret-value'),
      (err: unknown) => err instanceof NetrcSyntaxError && err.line === 2 && !err.message.includes('secret'),
    )
  })

  it('ignores account values and skips macdef bodies up to an empty line', () => {
    const text = [
      'machine a login x account acct password y',
      'macdef init',
      'machine evil login mallory password nope',
      'cd /pub',
      '',
      'machine b login u password v',
    ].join('\n')
    assert.deepEqual(parseNetrc(text), [
      { machine: 'a', login: 'x', password: 'y' },
      { machine: 'b', login: 'u', password: 'v' },
    ])
  })

  it('ignores login and password before any machine, and unknown words', () => {
    assert.deepEqual(parseNetrc('login x password y\nfoo bar\nmachine a login u password v'), [
      { machine: 'a', login: 'u', password: 'v' },
    ])
  })

  it('lower-cases machine names and keeps keywords as values where a value is expected', () => {
    assert.deepEqual(parseNetrc('machine Cache.Example.ORG login machine password default'), [
      { machine: 'cache.example.org', login: 'machine', password: 'default' },
    ])
  })

  it('reads an empty or comment-only file as no entries', () => {
    assert.deepEqual(parseNetrc(''), [])
    assert.deepEqual(parseNetrc('# nothing\n\n   \n'), [])
  })
})

describe('findNetrcEntry', () => {
  const entries = parseNetrc(
    'machine a.example login x password y\nmachine b.example password only\nmachine a.example login second password z\ndefault login d password dd',
  )

  it('takes the first entry for the host, case-insensitively', () => {
    assert.deepEqual(findNetrcEntry(entries, 'A.Example'), { machine: 'a.example', login: 'x', password: 'y' })
  })

  it('falls back to the default entry, and to nothing without one', () => {
    assert.equal(findNetrcEntry(entries, 'c.example')?.login, 'd')
    assert.equal(findNetrcEntry(parseNetrc('machine a login x password y'), 'c.example'), undefined)
  })

  it('returns an entry with only a password', () => {
    assert.deepEqual(findNetrcEntry(entries, 'b.example'), { machine: 'b.example', login: undefined, password: 'only' })
  })

  it('matches IPv6 literals with or without brackets', () => {
    const v6 = parseNetrc('machine ::1 login x password y')
    assert.equal(findNetrcEntry(v6, '[::1]')?.login, 'x')
  })
})
