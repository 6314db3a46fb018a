/**
 * A response body read from a file on disk straight into the node response, through buffers
 * lent by ReadBuffers: the body of a file of a NAR on disk, cached or still downloading (bench/
 * "hot 64 MiB file from the cached NAR on disk", "crawl").
 */
import type { ServerResponse } from 'node:http'
import type { FileReader } from '../store/file-source.js'
import { READ_WAIT_BYTES } from '../store/nar-source.js'
import type { ReadBuffers } from './read-buffers.js'

/**
 * Bytes read at a time into a lent buffer. Node has no sendfile: every byte is read into memory
 * and written to the socket. Large reads into buffers used again save the page faults and promise
 * hops of fresh buffers in a chain of web streams; a response holds two of them at most.
 */
export const DISK_BODY_READ_BYTES = 1024 * 1024

/**
 * The chunk read before the headers are out (a fresh buffer node-server holds until it is
 * written), and the buffers of a response when ReadBuffers has none to lend.
 */
const SMALL_READ_BYTES = 64 * 1024

/**
 * Bytes [start, end) of the file, as a web stream that @hono/node-server consumes: once the
 * response's headers are out, its first pull writes the whole range into `outgoing` itself (one
 * buffer being filled while the other is written, the socket's backpressure respected), then
 * closes. Before that (node-server may read a body ahead of its headers) it gives one chunk the
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
  // How far the file exists, as its last wait found.
  let available = start
  let done = false
  let onDone: (() => void) | undefined
  // Wakes a wait for bytes of a NAR still arriving once the response is over.
  const over = new Promise<undefined>((resolve) => {
    onDone = () => resolve(undefined)
  })
  const release = () => {
    if (done) return
    done = true
    onDone!()
    reader.release()
  }
  const source: PumpSource = {
    left: () => end - position,
    async ready(stop) {
      const next = Math.min(position + READ_WAIT_BYTES, end)
      if (available < next) {
        const reached = await Promise.race([reader.waitFor(next), stop, over])
        if (reached === undefined) return false
        available = reached
      }
      return !done
    },
    async read(buffer) {
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
            if (await source.ready(over)) await firstChunk(source, controller)
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

/** The chunk given the ordinary way, before the headers are out: a fresh buffer, which node-server holds until it is written. */
async function firstChunk(source: PumpSource, controller: ReadableStreamDefaultController<Uint8Array>): Promise<void> {
  const buffer = Buffer.allocUnsafeSlow(Math.min(SMALL_READ_BYTES, source.left()))
  const length = await source.read(buffer)
  if (source.left() > 0 || source.beforeLastByte === undefined) {
    controller.enqueue(buffer.subarray(0, length))
    return
  }
  if (length > 1) controller.enqueue(buffer.subarray(0, length - 1))
  await source.beforeLastByte()
  controller.enqueue(buffer.subarray(length - 1, length))
}

/** What pump() writes: the bytes left of a range, read in turn into its buffers. */
interface PumpSource {
  left(): number
  /**
   * Waits until the next bytes exist (on a NAR still arriving: READ_WAIT_BYTES of them, or the
   * rest of the range); false, without waiting any longer, once `stop` resolves or the response is over.
   */
  ready(stop: Promise<undefined>): Promise<boolean>
  /** Reads into `buffer` as much of what ready() found as fits; resolves with how many bytes. */
  read(buffer: Buffer): Promise<number>
  readonly beforeLastByte: (() => Promise<void>) | undefined
  cancelled(): boolean
}

/**
 * Writes what is left of `source` into `outgoing`, two buffers taking turns: a buffer is filled
 * again only once node has handed its last bytes to the kernel, so no more than two are ever
 * waiting for the socket (its backpressure). A buffer is taken only once there are bytes to read
 * into it, lent by `buffers` while they have one to lend; it goes back once no write holds it.
 */
async function pump(outgoing: ServerResponse, source: PumpSource, buffers: ReadBuffers): Promise<void> {
  const own: Array<Buffer | undefined> = [undefined, undefined]
  const lent = [false, false]
  const writing: Array<Promise<void> | undefined> = [undefined, undefined]
  // Writes not called back yet, per buffer: a lent buffer goes back only at 0.
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
  const gone = new Promise<undefined>((resolve) => {
    onClose = () => resolve(undefined)
    outgoing.once('close', onClose)
  })
  try {
    for (let turn = 0; source.left() > 0; turn ^= 1) {
      await Promise.race([writing[turn], gone])
      if (outgoing.destroyed || !(await source.ready(gone)) || outgoing.destroyed) return
      if (own[turn] === undefined) {
        const borrowed = source.left() > SMALL_READ_BYTES ? buffers.take() : undefined
        lent[turn] = borrowed !== undefined
        own[turn] = borrowed ?? Buffer.allocUnsafeSlow(Math.min(SMALL_READ_BYTES, source.left()))
      }
      const buffer = own[turn]!
      const length = await source.read(buffer)
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
    for (const turn of [0, 1]) {
      if (!lent[turn]) continue
      // Only a response cut short leaves a write pending (its connection is gone, so node will not
      // send it); the buffer is still not lent again, in case node reads it later all the same.
      if (inFlight[turn] === 0) buffers.give(own[turn]!)
      else buffers.forget()
    }
  }
}
