/**
 * The HTTP test upstream of test/helpers/test-upstream.ts in its own process (so serving the NAR
 * does not compete with the bench client's event loop), driven over IPC by bench/lib.ts.
 *
 *   → { type: 'start', root }          ← { type: 'started', url }
 *   → { type: 'count', pattern }       ← { type: 'count', n }   (GET requests whose path matches)
 *   → { type: 'stop' }                 ← { type: 'stopped' }
 */
import { startTestUpstream, type TestUpstream } from '../test/helpers/test-upstream.js'

type Message = { type: 'start'; root: string } | { type: 'count'; pattern: string } | { type: 'stop' }

let upstream: TestUpstream | undefined

function reply(message: object): void {
  process.send?.(message)
}

process.on('message', (message: Message) => {
  void (async () => {
    try {
      if (message.type === 'count') {
        reply({ type: 'count', n: upstream?.count(new RegExp(message.pattern), 'GET') ?? 0 })
        return
      }
      if (upstream !== undefined) {
        await upstream.close()
        upstream = undefined
      }
      if (message.type === 'start') {
        upstream = await startTestUpstream({ root: message.root })
        reply({ type: 'started', url: upstream.url })
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
