/**
 * The decoder programs this machine has (`xz`, `zstd`, `bzip2`, and the shell that starts one
 * writing a file), looked up on PATH once at start and handed to whatever decodes NARs.
 */
import { spawnSync } from 'node:child_process'
import { accessSync, constants } from 'node:fs'
import path from 'node:path'

/** The shell that sets a file decoder's size limit (node cannot set a child's rlimits itself). */
export const SHELL = '/bin/sh'

export interface DecoderPrograms {
  /** Absolute paths of the programs found; a NAR whose program is missing decodes in-process. */
  readonly xz?: string | undefined
  readonly zstd?: string | undefined
  readonly bzip2?: string | undefined
  /** `xz` decodes multi-block files on several threads (XZ Utils 5.4 on: `--threads`, `--memlimit-mt`). */
  readonly xzThreads?: boolean
  /** SHELL can run: a program may then write the NAR file itself (file-decoder.ts). */
  readonly shell: boolean
}

/** No programs: every NAR decodes in-process. */
export const NO_DECODER_PROGRAMS: DecoderPrograms = { shell: false }

export function findDecoderPrograms(searchPath = process.env.PATH ?? ''): DecoderPrograms {
  const xz = findExecutable('xz', searchPath)
  return {
    xz,
    xzThreads: xz !== undefined && decodesOnThreads(xz),
    zstd: findExecutable('zstd', searchPath),
    bzip2: findExecutable('bzip2', searchPath),
    shell: findExecutable(path.basename(SHELL), path.dirname(SHELL)) !== undefined,
  }
}

/** The absolute path of `command` in `searchPath` (PATH's syntax), or undefined. */
export function findExecutable(command: string, searchPath: string): string | undefined {
  for (const dir of searchPath.split(path.delimiter)) {
    if (dir === '') continue
    const candidate = path.join(dir, command)
    try {
      accessSync(candidate, constants.X_OK)
      return candidate
    } catch {
      // not here
    }
  }
  return undefined
}

/**
 * Whether this `xz` decodes on threads: XZ Utils 5.4 and later (older ones reject `--memlimit-mt`
 * and decode on one thread whatever `--threads` says). Asked once, at start.
 */
function decodesOnThreads(xz: string): boolean {
  const version = /XZ Utils\) (\d+)\.(\d+)/.exec(spawnSync(xz, ['--version'], { encoding: 'utf8' }).stdout ?? '')
  return version !== null && (Number(version[1]) > 5 || (Number(version[1]) === 5 && Number(version[2]) >= 4))
}
