/**
 * A decoder program (`xz`, `zstd`, `bzip2`) that writes the NAR straight into its temp file: the
 * decoded bytes never pass through the event loop, which then has no pipe to read and no writes
 * to issue. bench/ "cold last file" (xz, zstd): the program alone is the whole cost of a cold NAR.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import path from 'node:path'
import { finished, type Readable } from 'node:stream'
import { DecodedTooLargeError, SMALL_ZSTD_BYTES } from './decompress.js'
import { type DecoderPrograms, SHELL } from './decoder-programs.js'
import { DECODE_ARGS } from './process-decoder.js'

export interface DecoderProgram {
  readonly executable: string
  readonly args: readonly string[]
}

/** The program failed to write its output (a full disk, a quota, a read-only filesystem). */
export class DecoderOutputError extends Error {
  override readonly name = 'DecoderOutputError'
}

/** The program never ran (the shell could not set the size limit, open the output, or run it): this machine's fault, not the NAR's. */
export class DecoderStartError extends Error {
  override readonly name = 'DecoderStartError'
}

/**
 * What the shell does once told, a line each on its stdin: the size limit in 512-byte blocks, the
 * output file, the input file (empty: the rest of stdin), then the program and its arguments
 * (count first). It reads its instructions one byte at a time, so the program reads stdin from
 * exactly the first byte of the body. `command exec` keeps a failed redirection from ending the
 * shell before it can say why.
 */
const SCRIPT = [
  'IFS= read -r blocks && IFS= read -r out && IFS= read -r in && IFS= read -r n || exit 0',
  'set --',
  'while [ "$n" -gt 0 ]; do IFS= read -r arg || exit 0; set -- "$@" "$arg"; n=$((n - 1)); done',
  'ulimit -f "$blocks" || exit 125',
  'command exec 1<>"$out" || exit 125',
  'if [ -n "$in" ]; then command exec <"$in" || exit 124; fi',
  'exec "$@"',
].join('\n')
/** Exit statuses of the shell for "the input file cannot be read", and "the program cannot run here" (ours, then POSIX's). */
const INPUT_FAILURE = 124
const START_FAILURES = new Set([125, 126, 127])

function startShell(): ChildProcess {
  // Its own process group: a Ctrl-C in unnar's terminal is for unnar, whose graceful shutdown
  // stops the downloads it does not let finish.
  return spawn(SHELL, ['-c', SCRIPT], { stdio: ['pipe', 'ignore', 'pipe'], detached: true })
}

/** How long after one shell is used the next one is started (off a cold request's path). */
const NEXT_SHELL_DELAY_MS = 1000

/**
 * Keeps one shell started ahead of the next decoder: starting a child of a Node process this size
 * blocks the event loop for 5–10 ms (the fork copies its page tables), which a cold request would
 * wait for (bench/ "cold last file", zstd). The server owns one and closes it.
 */
export class DecoderLauncher {
  #ready: ChildProcess | undefined
  #timer: NodeJS.Timeout | undefined
  #closed = false

  /** Starts the first shell (the server does once it listens). */
  warm(): void {
    this.#start()
  }

