/** A file:// binary cache: a directory on a local or network filesystem. */
import { createReadStream, realpathSync } from 'node:fs'
import { realpath, stat } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { keyProblem } from './cache-key.js'
import { type ByteRange, outsideCache, type Upstream, UpstreamError, type UpstreamResponse } from './upstream.js'

const MISSING_CODES = new Set(['ENOENT', 'ENOTDIR', 'EISDIR'])

export class FileUpstream implements Upstream {
  readonly name: string
  readonly #root: string
  /** The root with its symlinks resolved, once it exists. */
  #realRoot: string | undefined
  constructor(url: URL) {
    this.#root = path.resolve(fileURLToPath(url))
    this.name = `file://${this.#root}`
  }

  async get(key: string, _signal?: AbortSignal, range?: ByteRange): Promise<UpstreamResponse | undefined> {
    const file = this.#locate(key)
    try {
      const real = this.#confine(key, await realpath(file))
      const info = await stat(real)
      if (!info.isFile()) return undefined
      if (range !== undefined) {
        const end = Math.min(range.end, info.size - 1)
        return {
          body: createReadStream(real, { start: range.start, end }),
          size: Math.max(0, end - range.start + 1),
          contentEncoding: undefined,
          partial: true,
        }
      }
      return {
        // Bounded by the size: a stream without `end` allocates a whole highWaterMark for every
        // read, small files and the final empty read included, and that churn of external memory
        // set off a full GC many times a second under a stream of small cold NARs (bench/ "mixed soak").
        body: createReadStream(real, { highWaterMark: 256 * 1024, ...(info.size > 0 ? { end: info.size - 1 } : {}) }),
        size: info.size,
        contentEncoding: undefined,
        file: real,
      }
    } catch (err) {
      if (err instanceof UpstreamError) throw err
      const code = (err as NodeJS.ErrnoException).code
      if (code !== undefined && MISSING_CODES.has(code)) return undefined
      throw new UpstreamError(this.name, 'network', `${code ?? 'error'} reading ${key}`, { cause: err })
    }
  }

  /** The file `key` names, below the root by its path alone (its real path is checked once it exists, see #confine). */
  #locate(key: string): string {
    const problem = keyProblem(key)
    if (problem !== undefined) throw outsideCache(this.name, key, problem)
    const file = path.resolve(this.#root, key)
    if (!file.startsWith(this.#root + path.sep))
      throw outsideCache(this.name, key, 'it resolves outside the cache directory')
    return file
  }

  /** `real` (a file's path with every symlink resolved) when it is below the root's real path; else outsideCache(). */
  #confine(key: string, real: string): string {
    if (this.#realRoot === undefined) {
      try {
        this.#realRoot = realpathSync.native(this.#root)
      } catch {
        // The root itself is gone: nothing below it resolved either.
      }
    }
    const root = this.#realRoot ?? this.#root
    if (!real.startsWith(root + path.sep))
      throw outsideCache(this.name, key, 'a symlink leads outside the cache directory')
    return real
  }
}
