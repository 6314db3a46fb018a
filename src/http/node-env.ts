/** The node:http objects @hono/node-server puts in `c.env` (absent when an app is called through `fetch`). */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Context } from 'hono'

interface NodeEnv {
  readonly incoming?: IncomingMessage
  readonly outgoing?: ServerResponse
}

export function incomingOf(c: Context): IncomingMessage | undefined {
  return (c.env as NodeEnv | undefined)?.incoming
}

export function outgoingOf(c: Context): ServerResponse | undefined {
  return (c.env as NodeEnv | undefined)?.outgoing
}

/**
 * Calls `done` once node has closed the response (sent, or the client went away); at once if it
 * has, or if it was destroyed: one closed with its connection (closeWithConnection) never reads as closed.
 */
export function whenResponseEnds(outgoing: ServerResponse, done: () => void): void {
  if (outgoing.closed || outgoing.destroyed) done()
  else outgoing.once('close', done)
}

/**
 * Node never closes a response still queued behind an earlier one on its connection (HTTP
 * pipelining) when that connection dies: its body would wait for a 'drain' that never comes,
 * holding what it reads from (a NAR lease, an upstream connection). This closes it with the
 * connection, so everything waiting for its 'close' lets go.
 */
export function closeWithConnection(outgoing: ServerResponse): void {
  const socket = outgoing.req.socket
  if (outgoing.socket === socket) return // not queued: node closes it itself
  const onConnectionClose = () => {
    if (outgoing.closed) return
    outgoing.destroy()
    outgoing.emit('close')
  }
  socket.once('close', onConnectionClose)
  outgoing.once('close', () => socket.off('close', onConnectionClose))
}
