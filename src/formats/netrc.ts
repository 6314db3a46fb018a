/**
 * The netrc file Nix hands to curl (`netrc-file`, default `/etc/nix/netrc`), read the way curl reads it:
 *
 * ```
 * machine cache.example.org login alice password "s3cret with spaces"
 * default login anonymous password guest   # any other host
 * ```
 *
 * Tokens are separated by spaces, tabs and newlines, so an entry may span lines. A token starting with
 * `#` turns the rest of its line into a comment. A token in double quotes may contain blanks and the
 * escapes `\"`, `\\`, `\n`, `\r`, `\t`. `account <value>` is ignored; `macdef <name>` starts a macro
 * whose lines are skipped up to the next empty line. Unknown words outside an entry are ignored, as curl
 * does. Host names match case-insensitively and without the port (curl compares the host name only).
 *
 * Pure: no file access here. Error messages never contain a token's text (it could be a password).
 */

export interface NetrcEntry {
  /** The `machine` name, lower-cased; undefined for the `default` entry. */
  readonly machine: string | undefined
  readonly login: string | undefined
  readonly password: string | undefined
}

/** A quoting error (the only kind of syntax error curl reports); the message names the line only. */
export class NetrcSyntaxError extends Error {
  override readonly name = 'NetrcSyntaxError'
  readonly line: number
  constructor(line: number, detail: string) {
    super(`line ${line}: ${detail}`)
    this.line = line
  }
}

type Expect = 'keyword' | 'machine' | 'login' | 'password' | 'account' | 'macdef'

/** Every entry, in file order. Throws NetrcSyntaxError on an unterminated quoted token. */
export function parseNetrc(text: string): NetrcEntry[] {
  const entries: Array<{ machine: string | undefined; login: string | undefined; password: string | undefined }> = []
  let current: (typeof entries)[number] | undefined
  let expect: Expect = 'keyword'
  let inMacro = false
  const lines = text.split('\n')
  for (let index = 0; index < lines.length; index++) {
    const line = lines[index]!
    if (inMacro) {
      // A macro ends at the first empty line (curl: a line that starts with a newline).
      if (line === '' || line === '\r') inMacro = false
      continue
    }
    for (const token of tokenize(line, index + 1)) {
      switch (expect) {
        case 'keyword':
          if (token === 'machine') expect = 'machine'
          else if (token === 'default') {
            current = { machine: undefined, login: undefined, password: undefined }
            entries.push(current)
          } else if (token === 'login' || token === 'password' || token === 'account' || token === 'macdef')
            expect = token
          // anything else is ignored, like curl
          break
        case 'machine':
          current = { machine: token.toLowerCase(), login: undefined, password: undefined }
          entries.push(current)
          expect = 'keyword'
          break
        case 'login':
          if (current !== undefined) current.login = token
          expect = 'keyword'
          break
        case 'password':
          if (current !== undefined) current.password = token
          expect = 'keyword'
          break
        case 'account':
          expect = 'keyword'
          break
        case 'macdef':
          // The macro's name ends the line as far as entries go; its body follows on the next lines.
          inMacro = true
          expect = 'keyword'
          break
      }
      if (inMacro) break
    }
  }
  return entries
}

/**
 * The entry for `host` (a host name without port): the first `machine` entry naming it, else the first
 * `default` entry, else undefined. An entry with neither login nor password gives nothing.
 */
export function findNetrcEntry(entries: readonly NetrcEntry[], host: string): NetrcEntry | undefined {
  const name = host.toLowerCase().replace(/^\[(.*)\]$/, '$1')
  const found =
    entries.find((e) => e.machine !== undefined && e.machine.replace(/^\[(.*)\]$/, '$1') === name) ??
    entries.find((e) => e.machine === undefined)
  if (found === undefined || (found.login === undefined && found.password === undefined)) return undefined
  return found
}

const ESCAPES: Record<string, string> = { n: '\n', r: '\r', t: '\t' }

/** The tokens of one line: blank-separated, `#` starts a comment, double quotes group. */
function* tokenize(line: string, lineNumber: number): Generator<string> {
  let i = 0
  const blank = (c: string | undefined) => c === ' ' || c === '\t' || c === '\r' || c === '\f' || c === '\v'
  while (i < line.length) {
    while (i < line.length && blank(line[i])) i++
    if (i >= line.length || line[i] === '#') return
    if (line[i] === '"') {
      let value = ''
      i++
      for (;;) {
        if (i >= line.length) throw new NetrcSyntaxError(lineNumber, 'a quoted token is not closed')
        const c = line[i]!
        if (c === '"') {
          i++
          break
        }
        if (c === '\\' && i + 1 < line.length) {
          const next = line[i + 1]!
          value += ESCAPES[next] ?? next
          i += 2
          continue
        }
        value += c
        i++
      }
      yield value
      continue
    }
    const start = i
    while (i < line.length && !blank(line[i])) i++
    yield line.slice(start, i)
  }
}
