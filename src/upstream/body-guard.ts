/** Wraps an upstream response body: an idle timeout that only counts while unnar wants data, and typed errors. */
import { PassThrough, type Readable } from 'node:stream'

export interface BodyGuardOptions {
  /** Longest silence between two chunks while the consumer is ready for more; 0 = none. */
  readonly idleTimeoutMs: number
  /** The error the body fails with when the upstream stays silent for idleTimeoutMs. */
  readonly onIdle: () => Error
  /** Translates the source's own failures (resets, aborts) into the error the consumer sees. */
  readonly mapError: (err: Error) => Error
  readonly highWaterMark?: number
}

/**
 * Returns a stream carrying `source`'s bytes. The idle timer runs only while the wrapper's buffer has
 * room: a slow consumer (a client on a slow link, a paused video) pauses the upstream without counting
 * as upstream silence. Destroying the returned stream early destroys `source` (freeing its socket);
 * a source that closes before its end fails the returned stream.
 */
export function guardBody(source: Readable, options: BodyGuardOptions): Readable {
  const out = new PassThrough({ highWaterMark: options.highWaterMark ?? 256 * 1024 })
  let timer: NodeJS.Timeout | undefined
  let settled = false
  const stop = (): void => {
    if (timer !== undefined) clearTimeout(timer)
    timer = undefined
  }
  const fail = (err: Error): void => {
    if (settled) return
    settled = true
    stop()
    out.destroy(err)
    source.destroy()
  }
  const arm = (): void => {
    stop()
    if (options.idleTimeoutMs > 0) timer = setTimeout(() => fail(options.onIdle()), options.idleTimeoutMs)
  }
  source.on('data', (chunk: Buffer) => {
    if (settled) return
    if (out.write(chunk)) {
      arm()
    } else {
      stop()
      source.pause()
    }
  })
  out.on('drain', () => {
    if (settled) return
    arm()
    source.resume()
  })
  source.once('end', () => {
    if (settled) return
    settled = true
    stop()
    out.end()
  })
  source.once('error', (err) => fail(options.mapError(err)))
  source.once('close', () => {
    if (!settled)
      fail(
        options.mapError(
          Object.assign(new Error('the connection closed before the body was complete'), { code: 'ECONNRESET' }),
        ),
      )
  })
  out.once('close', () => {
    if (settled) return
    // The consumer gave up early: free the upstream connection.
    settled = true
    stop()
    source.destroy()
  })
  arm()
  return out
}

/** `500 ms`, `10 s`, `1.5 s`. */
export function formatMs(ms: number): string {
  return ms < 1000 ? `${ms} ms` : `${Number((ms / 1000).toFixed(3))} s`
}
