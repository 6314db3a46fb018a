/**
 * A response body read from a file on disk straight into the node response, through two buffers
 * of its own: the body of a file of a cached NAR (bench/ "hot 64 MiB file from the cached NAR on
 * disk").
 */
import type { ServerResponse } from 'node:http'
import type { FileReader } from '../store/file-source.js'

/**
 * Bytes read at a time. Node has no sendfile: every byte is read into memory and written to the
 * socket. Large reads into buffers used again save the page faults and promise hops of fresh
 * 512 KiB buffers in a chain of web streams; each connection holds two of them at most.
 */
export const DISK_BODY_READ_BYTES = 1024 * 1024

/**
 * The chunk read before the headers are out: a fresh buffer node-server holds until it is written,
 * so it is kept small and a connection holds the two buffers above and little more.
 */
const FIRST_READ_BYTES = 64 * 1024

/**
 * Bytes [start, end) of the file, as a web stream that @hono/node-server consumes: once the
 * response's headers are out, its first pull writes the whole range into `outgoing` itself (one
 * buffer being filled while the other is written, the socket's backpressure respected), then
 * closes. Before that (node-server reads a body ahead of its headers) it gives one chunk the
 * ordinary way. An error fails the stream, which the caller's guard turns into a broken connection.
 */
export function diskBody(
  outgoing: ServerResponse,
  reader: FileReader,
  start: number,
  end: number,
): ReadableStream<Uint8Array> {
  let position = start
  let done = false
  const release = () => {
    if (done) return
    done = true
    reader.release()
  }
  const readExactly = async (buffer: Uint8Array, length: number) => {
    const bytesRead = await reader.readAt(buffer, length, position)
    if (bytesRead !== length) throw new Error(`the file ended at ${position + bytesRead}, expected ${end}`)
    position += length
  }
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          if (position < end && !outgoing.headersSent) {
            const length = Math.min(FIRST_READ_BYTES, end - position)
            const buffer = Buffer.allocUnsafeSlow(length)
            await readExactly(buffer, length)
            controller.enqueue(buffer)
            return
          }
          await pump(outgoing, end - position, readExactly, () => done)
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

/**
 * Reads `left` bytes (with `read`) and writes them into `outgoing`, two buffers taking turns: a
 * buffer is filled again only once node has handed its last bytes to the kernel, so no more than
 * two are ever waiting for the socket (its backpressure).
 */
async function pump(
  outgoing: ServerResponse,
  left: number,
  read: (buffer: Uint8Array, length: number) => Promise<void>,
  cancelled: () => boolean,
): Promise<void> {
  if (left <= 0) return
  const size = Math.min(DISK_BODY_READ_BYTES, left)
  const buffers = [Buffer.allocUnsafeSlow(size), Buffer.allocUnsafeSlow(size)]
  const writing: Array<Promise<unknown> | undefined> = [undefined, undefined]
  let onClose: (() => void) | undefined
  const gone = new Promise<void>((resolve) => {
    onClose = resolve
    outgoing.once('close', resolve)
  })
  try {
    for (let turn = 0; left > 0; turn ^= 1) {
      await Promise.race([writing[turn], gone])
      if (outgoing.destroyed || cancelled()) return
      const length = Math.min(size, left)
      const buffer = buffers[turn]!
      await read(buffer, length)
      left -= length
      // The callback comes once the bytes are in the kernel, or with an error when the socket is gone.
      writing[turn] = new Promise((resolve) =>
        outgoing.write(length === size ? buffer : buffer.subarray(0, length), resolve),
      )
    }
    await Promise.race([Promise.all(writing), gone])
  } finally {
    outgoing.off('close', onClose!)
  }
}
