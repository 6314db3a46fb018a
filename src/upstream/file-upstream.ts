/** A file:// binary cache: a directory on a local or network filesystem. */
import { createReadStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { type ByteRange, type Upstream, UpstreamError, type UpstreamResponse } from './upstream.js'

const MISSING_CODES = new Set(['ENOENT', 'ENOTDIR', 'EISDIR'])

export class FileUpstream implements Upstream {
  readonly name: string
  readonly #root: string

  constructor(url: URL) {
    this.#root = path.resolve(fileURLToPath(url))
    this.name = `file://${this.#root}`
  }

  async get(key: string, _signal?: AbortSignal, range?: ByteRange): Promise<UpstreamResponse | undefined> {
    const file = path.resolve(this.#root, key)
    if (!file.startsWith(this.#root + path.sep)) return undefined
    try {
      const info = await stat(file)
      if (!info.isFile()) return undefined
      if (range !== undefined) {
        const end = Math.min(range.end, info.size - 1)
        return { body: createReadStream(file, { start: range.start, end }), size: Math.max(0, end - range.start + 1), contentEncoding: undefined, partial: true }
      }
      return { body: createReadStream(file, { highWaterMark: 256 * 1024 }), size: info.size, contentEncoding: undefined, file }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code !== undefined && MISSING_CODES.has(code)) return undefined
      throw new UpstreamError(this.name, 'network', `${code ?? 'error'} reading ${key}`, { cause: err })
    }
  }
}
