/** A file:// binary cache: a directory on a local or network filesystem. */
import { createReadStream, readFileSync, statSync } from 'node:fs'
import { stat, statfs } from 'node:fs/promises'
import path from 'node:path'
import { Readable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { type ByteRange, type Upstream, UpstreamError, type UpstreamResponse } from './upstream.js'

const MISSING_CODES = new Set(['ENOENT', 'ENOTDIR', 'EISDIR'])

/**
 * Filesystems (statfs f_type) on which a file is read without libuv's pool: ext2/3/4, xfs, btrfs,
 * tmpfs, overlayfs, zfs, f2fs, ramfs. There a narinfo or `.ls` is a page-cache copy, while each of
 * the five pool round trips of an asynchronous read (stat, open, read, read, close) waited
 * 0.3–0.5 ms for a thread on this two-core machine: ~2.5 ms before a cold path's narinfo was
 * parsed (bench/ row 3a). Any other filesystem (NFS, CIFS, FUSE) keeps the pool, so that a
 * stalled server cannot stall the event loop.
 */
const LOCAL_FILESYSTEMS = new Set([0xef53, 0x58465342, 0x9123683e, 0x01021994, 0x794c7630, 0x2fc12fc1, 0xf2f52010, 0x858458f6])

/** Files up to this size are read whole on a local filesystem (narinfos, most `.ls`); bigger ones stream. */
const SYNC_READ_MAX_BYTES = 256 * 1024

export interface FileUpstreamOptions {
  /** Read small files synchronously: true or false, or by the root's filesystem type (the default). */
  readonly syncReads?: boolean
}

export class FileUpstream implements Upstream {
  readonly name: string
  readonly #root: string
  /** Undefined until the root's filesystem type is known (asynchronous reads meanwhile). */
  #syncReads: boolean | undefined

  constructor(url: URL, options: FileUpstreamOptions = {}) {
    this.#root = path.resolve(fileURLToPath(url))
    this.name = `file://${this.#root}`
    this.#syncReads = options.syncReads
    if (this.#syncReads === undefined) {
      statfs(this.#root).then(
        (fs) => (this.#syncReads = LOCAL_FILESYSTEMS.has(fs.type)),
        () => (this.#syncReads = false),
      )
    }
  }

  /** Whether small files are read synchronously (see LOCAL_FILESYSTEMS); undefined while unknown. */
  get syncReads(): boolean | undefined {
    return this.#syncReads
  }

  async get(key: string, _signal?: AbortSignal, range?: ByteRange): Promise<UpstreamResponse | undefined> {
    const file = path.resolve(this.#root, key)
    if (!file.startsWith(this.#root + path.sep)) return undefined
    const sync = this.#syncReads === true
    try {
      const info = sync ? statSync(file) : await stat(file)
      if (!info.isFile()) return undefined
      if (range !== undefined) {
        const end = Math.min(range.end, info.size - 1)
        return { body: createReadStream(file, { start: range.start, end }), size: Math.max(0, end - range.start + 1), contentEncoding: undefined, partial: true }
      }
      if (sync && info.size <= SYNC_READ_MAX_BYTES) {
        const bytes = readFileSync(file)
        return { body: Readable.from([bytes], { objectMode: false }), size: bytes.length, contentEncoding: undefined, file }
      }
      return { body: createReadStream(file, { highWaterMark: 256 * 1024 }), size: info.size, contentEncoding: undefined, file }
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code !== undefined && MISSING_CODES.has(code)) return undefined
      throw new UpstreamError(this.name, 'network', `${code ?? 'error'} reading ${key}`, { cause: err })
    }
  }
}
