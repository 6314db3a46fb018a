/**
 * The documentation holds together: every relative link in README.md and docs/*.md leads to a file
 * of the repository, every `#anchor` to a heading of its target (GitHub's slugs), no link points at
 * a path of one machine, and the README stays short and keeps CI's test command.
 */
import assert from 'node:assert/strict'
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import path from 'node:path'
import { describe, it } from 'node:test'

const ROOT = path.resolve(import.meta.dirname, '..')
/** The issue (#20) asks for a README a Nix user reads in five minutes: about 12 KB. */
const README_MAX_BYTES = 12 * 1024

/** The Markdown files this test covers, relative to the repository root. */
function docFiles(): string[] {
  const docs = readdirSync(path.join(ROOT, 'docs'))
    .filter((name) => name.endsWith('.md'))
    .sort()
    .map((name) => `docs/${name}`)
  return ['README.md', ...docs]
}

/** The lines outside fenced code blocks (``` or ~~~), with their line numbers (1-based). */
function proseLines(markdown: string): Array<{ line: number; text: string }> {
  const out: Array<{ line: number; text: string }> = []
  let fence: string | undefined
  for (const [index, text] of markdown.split('\n').entries()) {
    const opener = /^ {0,3}(`{3,}|~{3,})/.exec(text)
    if (fence === undefined && opener !== null) {
      fence = opener[1]
      continue
    }
    if (fence !== undefined) {
      if (new RegExp(`^ {0,3}${fence[0]}{${fence.length},}\\s*$`).test(text)) fence = undefined
      continue
    }
    out.push({ line: index + 1, text })
  }
  return out
}

/** A line with its code spans emptied, so `[::]:8383` or `a](b)` inside backticks is no link. */
function withoutCodeSpans(text: string): string {
  return text.replace(/(`+)[\s\S]*?\1/g, '``')
}

/**
 * GitHub's anchor for a heading: Markdown and HTML markup dropped, lowercased, every character other
 * than letters, digits, spaces, `-` and `_` removed, spaces turned into `-`.
 */
