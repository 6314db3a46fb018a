/**
 * Waiting for the thing itself, never for a while: a condition, an event or a promise, each with a
 * deadline that names what was awaited. The deadlines are generous (a loaded machine is slow, not
 * wrong); a passing test never waits for one.
 */
import type { EventEmitter } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'

/** The default deadline of the waits below. */
export const WAIT_MS = 20_000

/** Waits until `check` holds (polled every 10 ms), failing with `what` after `ms`. */
export async function eventually(check: () => Promise<boolean> | boolean, what: string, ms = WAIT_MS): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for: ${what}`)
    await sleep(10)
  }
}

/** `promise`, or a failure naming `what` (worked out then, when a function) once `ms` have passed first. */
export async function within<T>(promise: Promise<T>, what: string | (() => string), ms = WAIT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`timed out after ${ms} ms waiting for: ${typeof what === 'function' ? what() : what}`)),
      ms,
    )
  })
  try {
    return await Promise.race([promise, late])
  } finally {
    clearTimeout(timer)
  }
}

/** The arguments of the next `event` of `emitter` (whose 'error' rejects), failing with `what` after `ms`. */
export function nextEvent(emitter: EventEmitter, event: string, what: string, ms = WAIT_MS): Promise<unknown[]> {
  let cleanup = (): void => {}
  const caught = new Promise<unknown[]>((resolve, reject) => {
    const onEvent = (...args: unknown[]) => resolve(args)
    const onError = (err: unknown) => reject(err)
    emitter.once(event, onEvent)
    if (event !== 'error') emitter.once('error', onError)
    cleanup = () => {
      emitter.off(event, onEvent)
      emitter.off('error', onError)
    }
  })
  return within(caught, what, ms).finally(cleanup)
}

/** A promise with its resolve function: a gate the test opens (`open()`) when it decides. */
export function gate(): { readonly opened: Promise<void>; open(): void } {
  let open!: () => void
  const opened = new Promise<void>((resolve) => (open = resolve))
  return { opened, open }
}

/** Waits for `ms` of real time: only for tests whose subject is time itself (say why beside each use). */
export function elapse(ms: number): Promise<void> {
  return sleep(ms)
}
