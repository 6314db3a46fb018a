/** Tests for src/http/view-language.ts and src/http/highlight.ts. */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { highlightLines } from '../../src/http/highlight.js'
import { isViewable, viewLanguage } from '../../src/http/view-language.js'

describe('viewLanguage', () => {
  const cases: ReadonlyArray<readonly [name: string, type: string, firstLine: string, expected: string | undefined]> = [
    ['default.nix', '', '', 'nix'],
    ['Makefile', '', '', 'makefile'],
    ['CMakeLists.txt', 'text/plain', '', 'cmake'],
    ['foo.H', '', '', 'c'],
    ['setup.cfg', '', '', 'ini'],
    ['hello', '', '#!/usr/bin/env python3', 'python'],
    ['hello', '', '#! /nix/store/0c7c96gikmzv87i7lv3vq5s1cmfjd6zf-bash-5.2p37/bin/bash -e', 'bash'],
    ['hello', '', '#!/usr/bin/env -S perl -w', 'perl'],
    ['wrapper', '', '#!/bin/sh', 'bash'],
    ['data', 'application/ld+json', '', 'json'],
    ['README', '', 'Hello', undefined],
    ['notes.txt', 'text/plain', '#!/bin/sh', 'bash'],
  ]
  for (const [name, type, firstLine, expected] of cases)
    it(`picks ${expected ?? 'plain text'} for ${JSON.stringify(name)} ${JSON.stringify(firstLine)}`, () =>
      assert.equal(viewLanguage(name, type, firstLine), expected))
})

describe('isViewable', () => {
  it('offers text-like and extensionless names, not binaries by name', () => {
    for (const name of ['a.txt', 'a.nix', 'a.json', 'a.svg', 'a.sh', 'hello', 'Makefile'])
      assert.ok(isViewable(name), name)
    for (const name of ['a.png', 'a.bin', 'a.wasm', 'a.pdf', 'a.tar.gz', 'libfoo.so.1.2'])
      assert.ok(!isViewable(name), name)
  })
})

describe('highlightLines', () => {
  it('closes spans at each line end and opens them again on the next line', async () => {
    assert.deepEqual(await highlightLines('/* a\nb */ x\n', 'javascript'), [
      '<span class="hljs-comment">/* a</span>',
      '<span class="hljs-comment">b */</span> x',
    ])
  })

  it('escapes text without a language, and has no line for a final newline or an empty file', async () => {
    assert.deepEqual(await highlightLines('<b>&\n\nx', undefined), ['&lt;b&gt;&amp;', '', 'x'])
    assert.deepEqual(await highlightLines('', 'nix'), [])
    assert.deepEqual(await highlightLines('\n', undefined), [''])
  })
})
