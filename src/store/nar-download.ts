/** One NAR being fetched: decoded, indexed, hashed and written to a temp file that readers follow. */
import { readSync } from 'node:fs'
import type { FileHandle } from 'node:fs/promises'
import { Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { hashEquals } from '../formats/hash.js'
import type { Listing, ListingNode } from '../formats/listing.js'
import { NarIndexer, type NarEntry } from '../formats/nar-indexer.js'
import type { DecoderPrograms } from '../codecs/decoder-programs.js'
import { createNarDecoders, DecodedTooLargeError, recyclerOf } from '../codecs/decompress.js'
import {
  DecoderOutputError,
  decoderProgramFor,
  DecoderStartError,
  spawnFileDecoder,
  type DecoderLauncher,
  type DecoderProgram,
  type FileDecoder,
} from '../codecs/file-decoder.js'
import type { PathInfo } from '../upstream/path-info-lookup.js'
import { UpstreamError, type UpstreamResponse } from '../upstream/upstream.js'
import { createFileHasher, createNarHasher, hashWhileWriting, type NarHasher } from './file-hasher.js'
import { DiskError, NarAbandonedError, NarVerificationError } from './nar-errors.js'
import { followDecodedFile } from './nar-file-follower.js'
import { createRangeStream, readRangeBytes, type NarSource, type RangeSource } from './nar-source.js'

interface ByteWaiter {
  readonly end: number
  readonly resolve: (written: number) => void
  readonly reject: (err: Error) => void
}

export interface NarDownloadOptions {
  readonly info: PathInfo
  /** Open read-write temp file; the download owns it and closes it when no reader needs it. */
  readonly file: FileHandle
  /** Where `file` is (the hash worker reads it back from there). */
  readonly path: string
  /** Aborts when the last reader leaves (for NARs that will not be kept). */
  readonly abortWhenUnused: boolean
  /** The decoder programs this machine has (found at start). */
  readonly decoderPrograms: DecoderPrograms
  /** Where decoder programs come from (started ahead of need), if anywhere. */
  readonly decoderLauncher?: DecoderLauncher | undefined
  /** Strict verification: a read's last byte waits for the NarHash check (see NarSource.read). */
  readonly holdBack?: boolean | undefined
}

const UNUSED_GRACE_MS = 1000

/**
 * Bytes this close to the end of what a running download has written were written moments ago
 * (16 s at 1 MB/s): still in the page cache, so they are read without a round trip through libuv's
 * pool, whose thread waits for a core while the decoder is busy (bench/ "cold last file", zstd: 2-7 ms for the
 * last file of a NAR, against ~50 µs).
 */
const RECENT_BYTES = 16 * 1024 * 1024

export class NarDownload implements NarSource {
  readonly info: PathInfo
  /** Settles when the NAR is complete and verified (resolves) or failed (rejects). */
  readonly done: Promise<Listing>
  #written = 0
  #failure: Error | undefined
  #complete = false
  /** The whole NAR matched NarSize and NarHash. */
  #matched = false
  readonly #verification: Promise<void>
  #settleVerification: (err?: Error) => void = () => {}
  #readers = 0
  #finished = false
  #closed = false
  #held = true
  readonly #file: FileHandle
  readonly #path: string
  readonly #abort = new AbortController()
  readonly #abortWhenUnused: boolean
  readonly #decoderPrograms: DecoderPrograms
  readonly #decoderLauncher: DecoderLauncher | undefined
  readonly #holdBack: boolean
  readonly #byteWaiters: ByteWaiter[] = []
  readonly #root: { node: ListingNode | undefined } = { node: undefined }
  readonly #nodeWaiters = new Map<string, Array<(node: ListingNode | undefined) => void>>()
  readonly #reads = new Map<string, Promise<Uint8Array<ArrayBuffer>>>()

  constructor(options: NarDownloadOptions) {
    this.info = options.info
    this.#file = options.file
    this.#path = options.path
    this.#abortWhenUnused = options.abortWhenUnused
    this.#decoderPrograms = options.decoderPrograms
    this.#decoderLauncher = options.decoderLauncher
    this.#holdBack = options.holdBack ?? false
    this.#verification = new Promise<void>(
      (resolve, reject) => (this.#settleVerification = (err) => (err === undefined ? resolve() : reject(err))),
    )
    this.#verification.catch(() => {}) // observed by readers that hold their last byte, if any
    this.done = this.#run()
    this.done.catch(() => {}) // observed through readers and the store; never an unhandled rejection
  }

  get written(): number {
    return this.#written
  }

  /** Set only after the whole NAR matched its NarHash (bytes on disk never change afterwards). */
  get verified(): boolean {
    return this.#matched
  }

  get holdsBack(): boolean {
    return this.#holdBack && !this.#matched
  }

  /** Settles with the NarHash check, before the file is synced for the store (not part of it). */
  verification(): Promise<void> {
    return this.#verification
  }

  /** Stops the download (the store calls this on shutdown). */
  abort(reason: Error): void {
    this.#abort.abort(reason)
  }

  async node(segments: readonly string[]): Promise<ListingNode | undefined> {
    const found = this.#locate(segments)
    // Once the NAR matched NarHash its index is whole: what is not found is not there.
    if (found !== undefined || this.#matched || this.#failure !== undefined) {
      if (this.#failure !== undefined && found === undefined) throw this.#failure
      return found
    }
    const key = segments.join('/')
    return new Promise((resolve) => {
      const list = this.#nodeWaiters.get(key) ?? []
      list.push(resolve)
      this.#nodeWaiters.set(key, list)
    }).then((node) => {
      if (node === undefined && this.#failure !== undefined) throw this.#failure
      return node as ListingNode | undefined
    })
  }

  async listing(): Promise<Listing> {
    return this.done
  }

  read(start: number, end: number): ReadableStream<Uint8Array> {
    return createRangeStream(this.reader(), start, end)
  }

  reader(): RangeSource {
    const source = this.#rangeSource()
    if (this.holdsBack) source.beforeLastByte = () => this.verification()
    return source
  }

  /**
   * Requests for one file of a cold NAR all wait for the same bytes: one read serves them all, and
   * they share its (never written to) buffer. bench/ "200 concurrent cold requests" of one 254 KiB file.
   */
  readBytes(start: number, end: number): Promise<Uint8Array<ArrayBuffer>> {
    const key = `${start}:${end}`
    let read = this.#reads.get(key)
    if (read === undefined) {
      read = readRangeBytes(this.#rangeSource(), start, end)
      this.#reads.set(key, read)
      const forget = () => this.#reads.delete(key)
      read.then(forget, forget)
    }
    return read
  }

  /** Keeps the temp file open (and a NAR that is not kept downloading) until the returned release. */
  hold(): () => void {
    this.#readers++
    let released = false
    return () => {
      if (released) return
      released = true
      this.#releaseReader()
    }
  }

  #rangeSource(): RangeSource {
    return {
      readAt: async (buffer, length, position) =>
        !this.#finished && position >= this.#written - RECENT_BYTES
          ? readSync(this.#file.fd, buffer, 0, length, position)
          : (await this.#file.read(buffer, 0, length, position)).bytesRead,
      waitFor: (target) => this.#waitForBytes(target),
      release: this.hold(),
    }
  }

  async #run(): Promise<Listing> {
    const { upstream, narKey, narInfo } = this.info
    const signal = this.#abort.signal
    try {
      const res = await upstream.get(narKey, signal)
      if (res === undefined) throw new UpstreamError(upstream.name, 'bad-status', `NAR ${narKey} is missing`)
      const program = decoderProgramFor(
        narInfo.compression,
        res.contentEncoding,
        narInfo.narSize,
        this.#decoderPrograms,
      )
      const indexer = new NarIndexer()
      const whileWriting = hashWhileWriting(this.#holdBack)
      const hasher =
        program !== undefined
          ? createFileHasher(narInfo.narHash.algorithm, this.#path, whileWriting)
          : createNarHasher(narInfo.narHash.algorithm, this.#path, narInfo.narSize, whileWriting)
      try {
        const size =
          program !== undefined
            ? await this.#decodeByProgram(res, program, indexer, hasher)
            : await this.#decodeHere(res, indexer, hasher)
        await this.#verify(size, indexer, hasher)
      } finally {
        hasher.dispose()
      }
      // Verified: held last bytes go out now; the sync below is for the store, not for them.
      this.#matched = true
      this.#settleVerification()
      this.#settleNodeWaiters()
      await this.#file.sync().catch((err: NodeJS.ErrnoException) => {
        throw new DiskError(`syncing the NAR: ${err.code ?? err.message}`)
      })
      // The tree onWritten() built entry by entry: the NAR is complete, so it is too.
      const root = this.#root.node
      if (root === undefined) throw new NarVerificationError(upstream.name, 'the NAR has no root entry')
      const listing: Listing = { version: 1, root }
      this.#complete = true
      this.#settleWaiters()
      return listing
    } catch (err) {
      this.#failure = classify(err, upstream.name, signal)
      this.#settleVerification(this.#failure)
      this.#settleWaiters()
      throw this.#failure
    } finally {
      this.#finished = true
      await this.#maybeClose()
    }
  }

  /** Decodes, indexes and writes the NAR in this process (node's decoders, or a program's pipe); returns its size. */
  async #decodeHere(res: UpstreamResponse, indexer: NarIndexer, hasher: NarHasher): Promise<number> {
    const { upstream, narInfo } = this.info
    const decoders = createNarDecoders(
      res.body,
      res.contentEncoding,
      narInfo.compression,
      narInfo.narSize,
      this.#decoderPrograms,
    )
    const sink = new NarSink(this, narInfo.narSize, indexer, hasher, upstream.name, recyclerOf(decoders.at(-1)!))
    await pipeline([res.body, ...decoders, sink] as unknown as [NodeJS.ReadableStream, NodeJS.WritableStream], {
      signal: this.#abort.signal,
    })
    return sink.position
  }

  /** Lets `program` write the decoded NAR into the temp file while this process follows it; returns its size. */
  async #decodeByProgram(
    res: UpstreamResponse,
    program: DecoderProgram,
    indexer: NarIndexer,
    hasher: NarHasher,
  ): Promise<number> {
    const { upstream, narInfo } = this.info
    const signal = this.#abort.signal
    let decoder: FileDecoder | undefined
    try {
      decoder = spawnFileDecoder(program, res, this.#path, narInfo.narSize, this.#decoderLauncher)
      return await followDecodedFile({
        file: this.#file,
        decoder,
        indexer,
        hasher,
        narSize: narInfo.narSize,
        upstream: upstream.name,
        signal,
        onWritten: (bytes, entries) => this.onWritten(bytes, entries),
      })
    } catch (err) {
      if (err instanceof DecodedTooLargeError)
        throw new NarVerificationError(upstream.name, `NAR is larger than its NarSize ${narInfo.narSize}`)
      if (err instanceof DecoderOutputError || err instanceof DecoderStartError)
        throw new DiskError(err.message, { cause: err })
      throw err
    } finally {
      decoder?.kill()
    }
  }

  /** The whole NAR is on disk: it must be NarSize bytes, a complete NAR, and match NarHash. */
  async #verify(size: number, indexer: NarIndexer, hasher: NarHasher): Promise<void> {
    const { upstream, narInfo } = this.info
    if (size !== narInfo.narSize)
      throw new NarVerificationError(upstream.name, `NAR is ${size} bytes, NarSize says ${narInfo.narSize}`)
    try {
      indexer.end()
    } catch (err) {
      throw new NarVerificationError(upstream.name, (err as Error).message, { cause: err })
    }
    const digest = await hasher.digest().catch((err: Error) => {
      throw new DiskError(err.message, { cause: err })
    })
    if (!hashEquals({ algorithm: narInfo.narHash.algorithm, digest }, narInfo.narHash)) {
      throw new NarVerificationError(upstream.name, 'NAR does not match its NarHash')
    }
  }

  /** Called after each piece of the NAR has been written to disk, with the entries indexed in it. */
  onWritten(bytes: number, entries: readonly NarEntry[]): void {
    this.#written += bytes
    for (const entry of entries) this.#addEntry(entry)
    for (let i = this.#byteWaiters.length - 1; i >= 0; i--) {
      const waiter = this.#byteWaiters[i]!
      if (waiter.end <= this.#written) {
        this.#byteWaiters.splice(i, 1)
        waiter.resolve(this.#written)
      }
    }
  }

  /** Writes all of `chunks` at `position`: a short write (a nearly full disk) goes on with the rest, whose error then says why. */
  async writeAt(chunks: Buffer[], position: number): Promise<void> {
    let pending = chunks
    let at = position
    while (pending.length > 0) {
      const { bytesWritten } =
        pending.length === 1
          ? await this.#file.write(pending[0]!, 0, pending[0]!.length, at)
          : await this.#file.writev(pending, at)
      if (bytesWritten === 0) throw Object.assign(new Error('the disk accepted no more bytes'), { code: 'ENOSPC' })
      at += bytesWritten
      pending = skipBytes(pending, bytesWritten)
    }
  }

  get file(): FileHandle {
    return this.#file
  }

  #waitForBytes(end: number): Promise<number> {
    // A failed NAR (NarHash mismatch, cut-off upstream) is never read from again, even bytes that
    // arrived: responses still streaming from it are cut instead of finishing with unverified bytes.
    if (this.#failure !== undefined) return Promise.reject(this.#failure)
    if (end <= this.#written) return Promise.resolve(this.#written)
    if (this.#complete) return Promise.reject(new RangeError(`byte ${end} is past the end of the NAR`))
    return new Promise((resolve, reject) => this.#byteWaiters.push({ end, resolve, reject }))
  }

  #releaseReader(): void {
    this.#readers--
    if (this.#readers === 0 && this.#abortWhenUnused && !this.#finished) {
      // A request often reads twice (the head to sniff a type, then the body): only give up when
      // no reader came back shortly after the last one left.
      setTimeout(() => {
        if (this.#readers === 0 && !this.#finished) this.#abort.abort(new NarAbandonedError())
      }, UNUSED_GRACE_MS).unref()
    }
    void this.#maybeClose()
  }

  /** The store lets go once it no longer hands this download to new requests. */
  unhold(): void {
    this.#held = false
    void this.#maybeClose()
  }

  async #maybeClose(): Promise<void> {
    if (this.#finished && this.#readers === 0 && !this.#held && !this.#closed) {
      this.#closed = true
      await this.#file.close().catch(() => {})
    }
  }

  #addEntry(entry: NarEntry): void {
    const node: ListingNode =
      entry.type === 'directory'
        ? { type: 'directory', entries: new Map() }
        : entry.type === 'symlink'
          ? { type: 'symlink', target: entry.target }
          : { type: 'regular', size: entry.size, executable: entry.executable, narOffset: entry.narOffset }
    if (entry.path === '') {
      this.#root.node = node
    } else {
      const slash = entry.path.lastIndexOf('/')
      const parent = this.#locate(slash < 0 ? [] : entry.path.slice(0, slash).split('/'))
      if (parent?.type === 'directory') parent.entries.set(entry.path.slice(slash + 1), node)
    }
    const waiters = this.#nodeWaiters.get(entry.path)
    if (waiters !== undefined) {
      this.#nodeWaiters.delete(entry.path)
      for (const resolve of waiters) resolve(node)
    }
  }

  #locate(segments: readonly string[]): ListingNode | undefined {
    let node = this.#root.node
    for (const segment of segments) {
      if (node?.type !== 'directory') return undefined
      node = node.entries.get(segment)
    }
    return node
  }

  /** Lookups still waiting for a path get what the index has: nothing (it would have woken them). */
  #settleNodeWaiters(): void {
    for (const waiters of this.#nodeWaiters.values()) for (const resolve of waiters) resolve(undefined)
    this.#nodeWaiters.clear()
  }

  #settleWaiters(): void {
    this.#settleNodeWaiters()
    const failure = this.#failure ?? new RangeError('read past the end of the NAR')
    for (const waiter of this.#byteWaiters.splice(0)) waiter.reject(failure)
  }
}

/**
 * Decoders hand over 64 KiB pieces; writing (and telling the hash worker about) each one cost more
 * event-loop time than the bytes themselves (bench/ "cold last file", zstd), so they go to disk in batches of this size.
 */
const WRITE_BATCH_BYTES = 1024 * 1024
/** A smaller batch goes out after this long, so readers of a slow download are not kept waiting. */
const WRITE_BATCH_DELAY_MS = 2

/** Counts, hashes, indexes and writes the decoded NAR; refuses a single byte past NarSize. */
class NarSink extends Writable {
  readonly #download: NarDownload
  readonly #narSize: number
  readonly #upstream: string
  readonly #hasher: NarHasher
  readonly #indexer: NarIndexer
  /** Bytes accepted (indexed and counted) so far. */
  #position = 0
  /** Bytes on disk so far. */
  #written = 0
  #batch: Buffer[] = []
  #batchBytes = 0
  #batchEntries: NarEntry[] = []
  #timer: NodeJS.Timeout | undefined
  #writing: Promise<void> | undefined
  #blocked: (() => void) | undefined
  #failure: Error | undefined
  /** Hands a chunk back to the decoder once it is on disk (nothing else keeps chunks: the indexer copies what it needs). */
  readonly #recycle: ((chunk: Buffer) => void) | undefined

  constructor(
    download: NarDownload,
    narSize: number,
    indexer: NarIndexer,
    hasher: NarHasher,
    upstream: string,
    recycle: ((chunk: Buffer) => void) | undefined,
  ) {
    super({ highWaterMark: 4 * 1024 * 1024 })
    this.#recycle = recycle
    this.#download = download
    this.#narSize = narSize
    this.#indexer = indexer
    this.#upstream = upstream
    this.#hasher = hasher
  }

  /** Bytes accepted (indexed and counted); all on disk once the sink has finished. */
  get position(): number {
    return this.#position
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.#failure !== undefined) return callback(this.#failure)
    if (this.#position + chunk.length > this.#narSize) {
      return callback(new NarVerificationError(this.#upstream, `NAR is larger than its NarSize ${this.#narSize}`))
    }
    try {
      for (const entry of this.#indexer.push(chunk)) this.#batchEntries.push(entry)
    } catch (err) {
      return callback(new NarVerificationError(this.#upstream, (err as Error).message, { cause: err }))
    }
    this.#hasher.update(chunk)
    this.#position += chunk.length
    this.#batch.push(chunk)
    this.#batchBytes += chunk.length
    if (this.#batchBytes < WRITE_BATCH_BYTES) {
      this.#timer ??= setTimeout(() => this.#flush(), WRITE_BATCH_DELAY_MS)
      callback()
    } else if (this.#writing === undefined) {
      this.#flush()
      callback()
    } else {
      // One batch on its way to disk and one full batch waiting: that is the backpressure.
      this.#blocked = () => callback(this.#failure)
    }
  }

  /** Starts writing the collected chunks unless a write is in flight (its completion comes back here). */
  #flush(): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
    // Once destroyed (the download failed or was aborted) the file may be closed: write nothing more.
    if (this.destroyed || this.#writing !== undefined || this.#batchBytes === 0 || this.#failure !== undefined) return
    const chunks = this.#batch
    const bytes = this.#batchBytes
    const entries = this.#batchEntries
    const position = this.#written
    this.#batch = []
    this.#batchBytes = 0
    this.#batchEntries = []
    this.#writing = this.#download.writeAt(chunks, position).then(
      () => {
        this.#written = position + bytes
        this.#hasher.written(this.#written)
        this.#download.onWritten(bytes, entries)
        if (this.#recycle !== undefined) for (const chunk of chunks) this.#recycle(chunk)
      },
      (err: NodeJS.ErrnoException) => {
        this.#failure = new DiskError(`writing the NAR to disk: ${err.code ?? err.message}`, { cause: err })
        if (!this.destroyed) this.destroy(this.#failure)
      },
    )
    void this.#writing.then(() => {
      this.#writing = undefined
      if (this.#batchBytes >= WRITE_BATCH_BYTES) this.#flush()
      else if (this.#batchBytes > 0 && !this.destroyed)
        this.#timer ??= setTimeout(() => this.#flush(), WRITE_BATCH_DELAY_MS)
      const blocked = this.#blocked
      this.#blocked = undefined
      blocked?.()
    })
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.#drain().then(() => callback(), callback)
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    clearTimeout(this.#timer)
    callback(err)
  }

  /** Every byte accepted so far is on disk (or the write failed, or the download was aborted). */
  async #drain(): Promise<void> {
    for (;;) {
      if (this.#writing !== undefined) {
        await this.#writing
        continue
      }
      if (this.#failure !== undefined) throw this.#failure
      if (this.#batchBytes === 0) return
      // #flush() writes nothing once the sink is destroyed: waiting for it would spin forever.
      if (this.destroyed) throw new Error('the download was stopped before its last bytes were written')
      this.#flush()
    }
  }
}

function classify(err: unknown, upstream: string, signal: AbortSignal): Error {
  if (err instanceof NarVerificationError) return err
  if (err instanceof DecodedTooLargeError) return new NarVerificationError(upstream, err.message)
  // Stopped on purpose (every reader left, shutdown): that is the reason, whatever the decoding
  // step made of being stopped, and no upstream is to blame; unless the NAR had already proved
  // bad (its hash is checked after the last reader may have left).
  if (signal.aborted && signal.reason instanceof Error) return signal.reason
  if (err instanceof UpstreamError || err instanceof DiskError) return err
  const error = err as NodeJS.ErrnoException
  if (error.name === 'AbortError') return error.cause instanceof Error ? error.cause : error
  if (error.name === 'UnsupportedCompressionError') return error
  // Decoder failures (corrupt xz/zstd data) and truncated bodies are the upstream's fault.
  return new UpstreamError(upstream, 'bad-response', `while downloading the NAR: ${error.code ?? error.message}`, {
    cause: err,
  })
}

/** `chunks` without their first `bytes` bytes (views, no copies). */
function skipBytes(chunks: readonly Buffer[], bytes: number): Buffer[] {
  const rest: Buffer[] = []
  let skip = bytes
  for (const chunk of chunks) {
    if (skip >= chunk.length) skip -= chunk.length
    else {
      rest.push(skip > 0 ? chunk.subarray(skip) : chunk)
      skip = 0
    }
  }
  return rest
}
