/** The machine-readable listing formats: negotiation, JSON, and the `ls -l`-like text with `ls -b` escapes. */
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { describe, it } from 'node:test'
import fc from 'fast-check'
import type { ListingNode } from '../../src/formats/listing.js'
import { escapeLikeLs, formatDirectoryText, negotiateListingFormat } from '../../src/http/listing-formats.js'

type DirectoryNode = Extract<ListingNode, { type: 'directory' }>

/** Characters a name can hold that a line-oriented reader or a terminal could take for something else. */
const hostileChar = fc.constantFrom(
  'a',
  'b',
  '-',
  '>',
  '.',
  ' ',
  '\\',
  '\n',
  '\r',
  '\t',
  '\v',
  '\f',
  '\b',
  '\x07',
  '\x00',
  '\x01',
  '\x1b',
  '\x7f',
  '\x85',
  '\x9b',
  '\u2028',
  '\u2029',
  'ü',
  '日',
  '😀',
)
const hostileName = fc
  .string({ unit: hostileChar, minLength: 1, maxLength: 12 })
  .filter((name) => name !== '.' && name !== '..' && !name.includes('\x00'))

function directoryOf(names: readonly string[], target = (name: string) => name): DirectoryNode {
  const entries = new Map<string, ListingNode>()
  for (const [i, name] of names.entries()) {
    entries.set(
      name,
      i % 3 === 0
        ? { type: 'regular', size: i, executable: i % 2 === 0 }
        : i % 3 === 1
          ? { type: 'symlink', target: target(name) }
          : { type: 'directory', entries: new Map() },
    )
  }
  return { type: 'directory', entries }
}

/** The inverse of escapeLikeLs: C escapes, `\ `, `\\` and octal bytes. */
function unescapeLikeLs(text: string): string {
  const bytes: number[] = []
  const simple: Record<string, number> = { a: 7, b: 8, f: 12, n: 10, r: 13, t: 9, v: 11, '\\': 92, ' ': 32 }
  for (let i = 0; i < text.length; i++) {
    if (text[i] !== '\\') {
      const char = String.fromCodePoint(text.codePointAt(i)!)
      bytes.push(...Buffer.from(char, 'utf8'))
      i += char.length - 1
      continue
    }
    const next = text[++i]!
    if (next in simple) bytes.push(simple[next]!)
    else {
      assert.match(text.slice(i, i + 3), /^[0-7]{3}$/)
      bytes.push(Number.parseInt(text.slice(i, i + 3), 8))
      i += 2
    }
  }
  return Buffer.from(bytes).toString('utf8')
}

/**
 * A symlink's shown text split at its ` -> `: the first space not escaped by a backslash (every
 * space of a name is escaped, so a name like ` ->` shows as `\ ->`).
 */
function splitLink(shown: string): [string, string] {
  for (let i = 0; i < shown.length; i++) {
    if (shown[i] === '\\') i++
    else if (shown[i] === ' ') {
      assert.equal(shown.slice(i, i + 4), ' -> ')
      return [shown.slice(0, i), shown.slice(i + 4)]
    }
  }
  assert.fail(`no ' -> ' in ${JSON.stringify(shown)}`)
}

