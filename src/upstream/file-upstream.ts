/** A file:// binary cache: a directory on a local or network filesystem. */
import { closeSync, createReadStream, fstatSync, openSync, readSync, realpathSync } from 'node:fs'
import { realpath, stat, statfs } from 'node:fs/promises'
import path from 'node:path'
import { Readable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { keyProblem } from './cache-key.js'
import { type ByteRange, outsideCache, type Upstream, UpstreamError, type UpstreamResponse } from './upstream.js'

const MISSING_CODES = new Set(['ENOENT', 'ENOTDIR', 'EISDIR'])

/**
 * Filesystems (statfs f_type) on which metadata files are read without libuv's pool: ext2/3/4,
 * xfs, btrfs, tmpfs, overlayfs, zfs, f2fs, ramfs. There a narinfo or `.ls` is a copy from the page
 * cache or one local read, while each of the five pool round trips of an asynchronous read (stat,
 * open, read, read, close) waited 0.3–0.5 ms for a thread on a two-core machine: ~2.5 ms before a
 * cold path's narinfo was parsed (bench/ row 3a). Any other filesystem (NFS, CIFS, FUSE) keeps the
 * pool, so that a stalled server cannot stall the event loop.
 */
const LOCAL_FILESYSTEMS = new Set([
  0xef53, 0x58465342, 0x9123683e, 0x01021994, 0x794c7630, 0x2fc12fc1, 0xf2f52010, 0x858458f6,
])

/** The small files of a cache, which are read whole: never a NAR (its decoder program reads it). */
const METADATA_KEY = /^[^/]+\.(narinfo|ls)$|^nix-cache-info$/
/** Read synchronously only up to this size (~200 µs of blocked event loop); bigger ones stream. */
const SYNC_READ_MAX_BYTES = 64 * 1024

export interface FileUpstreamOptions {
  /** Read metadata files synchronously: true or false, or by the root's filesystem type (the default). */
  readonly syncReads?: boolean
}

export class FileUpstream implements Upstream {
  readonly name: string
  readonly #root: string
  /** The root with its symlinks resolved, once it exists. */
  #realRoot: string | undefined
  /** Undefined until the root's filesystem type is known (asynchronous reads meanwhile). */
  #syncReads: boolean | undefined
  /**
   * The root's device: a file on another one (a symlink or a mount into another filesystem) is
   * read through the pool even when the root is local. Undefined: not known, any device.
   */
  #device: number | undefined

  constructor(url: URL, options: FileUpstreamOptions = {}) {
    this.#root = path.resolve(fileURLToPath(url))
    this.name = `file://${this.#root}`
    this.#syncReads = options.syncReads
    if (this.#syncReads === undefined) {
      // bigint: a 32-bit libuv widens a signed f_type (btrfs's is negative there).
      Promise.all([statfs(this.#root, { bigint: true }), stat(this.#root)]).then(
        ([fs, root]) => {
          this.#device = root.dev
          this.#syncReads = LOCAL_FILESYSTEMS.has(Number(BigInt.asUintN(32, fs.type)))
        },
        () => (this.#syncReads = false),
      )
    }
  }

  /** Whether metadata files are read synchronously (see LOCAL_FILESYSTEMS); undefined while unknown. */
  get syncReads(): boolean | undefined {
    return this.#syncReads
  }

  async get(key: string, _signal?: AbortSignal, range?: ByteRange): Promise<UpstreamResponse | undefined> {
    const file = this.#locate(key)
    try {
      const metadata = range === undefined && this.#syncReads === true && METADATA_KEY.test(key)
      const real = this.#confine(key, metadata ? realpathSync.native(file) : await realpath(file))
      if (metadata) {
        const whole = this.#readSync(real)
        if (whole !== 'stream') return whole
      }
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
        body: createReadStream(real, { highWaterMark: 256 * 1024 }),
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

  /** The whole file, read on this thread; 'stream' when it is too big or on another device. Throws like fs. */
  #readSync(file: string): UpstreamResponse | undefined | 'stream' {
    const fd = openSync(file, 'r')
    try {
      const info = fstatSync(fd)
      if (!info.isFile()) return undefined
      if (info.size > SYNC_READ_MAX_BYTES || (this.#device !== undefined && info.dev !== this.#device)) return 'stream'
      const bytes = Buffer.allocUnsafe(info.size)
      let length = 0
      while (length < bytes.length) {
        const n = readSync(fd, bytes, length, bytes.length - length, length)
        if (n === 0) break
        length += n
      }
      const body = bytes.subarray(0, length)
      return { body: Readable.from([body], { objectMode: false }), size: body.length, contentEncoding: undefined, file }
    } finally {
      closeSync(fd)
    }
  }
}
