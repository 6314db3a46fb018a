/** Listening on a random port of a given address, as a promise. */
import type net from 'node:net'

/** Rejects when `host` cannot be bound (127.0.0.2 on a system without all of 127/8, say). */
export function listen(server: net.Server, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
}
