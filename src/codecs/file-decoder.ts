/**
 * A decoder program (`xz`, `zstd`, `bzip2`) that writes the NAR straight into its temp file: the
 * decoded bytes never pass through the event loop, which then has no pipe to read and no writes
 * to issue. bench/ rows 2a, 3a: the program alone is the whole cost of a cold NAR.
 */
import { spawn } from 'node:child_process'
import { accessSync, closeSync, constants, openSync } from 'node:fs'
import path from 'node:path'
import { finished, type Readable } from 'node:stream'
import { DecodedTooLargeError, SMALL_ZSTD_BYTES } from './decompress.js'
import { DECODE_ARGS, findExecutable } from './process-decoder.js'

export interface DecoderProgram {
  readonly executable: string
  readonly args: readonly string[]
}

/** The program failed to write its output (a full disk, a quota, a read-only filesystem). */
export class DecoderOutputError extends Error {
  override readonly name = 'DecoderOutputError'
}

/** The program never ran (the shell refused the size limit, or could not run it): this machine's fault, not the NAR's. */
export class DecoderStartError extends Error {
  override readonly name = 'DecoderStartError'
}

/** The shell that sets the size limit (node cannot set a child's rlimits itself). */
const SHELL = '/bin/sh'
/** Exit statuses of the shell for "the limit could not be set" (ours) and "the program could not be run" (POSIX). */
const START_FAILURES = new Set([125, 126, 127])

export interface FileDecoder {
  /** Resolves once the program has exited successfully; rejects with why it did not. */
  readonly exited: Promise<void>
  /** Stops the program (and stops reading its input); safe to call at any time. */
  kill(): void
}

/**
 * The program that can decode a NAR body into a file, if there is one on PATH: for xz and bzip2
 * always (they run as programs anyway, see decompress.ts), for zstd from SMALL_ZSTD_BYTES on. A
 * body with its own Content-Encoding goes through node's decoders instead.
 */
export function decoderProgramFor(compression: string, contentEncoding: string | undefined, narSize: number): DecoderProgram | undefined {
  if (contentEncoding !== undefined && contentEncoding !== 'identity') return undefined
  const name = compression === 'xz' || compression === 'bzip2' ? compression : compression === 'zstd' && narSize >= SMALL_ZSTD_BYTES ? 'zstd' : undefined
  const executable = name === undefined ? undefined : findExecutable(name)
  return executable === undefined || !canRun(SHELL) ? undefined : { executable, args: DECODE_ARGS }
}

function canRun(file: string): boolean {
  try {
    accessSync(file, constants.X_OK)
    return true
  } catch {
    return false
  }
}

/** Writes that program's error messages use: a disk problem, not a corrupt NAR. */
const WRITE_FAILURE = /write error|no space left|disk quota|read-only file system/i

/** What a decoder program reads: `body`, or the local file it streams (read by the program itself). */
export interface DecoderInput {
  readonly body: Readable
  readonly file?: string
}

/**
 * Runs `program` on `input` with the open file `fd` (empty, at offset 0) as its stdout. The kernel
 * stops it past `maxBytes`, rounded up to 512 bytes (RLIMIT_FSIZE, set by the shell's `ulimit -f`,
 * which counts 512-byte blocks): a decompression bomb never fills the disk, and the caller checks
 * the exact size. Throws when `input.file` cannot be opened.
 */
export function spawnFileDecoder(program: DecoderProgram, input: DecoderInput, fd: number, maxBytes: number): FileDecoder {
  const name = path.basename(program.executable)
  const blocks = String(Math.ceil(maxBytes / 512))
  const body = input.body
  // A local file is the program's stdin, opened here (a symlinked NAR included: zstd refuses to
  // follow a symlink given by name): no pipe for the event loop to feed (bench/ rows 2a, 3a).
  let inputFd: number | undefined
  if (input.file !== undefined) {
    body.destroy()
    try {
      inputFd = openSync(input.file, 'r')
    } catch (err) {
      // Out of descriptors is this process's trouble; a missing or unreadable file is the cache's.
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'EMFILE' || code === 'ENFILE') throw new DecoderStartError(`cannot open the NAR for ${name}: ${code}`, { cause: err })
      throw err
    }
  }
  // Its own process group: a Ctrl-C in unnar's terminal is for unnar, whose graceful shutdown
  // stops the downloads it does not let finish.
  const script = 'ulimit -f "$1" || exit 125; shift; exec "$@"'
  let child
  try {
    child = spawn(SHELL, ['-c', script, 'sh', blocks, program.executable, ...program.args], {
      stdio: [inputFd ?? 'pipe', fd, 'pipe'],
      detached: true,
    })
  } finally {
    // The child has its own copy of the descriptor.
    if (inputFd !== undefined) closeSync(inputFd)
  }
  let stderr = ''
  let inputError: Error | undefined
  // Set once the body is let go of on purpose, whose "premature close" is then no input error.
  let stopped = false
  const stopInput = () => {
    stopped = true
    body.destroy()
  }
  const kill = () => {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) child.kill('SIGKILL')
    stopInput()
  }
  // Listening before anything else: a spawn that failed (EMFILE, say) reports it on the next tick,
  // and has no pipes at all.
  const exited = new Promise<void>((resolve, reject) => {
    child.on('error', (err) => {
      kill()
      reject(new DecoderStartError(`cannot run ${name}: ${(err as NodeJS.ErrnoException).code ?? err.message}`, { cause: err }))
    })
    child.on('close', (code, signal) => {
      const said = stderr.trim().split('\n').at(-1) ?? ''
      // A broken body is the failure, not what the program made of its truncated input.
      if (inputError !== undefined) reject(inputError)
      else if (signal === 'SIGXFSZ') reject(new DecodedTooLargeError(`the decoded NAR is larger than ${maxBytes} bytes`))
      else if (code === 0) resolve()
      else if (code !== null && START_FAILURES.has(code)) reject(new DecoderStartError(`cannot run ${name} with a ${maxBytes}-byte file size limit (exit ${code}): ${said}`))
      else if (WRITE_FAILURE.test(stderr)) reject(new DecoderOutputError(`${name} could not write the NAR: ${said}`))
      else reject(new Error(`${name} failed (${signal ?? `exit ${code}`}): ${said}`))
      stopInput()
    })
  })
  child.stderr?.setEncoding('utf8')
  child.stderr?.on('data', (chunk: string) => {
    if (stderr.length < 1000) stderr += chunk
  })
  // Undefined (not null, as typed) after a spawn that failed for want of descriptors.
  if (child.stdin) {
    // An error or a close before the end (a reset upstream) must stop the program, which would
    // otherwise wait for the rest of its input forever.
    finished(body, (err) => {
      if (err === undefined || err === null || stopped) return
      inputError ??= err
      kill()
    })
    child.stdin.on('error', () => {}) // EPIPE once the program stopped: its exit status says why
    body.pipe(child.stdin)
  }
  exited.catch(() => {}) // the caller may stop listening once it has failed for another reason
  return { exited, kill }
}
