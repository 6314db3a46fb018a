/** `npm run docs:settings`: rewrites docs/configuration.md's table of settings from src/settings.ts. */
import { readFile, writeFile } from 'node:fs/promises'
import { settingsTable } from '../src/settings.js'

const FILE = new URL('../docs/configuration.md', import.meta.url)
const BEGIN = '<!-- settings table: written by `npm run docs:settings` from src/settings.ts -->\n'
const END = '<!-- end of settings table -->'

const doc = await readFile(FILE, 'utf8')
const start = doc.indexOf(BEGIN)
const end = doc.indexOf(END, start)
if (start < 0 || end < 0)
  throw new Error(`docs/configuration.md has no ${JSON.stringify(BEGIN.trim())} … ${JSON.stringify(END)} block`)
await writeFile(FILE, doc.slice(0, start + BEGIN.length) + settingsTable() + doc.slice(end))
console.log('docs/configuration.md: settings table written')
