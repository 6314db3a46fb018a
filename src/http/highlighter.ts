/**
 * highlight.js's core with the grammars of view-language.ts, in an instance of its own. Imported by
 * highlight.ts at the first page it highlights: a server that never shows a file does not hold
 * the grammars (~2 MiB of heap, and their compiled code).
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
export const highlighter = hljs.newInstance()
for (const [name, grammar] of Object.entries(GRAMMARS)) highlighter.registerLanguage(name, grammar)
