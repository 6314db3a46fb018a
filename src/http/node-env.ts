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
