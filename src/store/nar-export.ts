/**
 * The NAR of a node of a verified NAR: the stored bytes verbatim for the whole store path, else
 * the node written anew (formats/nar-writer.ts) with its files' contents copied from the NAR.
 */
import type { ListingNode } from '../formats/listing.js'
import { narPieces } from '../formats/nar-writer.js'
import type { HeldNar } from './file-source.js'
import { READ_MAX_BYTES } from './nar-source.js'

/**
 * `node` is the root of the NAR (`narSize` bytes) or any node below it, from the NAR's own
 * listing. The NAR is held until the stream ends, fails or is cancelled.
 */
export function exportNar(nar: HeldNar, node: ListingNode, root: boolean, narSize: number): ReadableStream<Uint8Array> {
  if (root) return nar.stream(nar.source.read(0, narSize))
  const release = nar.hold()
  const pieces = narPieces(node)
  let file: ReadableStreamDefaultReader<Uint8Array> | undefined
  let done = false
  const finish = () => {
    if (done) return
    done = true
    release()
  }
  return new ReadableStream<Uint8Array>(
    {
      // One chunk per pull: framing bytes, or the next read of the file being copied.
      async pull(controller) {
        try {
          for (;;) {
            if (file !== undefined) {
              const next = await file.read()
              if (!next.done) return controller.enqueue(next.value)
              file = undefined
            }
            const piece = pieces.next()
            if (piece.done) {
              finish()
              return controller.close()
            }
            const { value } = piece
            if (value.kind === 'bytes') return controller.enqueue(value.bytes)
            const { narOffset, size } = value
            // No bigger than one streamed read: in one positioned read (see tree-archive.ts).
            if (size <= READ_MAX_BYTES)
              return controller.enqueue(await nar.source.readBytes(narOffset, narOffset + size))
            file = nar.source.read(narOffset, narOffset + size).getReader()
          }
        } catch (err) {
          finish()
          controller.error(err)
        }
      },
      async cancel(reason) {
        finish()
        await file?.cancel(reason)
      },
    },
    { highWaterMark: 0 },
  )
}
