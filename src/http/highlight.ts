/**
 * Syntax highlighting for the file viewer: highlight.js (highlighter.ts, loaded at the first page
 * that needs it) with the grammars of view-language.ts, its HTML cut into lines (a comment or
 * string spanning lines is closed at each line's end and opened again on the next, so every line
 * stands alone in the page).
 */
import { escapeHtml } from './html.js'
import type { ViewLanguage } from './view-language.js'

/** The lines of `text` as HTML (escaped, with highlight.js's `<span class="hljs-…">` when `language`). */
export async function highlightLines(text: string, language: ViewLanguage | undefined): Promise<string[]> {
  if (text === '') return []
  const lines = text.split('\n')
  // A final newline ends the last line; it does not start another.
  if (lines.length > 1 && lines[lines.length - 1] === '') lines.pop()
  if (language === undefined) return lines.map(escapeHtml)
  const { highlighter } = await import('./highlighter.js')
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
