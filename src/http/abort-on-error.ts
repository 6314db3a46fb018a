/** Makes a failing response body break the connection instead of ending the response. */
import type { ServerResponse } from 'node:http'

/**
 * When a body stream fails mid-response (upstream reset, NAR verification failure), the client
 * must see a broken transfer. @hono/node-server would instead log to the console and append
 * "Error: …" to the body, which could make a truncated file look complete; so the socket is
 * destroyed here and the error goes to unnar's own log.
 */
export function abortOnError(
  body: ReadableStream<Uint8Array>,
  outgoing: ServerResponse | undefined,
  onError: (err: unknown) => void,
): ReadableStream<Uint8Array> {
  if (outgoing === undefined) return body
  const reader = body.getReader()
  let cancelled = false
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          const next = await reader.read()
          if (cancelled) return
          if (next.done) controller.close()
          else controller.enqueue(next.value)
        } catch (err) {
          // A client that hung up cancelled us: nothing to report, nothing left to close.
          if (cancelled) return
          onError(err)
          outgoing.destroy()
          controller.close()
        }
      },
      cancel(reason) {
        cancelled = true
        return reader.cancel(reason)
      },
    },
    { highWaterMark: 0 },
  )
}
