/**
 * The decoder programs this machine has (`xz`, `zstd`, `bzip2`, and the shell that starts one
 * writing a file), looked up on PATH once at start and handed to whatever decodes NARs.
 */
import { accessSync, constants } from 'node:fs'
import path from 'node:path'

/** The shell that sets a file decoder's size limit (node cannot set a child's rlimits itself). */
export const SHELL = '/bin/sh'

export interface DecoderPrograms {
  /** Absolute paths of the programs found; a NAR whose program is missing decodes in-process. */
  readonly xz?: string | undefined
  readonly zstd?: string | undefined
  readonly bzip2?: string | undefined
  /** SHELL can run: a program may then write the NAR file itself (file-decoder.ts). */
  readonly shell: boolean
}

/** No programs: every NAR decodes in-process. */
export const NO_DECODER_PROGRAMS: DecoderPrograms = { shell: false }

export function findDecoderPrograms(searchPath = process.env.PATH ?? ''): DecoderPrograms {
  return {
    xz: findExecutable('xz', searchPath),
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
