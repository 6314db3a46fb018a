/** Reads the first bytes of a web stream without losing them (for content sniffing). */
export async function peekStream(
  stream: ReadableStream<Uint8Array>,
  bytes: number,
): Promise<{ head: Uint8Array; stream: ReadableStream<Uint8Array> }> {
  const reader = stream.getReader()
  const buffered: Uint8Array[] = []
  let total = 0
  let done = false
  while (total < bytes) {
    const next = await reader.read()
    if (next.done) {
      done = true
      break
    }
    buffered.push(next.value)
    total += next.value.length
  }
  const head = Buffer.concat(buffered).subarray(0, bytes)
  const replay = new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        const first = buffered.shift()
        if (first !== undefined) {
          controller.enqueue(first)
          return
        }
        if (done) {
          controller.close()
          return
        }
        try {
          const next = await reader.read()
          if (next.done) controller.close()
          else controller.enqueue(next.value)
        } catch (err) {
          controller.error(err)
        }
      },
      cancel(reason) {
        return reader.cancel(reason)
      },
    },
    { highWaterMark: 0 },
  )
  return { head, stream: replay }
}
