/**
 * Syntax highlighting for the file viewer: highlight.js's core with the grammars of
 * view-language.ts, its HTML cut into lines (a comment or string spanning lines is closed at each
 * line's end and opened again on the next, so every line stands alone in the page).
 */
import hljs from 'highlight.js/lib/core'
import bash from 'highlight.js/lib/languages/bash'
import c from 'highlight.js/lib/languages/c'
import cmake from 'highlight.js/lib/languages/cmake'
import cpp from 'highlight.js/lib/languages/cpp'
import css from 'highlight.js/lib/languages/css'
import diff from 'highlight.js/lib/languages/diff'
import go from 'highlight.js/lib/languages/go'
import ini from 'highlight.js/lib/languages/ini'
import java from 'highlight.js/lib/languages/java'
import javascript from 'highlight.js/lib/languages/javascript'
import json from 'highlight.js/lib/languages/json'
import lua from 'highlight.js/lib/languages/lua'
import makefile from 'highlight.js/lib/languages/makefile'
import markdown from 'highlight.js/lib/languages/markdown'
import nix from 'highlight.js/lib/languages/nix'
import perl from 'highlight.js/lib/languages/perl'
import python from 'highlight.js/lib/languages/python'
import ruby from 'highlight.js/lib/languages/ruby'
import rust from 'highlight.js/lib/languages/rust'
import typescript from 'highlight.js/lib/languages/typescript'
import xml from 'highlight.js/lib/languages/xml'
import yaml from 'highlight.js/lib/languages/yaml'
import { escapeHtml } from './html.js'
import type { ViewLanguage } from './view-language.js'

const GRAMMARS: Readonly<Record<ViewLanguage, Parameters<typeof hljs.registerLanguage>[1]>> = {
  bash,
  c,
  cmake,
  cpp,
  css,
  diff,
  go,
  ini,
  java,
  javascript,
  json,
  lua,
  makefile,
  markdown,
  nix,
  perl,
  python,
  ruby,
  rust,
  typescript,
  xml,
  yaml,
}

// A private instance: the grammars above and nothing else, whatever else imports highlight.js.
const highlighter = hljs.newInstance()
for (const [name, grammar] of Object.entries(GRAMMARS)) highlighter.registerLanguage(name, grammar)

/** The lines of `text` as HTML (escaped, with highlight.js's `<span class="hljs-…">` when `language`). */
export function highlightLines(text: string, language: ViewLanguage | undefined): string[] {
  if (text === '') return []
  const lines = text.split('\n')
  // A final newline ends the last line; it does not start another.
  if (lines.length > 1 && lines[lines.length - 1] === '') lines.pop()
  if (language === undefined) return lines.map(escapeHtml)
  const html = highlighter.highlight(text, { language, ignoreIllegals: true }).value
  return splitLines(html).slice(0, lines.length)
}

/**
 * highlight.js output (text escaped, only `<span class="…">` and `</span>` as tags) cut at each
 * newline, with the spans open there closed before it and opened again after it.
 */
function splitLines(html: string): string[] {
  const lines: string[] = []
  const open: string[] = []
  let line = ''
  for (const token of html.split(/(<span[^>]*>|<\/span>|\n)/)) {
    if (token === '\n') {
      lines.push(line + '</span>'.repeat(open.length))
      line = open.join('')
    } else {
      if (token.startsWith('<span')) open.push(token)
      else if (token === '</span>') open.pop()
      line += token
    }
  }
  lines.push(line + '</span>'.repeat(open.length))
  return lines
}
