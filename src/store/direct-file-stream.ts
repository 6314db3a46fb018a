/** The no-disk fallback: stream one file straight out of an upstream NAR, stopping once it is sent. */
import { pipeline, type Readable } from 'node:stream'
import { createNarDecoders } from '../codecs/decompress.js'
import type { ListingNode } from '../formats/listing.js'
import { NarIndexer } from '../formats/nar-indexer.js'
import type { PathInfo } from '../upstream/path-info-lookup.js'
import { UpstreamError } from '../upstream/upstream.js'

export type RegularNode = Extract<ListingNode, { type: 'regular' }>

export interface DirectFile {
  readonly node: RegularNode
  readonly body: ReadableStream<Uint8Array>
}

/**
 * Used when the cache directory cannot take a download (disk full, read-only): nothing is kept
 * and nothing is verified against NarHash, because the NAR is abandoned once the file is out.
 * Resolves undefined when the NAR has no regular file at `path`.
 */
export async function openDirectFile(info: PathInfo, path: string, signal?: AbortSignal): Promise<DirectFile | undefined> {
  const { upstream, narKey, narInfo } = info
  const res = await upstream.get(narKey, signal)
  if (res === undefined) throw new UpstreamError(upstream.name, 'bad-status', `NAR ${narKey} is missing`)
  const decoders = createNarDecoders(res.body, res.contentEncoding, narInfo.compression, narInfo.narSize)
  // pipeline() destroys every stage when one fails or stop() destroys the last; its error reaches
  // the reader below through the last stage.
  pipeline([res.body, ...decoders], () => {})
  const decoded: Readable = decoders.at(-1)!
  const chunks = decoded[Symbol.asyncIterator]() as AsyncIterator<Buffer>
  const indexer = new NarIndexer()
  let position = 0
  const stop = () => {
    decoded.destroy()
    res.body.destroy()
  }
  try {
    for (;;) {
      const next = await chunks.next()
      if (next.done) {
        indexer.end()
        return undefined
      }
      const chunk = next.value
      const start = position
      position += chunk.length
      const entry = indexer.push(chunk).find((e) => e.path === path)
      if (entry === undefined) continue
      if (entry.type !== 'regular') {
        stop()
        return undefined
      }
      const node: RegularNode = { type: 'regular', size: entry.size, executable: entry.executable, narOffset: entry.narOffset }
      return { node, body: contentStream(chunks, chunk, start, entry.narOffset, entry.narOffset + entry.size, stop) }
    }
  } catch (err) {
    stop()
    throw err instanceof UpstreamError ? err : new UpstreamError(upstream.name, 'bad-response', `reading NAR ${narKey}: ${(err as Error).message}`, { cause: err })
  }
}

/** The bytes [from, to) of the NAR, from the chunk that held the entry's header onwards. */
function contentStream(chunks: AsyncIterator<Buffer>, first: Buffer, firstStart: number, from: number, to: number, stop: () => void): ReadableStream<Uint8Array> {
  let pending: Buffer | undefined = first
  let pendingStart = firstStart
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          for (;;) {
            if (pending === undefined) {
              const next = await chunks.next()
              if (next.done) throw new Error('NAR ended inside the file')
              pending = next.value
            }
            const chunk: Buffer = pending
            const start = pendingStart
            pending = undefined
            pendingStart = start + chunk.length
            const a = Math.max(from, start)
            const b = Math.min(to, start + chunk.length)
            if (b > a) controller.enqueue(chunk.subarray(a - start, b - start))
            if (start + chunk.length >= to) {
              stop()
              controller.close()
              return
            }
            if (b > a) return
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
