/**
 * `<file>?view`: a store file's first MiB read from its source and shown as a page with line
 * numbers and highlighting (file-view-page.ts), or a page saying it is binary.
 */
import type { FileSource } from '../store/file-source.js'
import { contentTypeByName, contentTypeBySniffing } from './content-type.js'
import { renderBinaryPage, renderTextPage } from './file-view-page.js'
import { highlightLines } from './highlight.js'
import { viewLanguage } from './view-language.js'

/** The most of a file the viewer shows: a page for reading, not a download (the raw file is a link away). */
export const VIEW_MAX_BYTES = 1024 * 1024
/**
 * And the most lines: each costs ~120 bytes of markup, so 1 MiB of empty lines would make a page of
 * 120 MiB; 20,000 lines make at most ~2.4 MiB of it besides the text.
 */
export const VIEW_MAX_LINES = 20_000
/**
 * The most it highlights: highlight.js runs on the event loop at ~1.3-2 MiB/s for C or JavaScript
 * (measured: 755 ms for 1 MiB of JavaScript), so 64 KiB costs up to ~50 ms; a bigger file is shown
 * with line numbers only.
 */
export const HIGHLIGHT_MAX_BYTES = 64 * 1024

export interface FileViewOptions {
  /** `/nix/store/<hash>-<name>`, without a trailing slash. */
  readonly base: string
  /** The file's path inside the store path, symlinks resolved. */
  readonly segments: readonly string[]
}

/** Reads up to VIEW_MAX_BYTES of `source` (and releases it) and renders the page. */
export async function renderFileView(source: FileSource, options: FileViewOptions): Promise<string> {
  let bytes: Uint8Array
  try {
    bytes = await readHead(source, Math.min(source.size, VIEW_MAX_BYTES))
  } finally {
    source.release()
  }
  const name = options.segments[options.segments.length - 1] ?? options.base.slice(options.base.lastIndexOf('/') + 1)
  const page = { ...options, name, size: source.size }
  if (contentTypeBySniffing(bytes) !== 'text/plain; charset=utf-8') return renderBinaryPage(page)
  // A cut may end inside a character: `stream` leaves an incomplete one out.
  const text = firstLines(new TextDecoder('utf-8').decode(bytes, { stream: bytes.length < source.size }))
  const shown = Buffer.byteLength(text)
  const firstLine = text.slice(0, Math.max(0, text.indexOf('\n')) || 200)
  const language = viewLanguage(name, contentTypeByName(name) ?? '', firstLine)
  const highlighted = shown <= HIGHLIGHT_MAX_BYTES ? language : undefined
  return renderTextPage({ ...page, shown, language, lines: await highlightLines(text, highlighted) })
}

/** `text` up to the end of its VIEW_MAX_LINES-th line. */
function firstLines(text: string): string {
  let end = -1
  for (let line = 0; line < VIEW_MAX_LINES; line++) {
    end = text.indexOf('\n', end + 1)
    if (end < 0) return text
  }
  return text.slice(0, end + 1)
}

/** The first `length` bytes of the file, however its source gives them. */
async function readHead(source: FileSource, length: number): Promise<Uint8Array> {
  if (source.bytes !== undefined) return source.bytes.subarray(0, length)
  if (length === 0) return new Uint8Array(0)
  const stream = source.openRange?.(0, length) ?? source.openWhole()
  const reader = stream.getReader()
  const head = new Uint8Array(length)
  let filled = 0
  try {
    while (filled < length) {
      const { done, value } = await reader.read()
      if (done) break
      const take = Math.min(value.length, length - filled)
      head.set(value.subarray(0, take), filled)
      filled += take
    }
  } finally {
    // The whole-file stream of a bigger file is left unread: let go of it.
    await reader.cancel().catch(() => {})
  }
  return head.subarray(0, filled)
}
