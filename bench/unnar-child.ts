/**
 * A long-lived child process that (re)starts an in-process unnar on request, so each cold run gets
 * a fresh server and a fresh, empty cache directory without paying Node start-up each time, and
 * the server never shares an event loop with the bench client. Driven over IPC by bench/lib.ts.
 *
 *   → { type: 'start', upstream, cacheDir, verify? }   ← { type: 'started', url }
 *   → { type: 'stop' }                        ← { type: 'stopped' }
 */
import { loadConfig } from '../src/config.js'
import { createLogger, type LogLevel } from '../src/log.js'
import { startServer, type RunningServer } from '../src/server.js'

type Message =
  | { type: 'start'; upstream: string; cacheDir: string; logLevel?: LogLevel; verify?: 'strict' | 'stream' }
  | { type: 'stop' }

let server: RunningServer | undefined

function reply(message: object): void {
  process.send?.(message)
}

process.on('message', (message: Message) => {
  void (async () => {
    try {
      if (server !== undefined) {
        await server.close()
        server = undefined
      }
      if (message.type === 'start') {
        const level = message.logLevel ?? 'error'
        server = await startServer(
          loadConfig({
            PORT: '0',
            HTTP_ADDR: '127.0.0.1',
            NIX_CACHE_URL: message.upstream,
            UNNAR_CACHE_DIR: message.cacheDir,
            UNNAR_CACHE_SIZE: '20G',
            LOG_LEVEL: level,
            UNNAR_VERIFY: message.verify ?? 'strict',
          }),
          createLogger(level),
        )
        reply({ type: 'started', url: server.url })
      } else {
        reply({ type: 'stopped' })
      }
    } catch (err) {
      reply({ type: 'error', message: (err as Error).message })
    }
  })()
})
process.on('disconnect', () => process.exit(0))
reply({ type: 'ready' })