describe('formatDirectoryText', () => {
  it('prints one line per entry with mode, size, name and link target', () => {
    const text = formatDirectoryText(directoryOf(['bin', 'hello', 'link']))
    assert.equal(
      text,
      [
        '-r-xr-xr-x            0 bin',
        'lrwxrwxrwx            - hello -> hello',
        'dr-xr-xr-x            - link/',
        '',
      ].join('\n'),
    )
  })

  it('escapes a name with a newline, so it cannot forge a line of its own', () => {
    const forged = 'x\n-r-xr-xr-x           99 evil'
    const text = formatDirectoryText(
      directoryOf([forged, 'a\\nb', 'tab\there', 'esc\x1b[31m', 'nel\x85', 'ls\u2028x', 'sp ace']),
    )
    const lines = text.trimEnd().split('\n')
    assert.equal(lines.length, 7)
    assert.equal(lines[0], '-r-xr-xr-x            0 x\\n-r-xr-xr-x\\ \\ \\ \\ \\ \\ \\ \\ \\ \\ \\ 99\\ evil')
    assert.equal(lines[1], 'lrwxrwxrwx            - a\\\\nb -> a\\\\nb')
    assert.equal(lines[2], 'dr-xr-xr-x            - tab\\there/')
    assert.equal(lines[3], '-r--r--r--            3 esc\\033[31m')
    assert.equal(lines[4], 'lrwxrwxrwx            - nel\\302\\205 -> nel\\302\\205')
    assert.equal(lines[5], 'dr-xr-xr-x            - ls\\342\\200\\250x/')
    assert.equal(lines[6], '-r-xr-xr-x            6 sp\\ ace')
  })

  it('gives every generated name exactly one line, from which the name can be read back', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(hostileName, { minLength: 1, maxLength: 20 }),
        fc.string({ unit: hostileChar, maxLength: 8 }),
        (names, suffix) => {
          const text = formatDirectoryText(directoryOf(names, (name) => `${name}${suffix}`))
          const lines = text.split('\n')
          assert.equal(lines.pop(), '')
          assert.equal(lines.length, names.length)
          for (const [i, line] of lines.entries()) {
            assert.doesNotMatch(line, /[\x00-\x1f\x7f-\x9f\u2028\u2029]/)
            const shown = line.slice(24).replace(/\/$/, '')
            const [name, target] = i % 3 === 1 ? splitLink(shown) : [shown]
            assert.equal(unescapeLikeLs(name!), names[i])
            if (target !== undefined) assert.equal(unescapeLikeLs(target), `${names[i]}${suffix}`)
          }
        },
      ),
      // The first counterexample found: a symlink named ` ->`, shown as `\ -> -> \ ->`.
      { numRuns: 300, examples: [[['a', ' ->'], '']] },
    )
  })

  it('escapes names exactly as GNU ls -b does', { skip: process.platform !== 'linux' }, () => {
    const names = fc.sample(
      hostileName.filter((name) => !name.includes('/')),
      { numRuns: 300, seed: 19 },
    )
    const unique = [...new Set(names)]
    const dir = mkdtempSync(path.join(os.tmpdir(), 'unnar-ls-b-'))
    try {
      for (const name of unique) writeFileSync(path.join(dir, name), '')
      const ls = execFileSync('ls', ['-b', '-1', '-U', '-A', dir], {
        env: { ...process.env, LC_ALL: 'C.UTF-8' },
        encoding: 'utf8',
      })
      assert.deepEqual(ls.trimEnd().split('\n').sort(), unique.map(escapeLikeLs).sort())
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

describe('negotiateListingFormat', () => {
  const cases: ReadonlyArray<[accept: string | undefined, userAgent: string | undefined, expected: string]> = [
    [undefined, undefined, 'html'],
    ['*/*', 'Wget/1.21.3', 'html'],
    [undefined, 'rclone/v1.60.1', 'html'],
    ['*/*', 'lftp/4.9.2', 'html'],
    ['text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8', 'Mozilla/5.0', 'html'],
    ['*/*', 'curl/7.88.1', 'text'],
    [undefined, 'HTTPie/3.2.1', 'text'],
    ['*/*', 'xh/0.20.1', 'text'],
    ['text/*', 'curl/8.5.0', 'text'],
    ['text/*', 'Wget/1.21.3', 'html'],
    ['text/plain', 'Wget/1.21.3', 'text'],
    ['text/html', 'curl/7.88.1', 'html'],
    ['application/json', 'curl/7.88.1', 'json'],
    ['application/json, text/html', undefined, 'json'],
    ['text/html, application/json', undefined, 'html'],
    ['text/html;q=0.5, text/plain', undefined, 'text'],
    ['application/json;q=0.9, */*;q=0.1', 'curl/7.88.1', 'json'],
    ['text/html;q=0, */*', 'Mozilla/5.0', 'json'],
    ['image/png', 'Mozilla/5.0', 'html'],
    ['image/png', 'curl/7.88.1', 'text'],
  ]
  for (const [accept, userAgent, expected] of cases) {
    it(`answers ${expected} to Accept ${JSON.stringify(accept)} from ${JSON.stringify(userAgent)}`, () => {
      assert.equal(negotiateListingFormat(accept, userAgent, false), expected)
    })
  }

  it('answers ?json with JSON whatever the headers say', () => {
    assert.equal(negotiateListingFormat('text/html', 'Mozilla/5.0', true), 'json')
  })
})
