/**
 * Which files the viewer (`?view`) is offered for, and which highlight.js language it colours a
 * file with: by file name, extension, `#!` line, then type. No auto-detection: it runs every
 * grammar over the text, and on a 1 MiB file that is seconds of the event loop.
 */
import { isCompressible } from './compression.js'
import { contentTypeByName } from './content-type.js'

/** The grammars unnar registers (highlight.js/lib/languages/<name>): what a Nix store mostly holds. */
export const VIEW_LANGUAGES = [
  'bash',
  'c',
  'cmake',
  'cpp',
  'css',
  'diff',
  'go',
  'ini',
  'java',
  'javascript',
  'json',
  'lua',
  'makefile',
  'markdown',
  'nix',
  'perl',
  'python',
  'ruby',
  'rust',
  'typescript',
  'xml',
  'yaml',
] as const

export type ViewLanguage = (typeof VIEW_LANGUAGES)[number]

const BY_EXTENSION: Readonly<Record<string, ViewLanguage>> = {
  sh: 'bash',
  bash: 'bash',
  zsh: 'bash',
  c: 'c',
  h: 'c',
  cmake: 'cmake',
  cc: 'cpp',
  cpp: 'cpp',
  cxx: 'cpp',
  hh: 'cpp',
  hpp: 'cpp',
  hxx: 'cpp',
  css: 'css',
  diff: 'diff',
  patch: 'diff',
  go: 'go',
  ini: 'ini',
  cfg: 'ini',
  conf: 'ini',
  desktop: 'ini',
  service: 'ini',
  toml: 'ini',
  java: 'java',
  js: 'javascript',
  mjs: 'javascript',
  cjs: 'javascript',
  json: 'json',
  lua: 'lua',
  mk: 'makefile',
  md: 'markdown',
  nix: 'nix',
  pl: 'perl',
  pm: 'perl',
  py: 'python',
  rb: 'ruby',
  rs: 'rust',
  ts: 'typescript',
  mts: 'typescript',
  html: 'xml',
  htm: 'xml',
  xhtml: 'xml',
  xml: 'xml',
  svg: 'xml',
  pc: 'ini',
  yaml: 'yaml',
  yml: 'yaml',
}

const BY_NAME: Readonly<Record<string, ViewLanguage>> = {
  'CMakeLists.txt': 'cmake',
  GNUmakefile: 'makefile',
  Makefile: 'makefile',
  makefile: 'makefile',
  'flake.lock': 'json',
}

/** `#!/bin/sh`, `#!/usr/bin/env python3`, `#!/nix/store/…-bash-5.2/bin/bash -e`: the interpreter's name. */
const SHEBANG = /^#!\s*(?:\S*\/)?([^/\s]+)(?:\s+(?:-\S+\s+)*([^/\s-]\S*))?/

const BY_INTERPRETER: ReadonlyArray<readonly [RegExp, ViewLanguage]> = [
  [/^(ba|z|k|da)?sh$/, 'bash'],
  [/^python[0-9.]*$/, 'python'],
  [/^perl[0-9.]*$/, 'perl'],
  [/^ruby[0-9.]*$/, 'ruby'],
  [/^node(js)?$/, 'javascript'],
  [/^lua[0-9.]*$/, 'lua'],
]

/** The language for a file, or undefined for plain text. `firstLine`: for a `#!` line. */
export function viewLanguage(name: string, contentType: string, firstLine: string): ViewLanguage | undefined {
  const byName = BY_NAME[name]
  if (byName !== undefined) return byName
  const dot = name.lastIndexOf('.')
  const byExtension = dot > 0 ? BY_EXTENSION[name.slice(dot + 1).toLowerCase()] : undefined
  if (byExtension !== undefined) return byExtension
  const shebang = SHEBANG.exec(firstLine)
  if (shebang !== null) {
    // `env python3` names the interpreter in its argument.
    const interpreter = shebang[1] === 'env' ? (shebang[2] ?? '') : (shebang[1] ?? '')
    for (const [pattern, language] of BY_INTERPRETER) if (pattern.test(interpreter)) return language
  }
  if (/\bjson\b|\+json/.test(contentType)) return 'json'
  if (/\bxml\b|\+xml/.test(contentType)) return 'xml'
  if (contentType.startsWith('text/x-shellscript') || contentType.startsWith('application/x-sh')) return 'bash'
  return undefined
}

/**
 * Whether a listing offers the viewer for a file of this name: its type by name is text-like, or
 * the name says nothing (scripts in bin/ often have no extension; the viewer tells a binary apart).
 */
export function isViewable(name: string): boolean {
  // `libfoo.so.1.2`: a versioned library, whose last "extension" says nothing.
  if (/\.so(\.\d+)+$/.test(name)) return false
  const type = contentTypeByName(name)
  return type === undefined || (isCompressible(type) && !type.startsWith('application/wasm'))
}