function slugify(heading: string): string {
  return heading
    .replace(/<[^>]*>/g, '')
    .replace(/!?\[([^\]]*)\]\([^)]*\)/g, '$1')
    .replace(/[`*~]/g, '')
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\p{M} _-]/gu, '')
    .replace(/ /g, '-')
}

/** Every anchor a Markdown file offers: heading slugs (repeats get -1, -2…) and `<a id/name>`. */
function anchorsOf(markdown: string): Set<string> {
  const anchors = new Set<string>()
  const seen = new Map<string, number>()
  for (const { text } of proseLines(markdown)) {
    const heading = /^ {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$/.exec(text)
    if (heading !== null) {
      const base = slugify(heading[1]!)
      const count = seen.get(base) ?? 0
      seen.set(base, count + 1)
      anchors.add(count === 0 ? base : `${base}-${count}`)
    }
    for (const html of text.matchAll(/<a\s[^>]*\b(?:id|name)="([^"]+)"/g)) anchors.add(html[1]!)
  }
  return anchors
}

interface Link {
  readonly file: string
  readonly line: number
  readonly target: string
}

/** Inline links and images `[text](target "title")`, autolinks `<…>` and reference definitions. */
function linksOf(file: string, markdown: string): Link[] {
  const links: Link[] = []
  for (const { line, text } of proseLines(markdown)) {
    const prose = withoutCodeSpans(text)
    for (const m of prose.matchAll(/\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)/g))
      links.push({ file, line, target: m[1]! })
    for (const m of prose.matchAll(/<((?:https?|file|mailto):[^>\s]+)>/g)) links.push({ file, line, target: m[1]! })
    const definition = /^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$/.exec(prose)
    if (definition !== null) links.push({ file, line, target: definition[1]! })
    for (const m of prose.matchAll(/<a\s[^>]*\bhref="([^"]*)"/g)) links.push({ file, line, target: m[1]! })
  }
  return links
}

/** Why a link is broken, or undefined when it resolves. */
function checkLink(link: Link, read: (file: string) => string | undefined): string | undefined {
  const { target } = link
  if (target === '') return 'empty link'
  if (/^(?:https?|mailto):/i.test(target)) return undefined
  if (/^file:/i.test(target) || target.startsWith('/') || target.startsWith('~') || /^[A-Za-z]:[\\/]/.test(target))
    return 'absolute link to a local path'
  if (/^[A-Za-z][A-Za-z0-9+.-]*:/.test(target)) return `unexpected scheme in ${target}`
  const hash = target.indexOf('#')
  const filePart = decodeURIComponent(hash === -1 ? target : target.slice(0, hash))
  const anchor = hash === -1 ? undefined : decodeURIComponent(target.slice(hash + 1))
  const resolved =
    filePart === '' ? link.file : path.posix.normalize(path.posix.join(path.posix.dirname(link.file), filePart))
  if (resolved === '..' || resolved.startsWith('../')) return `${target} leads out of the repository`
  if (!existsSync(path.join(ROOT, resolved))) return `${resolved} does not exist`
  if (anchor === undefined) return undefined
  if (!resolved.endsWith('.md') || statSync(path.join(ROOT, resolved)).isDirectory())
    return `an anchor into ${resolved}, which is no Markdown file`
  const markdown = read(resolved)
  if (markdown === undefined) return `${resolved} cannot be read`
  if (!anchorsOf(markdown).has(anchor)) return `${resolved} has no heading with the anchor #${anchor}`
  return undefined
}

function readRepoFile(file: string): string | undefined {
  try {
    return readFileSync(path.join(ROOT, file), 'utf8')
  } catch {
    return undefined
  }
}

describe('the documentation', () => {
  it('covers README.md and at least the docs/ pages the README links to', () => {
    const files = docFiles()
    assert.ok(files.length > 1, 'docs/*.md found')
    for (const file of files) assert.ok(readRepoFile(file) !== undefined, file)
  })

  for (const file of docFiles()) {
    it(`${file}: every relative link and #anchor resolves, and none points at a local path`, () => {
      const markdown = readRepoFile(file)!
      const broken = linksOf(file, markdown)
        .map((link) => ({ link, why: checkLink(link, readRepoFile) }))
        .filter(({ why }) => why !== undefined)
        .map(({ link, why }) => `${link.file}:${link.line}: (${link.target}) ${why}`)
      assert.deepEqual(broken, [])
    })
  }

  it(`README.md stays at most ${README_MAX_BYTES} bytes`, () => {
    const bytes = readFileSync(path.join(ROOT, 'README.md')).length
    assert.ok(bytes <= README_MAX_BYTES, `README.md is ${bytes} bytes`)
  })

  it('README.md gives `npm test` as a command of its own (the command CI runs)', () => {
    const markdown = readRepoFile('README.md')!
    assert.match(markdown, /^```[a-z]*\nnpm test\n```$/m)
  })
})

describe('the link checker itself', () => {
  it('makes GitHub slugs: lowercase, backticks and punctuation gone, spaces to -', () => {
    const cases: Array<[string, string]> = [
      ['`--cache-size`', '--cache-size'],
      ['Where this departs from the chosen stack, and why', 'where-this-departs-from-the-chosen-stack-and-why'],
      ['The `.ls` listing is a hint', 'the-ls-listing-is-a-hint'],
      ['Strict verification (`--verify strict`, the default)', 'strict-verification---verify-strict-the-default'],
      ['Scale-out behind nginx', 'scale-out-behind-nginx'],
      ['snake_case and Ünïcode', 'snake_case-and-ünïcode'],
      ['A [link](x.md) and *emphasis*', 'a-link-and-emphasis'],
    ]
    for (const [heading, slug] of cases) assert.equal(slugify(heading), slug, heading)
  })

  it('numbers repeated headings and ignores headings inside code blocks', () => {
    const anchors = anchorsOf('# Files\n## Files\n```\n# Not a heading\n```\n### Files ###\n<a id="custom"></a>\n')
    assert.deepEqual([...anchors].sort(), ['custom', 'files', 'files-1', 'files-2'])
  })

  it('finds links outside code only, and tells broken ones apart', () => {
    const markdown = [
      'See [the guide](docs/x.md#part) and [this](#top "title").',
      'Code: `[no](link.md)` and [`--flag`](docs/configuration.md#--flag).',
      '```',
      '[not](a-link.md)',
      '```',
      '[ref]: https://example.org',
      '<https://example.org/auto>',
    ].join('\n')
    assert.deepEqual(
      linksOf('README.md', markdown).map((l) => l.target),
      ['docs/x.md#part', '#top', 'docs/configuration.md#--flag', 'https://example.org', 'https://example.org/auto'],
    )
    const files: Record<string, string> = { 'README.md': '# unnar\n## Top\n' }
    const read = (file: string) => files[file]
    const verdict = (target: string) => checkLink({ file: 'README.md', line: 1, target }, read)
    assert.equal(verdict('#top'), undefined)
    assert.equal(verdict('README.md#unnar'), undefined)
    assert.equal(verdict('https://example.org/x'), undefined)
    assert.match(verdict('#nowhere')!, /no heading/)
    assert.match(verdict('no-such-file.md')!, /does not exist/)
    assert.match(verdict('/work/main/README.md')!, /local path/)
    assert.match(verdict('file:///etc/passwd')!, /local path/)
    assert.match(verdict('../outside.md')!, /out of the repository/)
    assert.match(verdict('package.json#name')!, /no Markdown file/)
  })
})
