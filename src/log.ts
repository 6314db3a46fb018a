/**
 * Structured logs through pino: one JSON object per line on stderr (human-readable when stderr is a
 * terminal), filtered by level. The rest of unnar sees only the small Logger interface.
 */
import pino from 'pino'
import pretty from 'pino-pretty'

export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent'
export type LogFields = Record<string, unknown>

export interface Logger {
  debug(msg: string, fields?: LogFields): void
  info(msg: string, fields?: LogFields): void
  warn(msg: string, fields?: LogFields): void
  error(msg: string, fields?: LogFields): void
  /** Whether lines of `level` are written: callers on hot paths skip building their fields. */
  enabled(level: 'debug' | 'info' | 'warn' | 'error'): boolean
  /** A logger that adds `fields` to every line (a request id, say). */
  child(fields: LogFields): Logger
}

export const LOG_LEVELS: LogLevel[] = ['debug', 'info', 'warn', 'error', 'silent']

/** Field names whose values are credentials, wherever they appear: never written out. */
const REDACT = [
  'authorization',
  'password',
  'token',
  '*.authorization',
  '*.password',
  '*.token',
  'headers.authorization',
]

/**
 * `write` receives whole lines (tests capture them); without it, lines go to stderr synchronously,
 * so the last lines before an exit are not lost.
 */
export function createLogger(level: LogLevel, write?: (line: string) => void): Logger {
  const destination =
    write !== undefined
      ? { write }
      : process.stderr.isTTY
        ? pretty({ sync: true, destination: 2 })
        : pino.destination({ dest: 2, sync: true })
  const root = pino(
    {
      level,
      base: null,
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: REDACT, censor: '<redacted>' },
    },
    destination,
  )
  return wrap(root)
}

function wrap(p: pino.Logger): Logger {
  const emit = (at: 'debug' | 'info' | 'warn' | 'error') => (msg: string, fields?: LogFields) => {
    if (!p.isLevelEnabled(at)) return
    if (fields === undefined) p[at](msg)
    else p[at](describeErrors(fields), msg)
  }
  return {
    debug: emit('debug'),
    info: emit('info'),
    warn: emit('warn'),
    error: emit('error'),
    enabled: (level) => p.isLevelEnabled(level),
    child: (fields) => wrap(p.child(describeErrors(fields))),
  }
}

// Errors have no enumerable fields; log their name and message (never a stack for expected failures).
function describeErrors(fields: LogFields): LogFields {
  let out: LogFields | undefined
  for (const key in fields) {
    const value = fields[key]
    if (!(value instanceof Error)) continue
    out ??= { ...fields }
    out[key] = `${value.name}: ${value.message}`
  }
  return out ?? fields
}
