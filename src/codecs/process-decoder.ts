/** A decoder that runs the system's `xz`/`zstd` in a child process: faster, and off the event loop. */
import { spawn } from 'node:child_process'
import path from 'node:path'
import { Duplex } from 'node:stream'

/** What `xz`, `zstd` and `bzip2` all take to decode stdin to stdout. */
export const DECODE_ARGS: readonly string[] = ['--decompress', '--stdout', '--quiet']

/**
 * stdin ← compressed bytes, stdout → decoded bytes, with the pipes' own backpressure. A non-zero
 * exit (corrupt input) fails the stream; destroying the stream kills the process, and it reports
 * its close (or error) once the process is gone.
 */
export function createProcessDecoder(executable: string, args: readonly string[]): Duplex {
  // Its own process group: a Ctrl-C in unnar's terminal is for unnar, which then shuts down
  // gracefully, and must not kill the decoders of the downloads it lets finish.
  const child = spawn(executable, args, { stdio: ['pipe', 'pipe', 'pipe'], detached: true })
  let stderr = ''
  child.stderr.setEncoding('utf8')
  child.stderr.on('data', (chunk: string) => {
    if (stderr.length < 1000) stderr += chunk
  })
  const duplex = new Duplex({
    write(chunk: Buffer, _encoding, callback) {
      if (child.stdin.write(chunk)) callback()
      else child.stdin.once('drain', () => callback())
    },
    final(callback) {
      child.stdin.end()
      callback()
    },
    read() {
      child.stdout.resume()
    },
    destroy(err, callback) {
      // A paused stdout would otherwise keep its pipe open for good.
      child.stdout.destroy()
      child.stdin.destroy()
      if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return callback(err)
      child.once('exit', () => callback(err))
      child.kill('SIGKILL')
    },
  })
  child.stdout.on('data', (chunk: Buffer) => {
    if (!duplex.push(chunk)) child.stdout.pause()
  })
  child.stdin.on('error', () => {}) // EPIPE after the child died: reported through the exit code
  child.on('error', (err) => duplex.destroy(err))
  // The end of the output only counts once the exit status says the input was valid.
  child.on('close', (code, signal) => {
    if (duplex.destroyed) return
    if (code === 0) duplex.push(null)
    else
      duplex.destroy(
        new Error(
          `${path.basename(executable)} failed (${signal ?? `exit ${code}`}): ${stderr.trim().split('\n')[0] ?? ''}`,
        ),
      )
  })
  return duplex
}
