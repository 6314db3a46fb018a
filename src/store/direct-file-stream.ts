/** The no-disk fallback: stream one file straight out of an upstream NAR, nothing kept. */
import { createHash, type Hash } from 'node:crypto'
import { pipeline, type Readable } from 'node:stream'
import type { DecoderPrograms } from '../codecs/decoder-programs.js'
import { createNarDecoders, DecodedTooLargeError } from '../codecs/decompress.js'
import { hashEquals } from '../formats/hash.js'
import type { ListingNode } from '../formats/listing.js'
import { NarIndexer } from '../formats/nar-indexer.js'
import type { PathInfo } from '../upstream/path-info-lookup.js'
import { UpstreamError } from '../upstream/upstream.js'
import { NarVerificationError } from './nar-errors.js'

export type RegularNode = Extract<ListingNode, { type: 'regular' }>

export interface DirectFile {
  readonly node: RegularNode
  readonly body: ReadableStream<Uint8Array>
}

export interface DirectFileOptions {
  readonly signal?: AbortSignal | undefined
  /**
   * Strict verification: once the file is out but for its last byte, the rest of the NAR is read
   * and checked against NarSize and NarHash before that byte is sent (the body fails otherwise).
   * Without it the NAR is abandoned as soon as the file is out, unverified.
   */
  readonly verify: boolean
  /** The decoder programs the store decodes with (none: in-process decoders). */
  readonly programs?: DecoderPrograms | undefined
}

/**
 * Used when the cache directory cannot take a download (disk full, read-only). Resolves undefined
 * when the NAR has no regular file at `path`.
 */
export async function openDirectFile(
  info: PathInfo,
  path: string,
  options: DirectFileOptions,
): Promise<DirectFile | undefined> {
  const { upstream, narKey, narInfo } = info
  const res = await upstream.get(narKey, options.signal)
  if (res === undefined) throw new UpstreamError(upstream.name, 'bad-status', `NAR ${narKey} is missing`)
  const decoders = createNarDecoders(
    res.body,
    res.contentEncoding,
    narInfo.compression,
    narInfo.narSize,
    options.programs,
  )
  // pipeline() destroys every stage when one fails or stop() destroys the last; its error reaches
  // the reader below through the last stage.
  pipeline([res.body, ...decoders], () => {})
  const decoded: Readable = decoders.at(-1)!
  const nar = new NarChunks(decoded[Symbol.asyncIterator]() as AsyncIterator<Buffer>, info)
  const stop = () => {
    decoded.destroy()
    res.body.destroy()
  }
  try {
    for (;;) {
      const next = await nar.next()
      if (next === undefined) {
        await nar.verify()
        return undefined
      }
      const entry = next.entries.find((e) => e.path === path)
      if (entry === undefined) continue
      if (entry.type !== 'regular') {
        stop()
        return undefined
      }
      const node: RegularNode = {
        type: 'regular',
        size: entry.size,
        executable: entry.executable,
        narOffset: entry.narOffset,
      }
      return {
        node,
        body: contentStream(
          nar,
          next.chunk,
          next.start,
          entry.narOffset,
          entry.narOffset + entry.size,
          stop,
          options.verify,
        ),
      }
    }
  } catch (err) {
    stop()
    if (err instanceof DecodedTooLargeError) throw new NarVerificationError(upstream.name, err.message)
    throw err instanceof UpstreamError || err instanceof NarVerificationError
      ? err
      : new UpstreamError(upstream.name, 'bad-response', `reading NAR ${narKey}: ${(err as Error).message}`, {
          cause: err,
        })
  }
}

/** The decoded NAR chunk by chunk, each one counted, hashed and indexed. */
class NarChunks {
  readonly #chunks: AsyncIterator<Buffer>
  readonly #info: PathInfo
  readonly #indexer = new NarIndexer()
  readonly #hash: Hash
  #position = 0

  constructor(chunks: AsyncIterator<Buffer>, info: PathInfo) {
    this.#chunks = chunks
    this.#info = info
    this.#hash = createHash(info.narInfo.narHash.algorithm)
  }

  /** The next chunk, where it starts in the NAR and the entries it completed; undefined at the end. */
  async next(): Promise<{ chunk: Buffer; start: number; entries: ReturnType<NarIndexer['push']> } | undefined> {
    const next = await this.#chunks.next()
    if (next.done) return undefined
    const chunk = next.value
    const start = this.#position
    this.#position += chunk.length
    if (this.#position > this.#info.narInfo.narSize)
      throw this.#bad(`NAR is larger than its NarSize ${this.#info.narInfo.narSize}`)
    this.#hash.update(chunk)
    return { chunk, start, entries: this.#indexer.push(chunk) }
  }

  /** The whole NAR has been read: it must be complete, NarSize bytes and match NarHash. */
  async verify(): Promise<void> {
    const { narSize, narHash } = this.#info.narInfo
    try {
      this.#indexer.end()
    } catch (err) {
      throw this.#bad((err as Error).message)
    }
    if (this.#position !== narSize) throw this.#bad(`NAR is ${this.#position} bytes, NarSize says ${narSize}`)
    if (!hashEquals({ algorithm: narHash.algorithm, digest: new Uint8Array(this.#hash.digest()) }, narHash))
      throw this.#bad('NAR does not match its NarHash')
  }

  /** Reads and checks the rest of the NAR. */
  async drain(): Promise<void> {
    while ((await this.next()) !== undefined);
    await this.verify()
  }

  #bad(message: string): NarVerificationError {
    return new NarVerificationError(this.#info.upstream.name, message)
  }
}

/**
 * The bytes [from, to) of the NAR, from the chunk that held the entry's header onwards. With
 * `verify`, the last byte waits for the rest of the NAR to be read and verified.
 */
function contentStream(
  nar: NarChunks,
  first: Buffer,
  firstStart: number,
  from: number,
  to: number,
  stop: () => void,
  verify: boolean,
): ReadableStream<Uint8Array> {
  let pending: Buffer | undefined = first
  let pendingStart = firstStart
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          for (;;) {
            if (pending === undefined) {
              const next = await nar.next()
              if (next === undefined) throw new Error('NAR ended inside the file')
              pending = next.chunk
              pendingStart = next.start
            }
            const chunk: Buffer = pending
            const start = pendingStart
            pending = undefined
            const a = Math.max(from, start)
            const b = Math.min(to, start + chunk.length)
            if (start + chunk.length < to) {
              if (b > a) {
                controller.enqueue(chunk.subarray(a - start, b - start))
                return
              }
              continue
            }
            // The chunk that holds the file's end (or its last bytes of an empty file).
            if (!verify) {
              if (b > a) controller.enqueue(chunk.subarray(a - start, b - start))
              stop()
            } else {
              if (b - 1 > a) controller.enqueue(chunk.subarray(a - start, b - 1 - start))
              await nar.drain()
              if (b > a) controller.enqueue(chunk.subarray(b - 1 - start, b - start))
            }
            controller.close()
            return
          }
        } catch (err) {
          stop()
          controller.error(err)
        }
      },
      cancel: stop,
    },
    { highWaterMark: 0 },
  )
}