  /** A waiting shell, or a new one when none is (the next is started a moment later). */
  take(): ChildProcess {
    const ready = this.#ready
    this.#ready = undefined
    if (!this.#closed && this.#timer === undefined)
      this.#timer = setTimeout(() => this.#start(), NEXT_SHELL_DELAY_MS).unref()
    if (ready === undefined || ready.pid === undefined || ready.exitCode !== null || ready.signalCode !== null)
      return startShell()
    // From here on it is a decoder like any other: its caller listens for its errors, and it keeps the process alive.
    ready.off('error', ignore)
    ready.stdin?.off('error', ignore)
    holdEventLoop(ready, true)
    return ready
  }

  /** The process id of the shell waiting to be taken, if one is. */
  get waitingPid(): number | undefined {
    return this.#ready?.pid
  }

  /** Stops the waiting shell; take() still works, starting shells on demand. */
  close(): void {
    this.#closed = true
    clearTimeout(this.#timer)
    this.#timer = undefined
    this.#ready?.kill('SIGKILL')
    this.#ready = undefined
  }

  #start(): void {
    this.#timer = undefined
    if (this.#closed || this.#ready !== undefined) return
    const shell = startShell()
    // Until it is taken: a failed start (EMFILE) is reported here, and take() then starts another;
    // a waiting shell does not keep the process alive.
    shell.on('error', ignore)
    shell.stdin?.on('error', ignore)
    holdEventLoop(shell, false)
    this.#ready = shell
  }
}

function ignore(): void {}

/** Whether `child` and its pipes keep the event loop alive (pipes are sockets, which can be unref'd). */
function holdEventLoop(child: ChildProcess, hold: boolean): void {
  for (const handle of [child, child.stdin, child.stderr] as Array<
    { ref?: () => void; unref?: () => void } | null | undefined
  >) {
    if (hold) handle?.ref?.()
    else handle?.unref?.()
  }
}

export interface FileDecoder {
  /** Resolves once the program has exited successfully; rejects with why it did not. */
  readonly exited: Promise<void>
  /** Stops the program (and stops reading its input); safe to call at any time. */
  kill(): void
  /**
   * The whole NAR is on disk: stops the program (once its input has ended, for a body it reads
   * from a pipe), whose exit then counts as a success unless it had already failed. All it would
   * still do is check its own trailer (the NarHash check covers that) and free its memory: ~10 ms
   * of CPU (zstd, 100 MB) beside the answers to the last file on two cores, which reached the
   * client ~5 ms sooner without it (bench/ "cold last file", zstd).
   */
  finish(): void
}

/**
 * What each program is told. Never sparse output: `xz` writing a regular file seeks over runs of
 * zeros instead of writing them, so the file size limit only struck at its end (a 312 KB xz bomb
 * of 2 GiB of zeros took 6.9 s of CPU, 0.02 s with `--no-sparse`). `zstd` only makes a sparse
 * `--stdout` when asked to (said here anyway); `bzip2` never does.
 */
const FILE_DECODE_ARGS: Readonly<Record<'xz' | 'zstd' | 'bzip2', readonly string[]>> = {
  xz: [...DECODE_ARGS, '--no-sparse'],
  zstd: [...DECODE_ARGS, '--no-sparse'],
  bzip2: DECODE_ARGS,
}

/**
 * NARs from this size on are decoded by `xz` on every core (programs.xzThreads). A file written by
 * a parallel compressor (Nix's `parallel-compression`, `xz -T`) is a series of blocks, 24 MiB of
 * NAR each at the default level, which `xz --threads=0` decodes side by side (one block file, as
 * `xz` without threads writes, decodes as before); below this size a NAR rarely has two blocks.
 * bench/ "cold last file of a multi-block xz NAR": 0.63× the time of single-threaded `xz -dc` on
 * two cores, 1.06× the time of `xz -T0 -dc` alone.
 */
export const THREADED_XZ_MIN_BYTES = 32 * 1024 * 1024
/**
 * What threaded `xz` may hold in memory (`--memlimit-mt`): its threads decode blocks ahead of the
 * one being written, so this also bounds what a decompression bomb in many blocks gets decoded past
 * NarSize before the size limit stops `xz` (one thread per block, blocks that do not fit decode
 * on one thread). Two threads on Nix's 24 MiB blocks take ~100 MiB.
 */
export const THREADED_XZ_MEMORY = '256MiB'

/**
 * The program of `programs` that can decode a NAR body into a file, if there is one: for xz and bzip2
 * always (they run as programs anyway, see decompress.ts), for zstd from SMALL_ZSTD_BYTES on. A
 * body with its own Content-Encoding goes through node's decoders instead.
 */
export function decoderProgramFor(
  compression: string,
  contentEncoding: string | undefined,
  narSize: number,
  programs: DecoderPrograms,
): DecoderProgram | undefined {
  if (contentEncoding !== undefined && contentEncoding !== 'identity') return undefined
  const name =
    compression === 'xz' || compression === 'bzip2'
      ? compression
      : compression === 'zstd' && narSize >= SMALL_ZSTD_BYTES
        ? 'zstd'
        : undefined
  const executable = name === undefined ? undefined : programs[name]
  if (name === undefined || executable === undefined || !programs.shell) return undefined
  const threads = name === 'xz' && programs.xzThreads === true && narSize >= THREADED_XZ_MIN_BYTES
  return {
    executable,
    args: threads
      ? [...FILE_DECODE_ARGS.xz, '--threads=0', `--memlimit-mt=${THREADED_XZ_MEMORY}`]
      : FILE_DECODE_ARGS[name],
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
 * Runs `program` on `input`, writing into the file at `output` (empty). The kernel stops it past
 * `maxBytes`, rounded up to 512 bytes (RLIMIT_FSIZE, set by the shell's `ulimit -f`, which counts
 * 512-byte blocks; a program that writes every byte, see FILE_DECODE_ARGS): a decompression bomb
 * neither fills the disk nor costs more CPU than decoding NarSize, and the caller checks the exact
 * size. A local input file is opened by the shell (no pipe for the event loop to feed, bench/
 * "cold last file"; a symlink is followed, which zstd refuses for a name it is given).
 */
export function spawnFileDecoder(
  program: DecoderProgram,
  input: DecoderInput,
  output: string,
  maxBytes: number,
  launcher?: DecoderLauncher,
): FileDecoder {
  const name = path.basename(program.executable)
  const body = input.body
  if (input.file !== undefined) body.destroy()
  const lines = [
    String(Math.ceil(maxBytes / 512)),
    output,
    input.file ?? '',
    String(1 + program.args.length),
    program.executable,
    ...program.args,
  ]
  // A line each: a newline inside one would shift the rest (no such path is ever made here).
  if (lines.some((line) => line.includes('\n')))
    throw new DecoderStartError(`cannot run ${name}: a path contains a newline`)
  const child = launcher?.take() ?? startShell()
  let stderr = ''
  let inputError: Error | undefined
  // Set once the body is let go of on purpose, whose "premature close" is then no input error.
  let stopped = false
  // Set once finish() stopped the program, whose SIGKILL is then its success.
  let completed = false
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
      reject(
        new DecoderStartError(`cannot run ${name}: ${(err as NodeJS.ErrnoException).code ?? err.message}`, {
          cause: err,
        }),
      )
    })
    child.on('close', (code, signal) => {
      const said = stderr.trim().split('\n').at(-1) ?? ''
      // A broken body is the failure, not what the program made of its truncated input.
      if (inputError !== undefined) reject(inputError)
      else if (signal === 'SIGXFSZ') reject(new DecodedTooLargeError(maxBytes))
      else if (code === 0 || (completed && signal === 'SIGKILL')) resolve()
      // Without the shell's message: it names a local path, and this error reaches the client.
      else if (code === INPUT_FAILURE) reject(new Error('the NAR file cannot be read'))
      else if (code !== null && START_FAILURES.has(code))
        reject(new DecoderStartError(`cannot start ${name} (exit ${code}): ${said}`))
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
    child.stdin.on('error', () => {}) // EPIPE once the program stopped: its exit status says why
    const instructions = lines.map((line) => `${line}\n`).join('')
    if (input.file !== undefined) {
      child.stdin.end(instructions)
    } else {
      child.stdin.write(instructions)
      // An error or a close before the end (a reset upstream) must stop the program, which would
      // otherwise wait for the rest of its input forever.
      finished(body, (err) => {
        if (err === undefined || err === null || stopped) return
        inputError ??= err
        kill()
      })
      body.pipe(child.stdin)
    }
  }
  exited.catch(() => {}) // the caller may stop listening once it has failed for another reason
  // A body still being read waits for its end: destroying it earlier would close an upstream
  // connection that could have been kept alive (only a trailer is left to arrive).
  const finish = () => {
    completed = true
    if (input.file !== undefined || body.readableEnded) kill()
    else body.once('end', kill)
  }
  return { exited, kill, finish }
}
