/**
 * A response body read from a file on disk straight into the node response, through buffers
 * lent by ReadBuffers: the body of a file of a NAR on disk, cached or still downloading (bench/
 * "hot 64 MiB file from the cached NAR on disk", "crawl").
 */
import type { ServerResponse } from 'node:http'
import type { FileReader } from '../store/file-source.js'
import type { ReadBuffers } from './read-buffers.js'

/**
 * Bytes read at a time into a lent buffer. Node has no sendfile: every byte is read into memory
 * and written to the socket. Large reads into buffers used again save the page faults and promise
 * hops of fresh buffers in a chain of web streams; a response holds two of them at most.
 */
export const DISK_BODY_READ_BYTES = 1024 * 1024

/**
 * The chunk read before the headers are out (a fresh buffer node-server holds until it is
 * written), the buffers of a response when ReadBuffers has none to lend, and how many bytes of a
 * NAR still arriving a read waits for (or the end of the range): a reader follows the download
 * closely without tiny reads.
 */
const SMALL_READ_BYTES = 64 * 1024

/**
 * Bytes [start, end) of the file, as a web stream that @hono/node-server consumes: once the
 * response's headers are out, its first pull writes the whole range into `outgoing` itself (one
 * buffer being filled while the other is written, the socket's backpressure respected), then
 * closes. Before that (node-server reads a body ahead of its headers) it gives one chunk the
 * ordinary way. With the reader's beforeLastByte, the last byte is written only once that
 * resolves. An error fails the stream, which the caller's guard turns into a broken connection.
 */
export function diskBody(
  outgoing: ServerResponse,
  reader: FileReader,
  start: number,
  end: number,
  buffers: ReadBuffers,
): ReadableStream<Uint8Array> {
  let position = start
  let done = false
  const release = () => {
    if (done) return
    done = true
    reader.release()
  }
  const source: PumpSource = {
    left: () => end - position,
    async readNext(buffer) {
      const available = await reader.waitFor(Math.min(position + SMALL_READ_BYTES, end))
      const length = Math.min(buffer.length, end - position, available - position)
      const bytesRead = await reader.readAt(buffer, length, position)
      if (bytesRead !== length) throw new Error(`the file ended at ${position + bytesRead}, expected ${end}`)
      position += length
      return length
    },
    beforeLastByte: reader.beforeLastByte,
    cancelled: () => done,
  }
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          if (position < end && !outgoing.headersSent) {
            const buffer = Buffer.allocUnsafeSlow(Math.min(SMALL_READ_BYTES, end - position))
            const length = await source.readNext(buffer)
            if (position === end && source.beforeLastByte !== undefined) {
              if (length > 1) controller.enqueue(buffer.subarray(0, length - 1))
              await source.beforeLastByte()
              controller.enqueue(buffer.subarray(length - 1, length))
            } else {
              controller.enqueue(buffer.subarray(0, length))
            }
            return
          }
          await pump(outgoing, source, buffers)
          release()
          controller.close()
        } catch (err) {
          release()
          controller.error(err)
        }
      },
      cancel: release,
    },
    { highWaterMark: 0 },
  )
}

/** What pump() writes: the bytes left of a range, read in turn into its buffers. */
interface PumpSource {
  left(): number
  /** Reads the next bytes into `buffer` (what has arrived, on a NAR still arriving); resolves with how many. */
  readNext(buffer: Buffer): Promise<number>
  readonly beforeLastByte: (() => Promise<void>) | undefined
  cancelled(): boolean
}

/**
 * Writes what is left of `source` into `outgoing`, two buffers taking turns: a buffer is filled
 * again only once node has handed its last bytes to the kernel, so no more than two are ever
 * waiting for the socket (its backpressure). Lent buffers go back once no write holds them; one
 * still being written when the response ends early is let go of (garbage once node drops it).
 */
async function pump(outgoing: ServerResponse, source: PumpSource, buffers: ReadBuffers): Promise<void> {
  if (source.left() <= 0) return
  const lent = source.left() > SMALL_READ_BYTES ? takeTwo(buffers) : undefined
  const own: Array<Buffer | undefined> = lent ?? [undefined, undefined]
  const writing: Array<Promise<void> | undefined> = [undefined, undefined]
  // Writes not called back yet, per buffer: a buffer goes back to the pool only at 0.
  const inFlight = [0, 0]
  const write = (turn: number, chunk: Buffer) => {
    inFlight[turn]!++
    // The callback comes once the bytes are in the kernel, or with an error when the socket is gone.
    writing[turn] = new Promise((resolve) =>
      outgoing.write(chunk, () => {
        inFlight[turn]!--
        resolve()
      }),
    )
  }
  let onClose: (() => void) | undefined
  const gone = new Promise<void>((resolve) => {
    onClose = resolve
    outgoing.once('close', resolve)
  })
  try {
    for (let turn = 0; source.left() > 0; turn ^= 1) {
      await Promise.race([writing[turn], gone])
      if (outgoing.destroyed || source.cancelled()) return
      const buffer = own[turn] ?? Buffer.allocUnsafeSlow(Math.min(SMALL_READ_BYTES, source.left()))
      own[turn] = buffer
      const length = await source.readNext(buffer)
      if (source.left() === 0 && source.beforeLastByte !== undefined) {
        if (length > 1) write(turn, buffer.subarray(0, length - 1))
        await Promise.race([source.beforeLastByte(), gone])
        if (outgoing.destroyed || source.cancelled()) return
        write(turn, buffer.subarray(length - 1, length))
      } else {
        write(turn, length === buffer.length ? buffer : buffer.subarray(0, length))
      }
    }
    await Promise.race([Promise.all(writing), gone])
  } finally {
    outgoing.off('close', onClose!)
    if (lent !== undefined)
      for (const turn of [0, 1]) {
        if (inFlight[turn] === 0) buffers.give(lent[turn]!)
        else buffers.forget()
      }
  }
}

/** Two lent buffers, or none: a response reading into one big and one small buffer would gain little. */
function takeTwo(buffers: ReadBuffers): [Buffer, Buffer] | undefined {
  const first = buffers.take()
  if (first === undefined) return undefined
  const second = buffers.take()
  if (second !== undefined) return [first, second]
  buffers.give(first)
  return undefined
}
