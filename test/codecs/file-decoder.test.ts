/** Decoder programs writing NARs straight into a file: output, limits, failures, and when they are chosen. */
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { createReadStream, readFileSync } from 'node:fs'
import { mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { PassThrough, Readable } from 'node:stream'
import { after, before, describe, it } from 'node:test'
import { compress as zstdCompress } from 'zstd-napi'
import { DecodedTooLargeError } from '../../src/codecs/decompress.js'
import {
  DecoderLauncher,
  DecoderOutputError,
  decoderProgramFor,
  DecoderStartError,
  spawnFileDecoder,
  THREADED_XZ_MIN_BYTES,
  type DecoderInput,
  type DecoderProgram,
} from '../../src/codecs/file-decoder.js'
import { findDecoderPrograms, NO_DECODER_PROGRAMS } from '../../src/codecs/decoder-programs.js'
import { cacheDir } from '../helpers/fixtures.js'
import { eventually } from '../helpers/wait.js'

const PROGRAMS = ['xz', 'zstd', 'bzip2'] as const
/** What this machine has, as the server finds them at start. */
const programs = findDecoderPrograms()

/** Every compressed fixture NAR of `cache`, with the uncompressed NAR of the same store path. */
async function pairs(cache: string): Promise<Array<{ compressed: string; nar: Buffer }>> {
  const out: Array<{ compressed: string; nar: Buffer }> = []
  for (const name of (await readdir(cacheDir(cache))).filter((n) => n.endsWith('.narinfo'))) {
    const url = /^URL: (.*)$/m.exec(await readFile(path.join(cacheDir(cache), name), 'utf8'))![1]!
    const plainUrl = /^URL: (.*)$/m.exec(await readFile(path.join(cacheDir('none'), name), 'utf8'))![1]!
    out.push({
      compressed: path.join(cacheDir(cache), url),
      nar: await readFile(path.join(cacheDir('none'), plainUrl)),
    })
  }
  return out
}

function programFor(compression: (typeof PROGRAMS)[number]): DecoderProgram {
  const program = decoderProgramFor(compression, undefined, 2 * 1024 * 1024, programs)
  assert.ok(program !== undefined, `${compression} is installed`)
  return program
}

const CLOCK_TICKS = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }))

/** CPU seconds used by the children this process has reaped (/proc/self/stat cutime + cstime). */
function childCpuSeconds(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[13]) + Number(fields[14])) / CLOCK_TICKS
}

/** The programs these tests run are not installed (`.ci/run` installs them): skip. */
const missing = [...PROGRAMS.filter((name) => programs[name] === undefined), ...(programs.shell ? [] : ['/bin/sh'])]
const skip = missing.length > 0 ? `not installed: ${missing.join(', ')}` : false

describe('spawnFileDecoder', { skip, timeout: 60_000 }, () => {
  let dir: string
  let n = 0
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'unnar-file-decoder-'))
  })
  after(() => rm(dir, { recursive: true, force: true }))

  /** Runs the decoder into a fresh file; returns how it ended and what the file holds. */
  async function run(
    program: DecoderProgram,
    input: DecoderInput,
    maxBytes: number,
    target = path.join(dir, `out-${++n}`),
    launcher?: DecoderLauncher,
  ) {
    await writeFile(target, '') // as the store makes its temp files
    const decoder = spawnFileDecoder(program, input, target, maxBytes, launcher)
    const outcome = await decoder.exited.then(
      () => undefined,
      (err: Error) => err,
    )
    return { outcome, written: await readFile(target) }
  }

  for (const compression of PROGRAMS) {
    it(`writes every ${compression} fixture NAR into the file, from a stream and from a local file`, async () => {
      const program = programFor(compression)
      for (const { compressed, nar } of await pairs(compression)) {
        const streamed = await run(
          program,
          { body: createReadStream(compressed, { highWaterMark: 16 * 1024 }) },
          nar.length,
        )
        assert.equal(streamed.outcome, undefined, compressed)
        assert.ok(streamed.written.equals(nar), `${compressed} from a stream`)
        const body = new PassThrough() // never fed: the program reads the file itself
        const local = await run(program, { body, file: compressed }, nar.length)
        assert.equal(local.outcome, undefined, compressed)
        assert.ok(local.written.equals(nar), `${compressed} from its file`)
        assert.equal(body.destroyed, true, 'the unread body is let go')
        // A cache directory may hold its NARs as symlinks (zstd refuses to open one by name).
        const link = path.join(dir, `link-${++n}`)
        await symlink(compressed, link)
        const linked = await run(program, { body: new PassThrough(), file: link }, nar.length)
        assert.equal(linked.outcome, undefined, `${compressed} through a symlink`)
        assert.ok(linked.written.equals(nar), `${compressed} through a symlink`)
      }
    })
  }

  // Issue 19's bound: decoding stops within 1 MiB of output past NarSize and 0.2 s of decoder CPU.
  it('has the kernel stop a bomb (2 GiB of zeros) at NarSize 1 MiB within 0.2 s of CPU, whatever the program, piped or from a file', async () => {
    const narSize = 1024 * 1024 // a multiple of 512: the file size limit is exact
    const zeros = Buffer.alloc(64 * 1024 * 1024)
    const copies = (stream: Uint8Array) => Buffer.concat(Array.from({ length: 32 }, () => stream))
    const bombs = {
      xz: copies(execFileSync('xz', ['-c'], { input: zeros })),
      zstd: copies(zstdCompress(zeros)),
      bzip2: copies(execFileSync('bzip2', ['-c'], { input: zeros })),
    }
    for (const compression of PROGRAMS) {
      const file = path.join(dir, `bomb.${compression}`)
      await writeFile(file, bombs[compression])
      for (const input of [{ body: Readable.from([bombs[compression]]) }, { body: new PassThrough(), file }]) {
        const what = `${compression} ${input.file === undefined ? 'piped' : 'from a file'}`
        // `exited` settles once the program has been reaped: its CPU time is then counted.
        const before = childCpuSeconds()
        const { outcome, written } = await run(programFor(compression), input, narSize)
        const cpu = childCpuSeconds() - before
        assert.ok(outcome instanceof DecodedTooLargeError, `${what}: ${String(outcome)}`)
        assert.ok(written.length <= narSize, `${what}: ${written.length} bytes written`)
        assert.ok(cpu <= 0.2, `${what}: ${cpu} s of CPU`)
      }
    }
  })

  it('has the kernel stop a bomb in many xz blocks at NarSize 32 MiB when xz decodes on threads', {
    skip: programs.xzThreads === true ? false : 'this xz decodes on one thread',
  }, async () => {
    const narSize = THREADED_XZ_MIN_BYTES
    const program = decoderProgramFor('xz', undefined, narSize, programs)!
    assert.ok(program.args.includes('--threads=0'), 'threaded from THREADED_XZ_MIN_BYTES on')
    assert.ok(!decoderProgramFor('xz', undefined, narSize - 1, programs)!.args.includes('--threads=0'))
    // 2 GiB of zeros in 8 MiB blocks, which threads decode ahead of the one being written.
    const stream = execFileSync('xz', ['-c', '-T2', '--block-size=8MiB'], { input: Buffer.alloc(64 * 1024 * 1024) })
    const bomb = Buffer.concat(Array.from({ length: 32 }, () => stream))
    const file = path.join(dir, 'bomb-blocks.xz')
    await writeFile(file, bomb)
    const before = childCpuSeconds()
    const { outcome, written } = await run(program, { body: new PassThrough(), file }, narSize)
    const cpu = childCpuSeconds() - before
    assert.ok(outcome instanceof DecodedTooLargeError, String(outcome))
    assert.equal(written.length, narSize)
    // What the threads decoded ahead is bounded by --memlimit-mt, far from the bomb's 2 GiB.
    assert.ok(cpu <= 1, `${cpu} s of CPU`)
  })

  it('fails with what the program said when the data is corrupt', async () => {
    const garbage = Buffer.from('this is not compressed data at all, not even a little bit'.repeat(20))
    for (const compression of PROGRAMS) {
      const { outcome } = await run(programFor(compression), { body: Readable.from([garbage]) }, 1_000_000)
      assert.ok(
        outcome instanceof Error && !(outcome instanceof DecoderOutputError),
        `${compression}: ${String(outcome)}`,
      )
      assert.match(outcome.message, new RegExp(`^${compression} failed \\(exit \\d+\\): .+`))
    }
  })

  it('fails with the body’s own error when the body breaks, and stops the program', async () => {
    const { compressed } = (await pairs('xz'))[0]!
    const whole = await readFile(compressed)
    const body = new PassThrough()
    body.write(whole.subarray(0, 100))
    const broken = new Error('the upstream reset the connection')
    setTimeout(() => body.destroy(broken), 50) // mid-way or before the program reads: the same outcome either way
    const { outcome } = await run(programFor('xz'), { body }, 10_000_000)
    assert.equal(outcome, broken)
  })

  it('fails, and stops the program, when the body closes before its end without an error', async () => {
    const { compressed } = (await pairs('xz'))[0]!
    const body = new PassThrough()
    body.write((await readFile(compressed)).subarray(0, 100))
    setTimeout(() => body.destroy(), 50) // a reset connection some body types report this way
    const { outcome } = await run(programFor('xz'), { body }, 10_000_000)
    assert.ok(outcome instanceof Error)
    assert.equal((outcome as NodeJS.ErrnoException).code, 'ERR_STREAM_PREMATURE_CLOSE')
  })

  it('fails with the body’s error when the body broke before the program started', async () => {
    const body = new PassThrough()
    const broken = new Error('the upstream reset the connection')
    body.on('error', () => {})
    body.destroy(broken)
    await new Promise((resolve) => setImmediate(resolve))
    const { outcome } = await run(programFor('zstd'), { body }, 10_000_000)
    assert.equal(outcome, broken)
  })

  it('says the NAR file cannot be read (the cache’s trouble, not this machine’s), without naming its path', async () => {
    const missing = path.join(dir, 'no-such.nar.xz')
    const { outcome } = await run(programFor('xz'), { body: new PassThrough(), file: missing }, 1000)
    assert.ok(outcome instanceof Error && !(outcome instanceof DecoderStartError), String(outcome))
    assert.equal(outcome.message, 'the NAR file cannot be read')
  })

  it('says the program could not run (not that the NAR is corrupt) when it cannot be executed', async () => {
    const missingInterpreter = path.join(dir, 'xz-without-interpreter')
    await writeFile(missingInterpreter, '#!/nonexistent/interpreter\n', { mode: 0o755 })
    const { outcome } = await run(
      { executable: missingInterpreter, args: ['-dc'] },
      { body: Readable.from([Buffer.from('x')]) },
      1000,
    )
    assert.ok(outcome instanceof DecoderStartError, String(outcome))
    assert.match(outcome.message, /^cannot start xz-without-interpreter \(exit 127\)/)
  })

  it('says the program could not run when the file size limit cannot be set (a lower hard limit)', async () => {
    // The hard limit is the process's own and cannot be raised again: set it in a child process.
    const script = `
      import { Readable } from 'node:stream'
      import { spawnFileDecoder } from ${JSON.stringify(new URL('../../src/codecs/file-decoder.ts', import.meta.url).href)}
      const decoder = spawnFileDecoder({ executable: process.argv[2], args: ['-dc'] }, { body: Readable.from([Buffer.from('x')]) }, process.argv[1], 10_000_000)
      const err = await decoder.exited.then(() => undefined, (e) => e)
      console.log(JSON.stringify({ name: err?.name, message: err?.message }))
    `
    const out = execFileSync(
      '/bin/sh',
      [
        '-c',
        'ulimit -f 1000 && exec "$@"',
        'sh',
        process.execPath,
        '--import',
        'tsx',
        '--input-type=module',
        '-e',
        script,
        path.join(dir, 'limited'),
        programs.xz!,
      ],
      { encoding: 'utf8', timeout: 30_000 },
    )
    const err = JSON.parse(out.trim().split('\n').at(-1)!) as { name: string; message: string }
    assert.equal(err.name, 'DecoderStartError')
    assert.match(err.message, /^cannot start xz \(exit 125\): .*ulimit/)
  })

  it('says the program could not run, and the process goes on, when it is out of file descriptors', async () => {
    // A spawn without descriptors has no pipes and reports its error a tick later: in a child
    // process with a low limit, filled up on purpose, where a crash is an exit status.
    const script = `
      import { openSync } from 'node:fs'
      import { Readable } from 'node:stream'
      import { spawnFileDecoder } from ${JSON.stringify(new URL('../../src/codecs/file-decoder.ts', import.meta.url).href)}
      const body = Readable.from([Buffer.from('x')])
      const held = []
      try { for (;;) held.push(openSync('/dev/null', 'r')) } catch {}
      let err
      try {
        err = await spawnFileDecoder({ executable: process.argv[2], args: ['-dc'] }, { body }, process.argv[1], 1000).exited.then(() => undefined, (e) => e)
      } catch (e) { err = e }
      console.log(JSON.stringify({ name: err?.name, message: err?.message, bodyDestroyed: body.destroyed }))
    `
    const out = execFileSync(
      '/bin/sh',
      [
        '-c',
        'ulimit -n 256 && exec "$@"',
        'sh',
        process.execPath,
        '--import',
        'tsx',
        '--input-type=module',
        '-e',
        script,
        path.join(dir, 'no-fds'),
        programs.xz!,
      ],
      { encoding: 'utf8', timeout: 30_000 },
    )
    const result = JSON.parse(out.trim().split('\n').at(-1)!) as {
      name: string
      message: string
      bodyDestroyed: boolean
    }
    assert.equal(result.name, 'DecoderStartError', result.message)
    assert.match(result.message, /^cannot run xz: E[MN]FILE$/)
    assert.equal(result.bodyDestroyed, true, 'the body is let go')
  })

  it('stops the program and its input on kill()', async () => {
    const body = new PassThrough()
    const decoder = spawnFileDecoder(programFor('zstd'), { body }, path.join(dir, 'killed'), 1_000_000)
    decoder.kill()
    await assert.rejects(decoder.exited, /zstd failed \(SIGKILL\)/)
    assert.equal(body.destroyed, true)
  })

  it('counts a program stopped by finish() as a success', async () => {
    // Writes its whole output, then lingers (as a decoder freeing its memory does).
    const lingering: DecoderProgram = { executable: '/bin/sh', args: ['-c', 'printf nar; exec sleep 30'] }
    const target = path.join(dir, 'finished')
    await writeFile(target, '')
    const decoder = spawnFileDecoder(lingering, { body: Readable.from([]) }, target, 1000)
    await eventually(async () => (await stat(target)).size >= 3, 'the program’s output')
    decoder.finish()
    await decoder.exited
    assert.equal(await readFile(target, 'utf8'), 'nar')
  })

  it('lets a body it reads from a pipe end before finish() stops the program (its connection may be kept)', async () => {
    // Its input goes on to a side file, which shows it still reads after finish().
    const side = path.join(dir, 'finished-piped-input')
    const reading: DecoderProgram = { executable: '/bin/sh', args: ['-c', `printf nar; exec cat >${side}`] }
    const target = path.join(dir, 'finished-piped')
    await writeFile(target, '')
    const body = new PassThrough()
    const decoder = spawnFileDecoder(reading, { body }, target, 1000)
    await eventually(async () => (await stat(target)).size >= 3, 'the program’s output')
    decoder.finish()
    let settled = false
    void decoder.exited.finally(() => (settled = true))
    body.write('more')
    await eventually(
      async () => (await readFile(side, 'utf8').catch(() => '')) === 'more',
      'the program reading input written after finish()',
    )
    assert.equal(settled, false, 'still reading its input')
    assert.equal(body.destroyed, false)
    body.end('trailer')
    await decoder.exited
  })

  it('tells a full disk from a corrupt NAR', async (t) => {
    const mount = path.join(dir, 'full')
    await mkdir(mount)
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', mount], { stdio: 'ignore' })
    } catch {
      return t.skip('mounting a small tmpfs needs root')
    }
    try {
      const { compressed, nar } = (await pairs('xz')).sort((a, b) => b.nar.length - a.nar.length)[0]!
      assert.ok(nar.length > 1024 * 1024, 'the biggest fixture NAR does not fit in 64 KiB')
      const { outcome } = await run(
        programFor('xz'),
        { body: createReadStream(compressed) },
        nar.length,
        path.join(mount, 'nar'),
      )
      assert.ok(outcome instanceof DecoderOutputError, String(outcome))
      assert.match(outcome.message, /^xz could not write the NAR: .*No space left on device/)
    } finally {
      execFileSync('umount', ['-l', mount])
    }
  })
})

describe('DecoderLauncher', { skip, timeout: 30_000 }, () => {
  let dir: string
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'unnar-launcher-'))
  })
  after(() => rm(dir, { recursive: true, force: true }))

  /** Whether `pid` is gone (reaped: a zombie still answers signal 0), waiting for it up to the usual deadline. */
  const gone = async (pid: number) => {
    const exists = () => {
      try {
        process.kill(pid, 0)
        return true
      } catch {
        return false
      }
    }
    return eventually(() => !exists(), `process ${pid} gone`).then(() => true)
  }

  it('hands out the shell it started ahead, which becomes the decoder, and starts the next one later', async () => {
    const launcher = new DecoderLauncher()
    try {
      assert.equal(launcher.waitingPid, undefined, 'nothing runs before warm()')
      launcher.warm()
      const pid = launcher.waitingPid
      assert.ok(pid !== undefined)
      const { compressed, nar } = (await pairs('zstd'))[0]!
      const body = new PassThrough()
      const target = path.join(dir, 'first')
      await writeFile(target, '')
      const decoder = spawnFileDecoder(programFor('zstd'), { body }, target, nar.length, launcher)
      assert.equal(launcher.waitingPid, undefined, 'taken')
      // The waiting shell is now the program itself (it exec'd), reading the body.
      await eventually(
        async () => (await readFile(`/proc/${pid}/comm`, 'utf8')).trim() === 'zstd',
        'the waiting shell exec’d zstd',
      )
      body.end(await readFile(compressed))
      await decoder.exited
      assert.ok((await readFile(target)).equals(nar))
      // Meanwhile a second decoder does not wait for the next shell: it starts its own.
      const second = path.join(dir, 'second')
      await writeFile(second, '')
      await spawnFileDecoder(
        programFor('zstd'),
        { body: new PassThrough(), file: compressed },
        second,
        nar.length,
        launcher,
      ).exited
      assert.ok((await readFile(second)).equals(nar))
      await eventually(() => launcher.waitingPid !== undefined, 'the next shell, started a moment later')
      assert.notEqual(launcher.waitingPid, pid)
    } finally {
      launcher.close()
    }
  })

  it('starts a shell on demand when the waiting one died, and stops the waiting one on close()', async () => {
    const launcher = new DecoderLauncher()
    launcher.warm()
    const dead = launcher.waitingPid!
    process.kill(dead, 'SIGKILL')
    // Reaped means node has seen its exit: libuv reaps a child and reports its exit in one callback.
    assert.ok(await gone(dead))
    const { compressed, nar } = (await pairs('xz'))[0]!
    const target = path.join(dir, 'after-death')
    await writeFile(target, '')
    await spawnFileDecoder(
      programFor('xz'),
      { body: new PassThrough(), file: compressed },
      target,
      nar.length,
      launcher,
    ).exited
    assert.ok((await readFile(target)).equals(nar))
    launcher.close()
    const fresh = new DecoderLauncher()
    fresh.warm()
    const waiting = fresh.waitingPid!
    fresh.close()
    assert.equal(fresh.waitingPid, undefined)
    assert.ok(await gone(waiting), 'the waiting shell is stopped')
  })
})

describe('decoderProgramFor', { skip, timeout: 10_000 }, () => {
  it('picks xz and bzip2 for every size, zstd from 1 MiB, and nothing for other codecs or encoded bodies', async () => {
    assert.match(decoderProgramFor('xz', undefined, 100, programs)?.executable ?? '', /\/xz$/)
    assert.match(decoderProgramFor('bzip2', 'identity', 100, programs)?.executable ?? '', /\/bzip2$/)
    assert.equal(
      decoderProgramFor('zstd', undefined, 1024 * 1024 - 1, programs),
      undefined,
      'a small zstd NAR decodes in-process',
    )
    assert.match(decoderProgramFor('zstd', undefined, 1024 * 1024, programs)?.executable ?? '', /\/zstd$/)
    for (const compression of ['none', 'br', 'gzip', 'lz4'])
      assert.equal(decoderProgramFor(compression, undefined, 1 << 30, programs), undefined, compression)
    assert.equal(decoderProgramFor('xz', 'gzip', 100, programs), undefined, 'a body with its own Content-Encoding')
    assert.equal(decoderProgramFor('xz', undefined, 100, NO_DECODER_PROGRAMS), undefined, 'no program')
    assert.equal(decoderProgramFor('xz', undefined, 100, { ...programs, shell: false }), undefined, 'no shell')
    assert.ok((await stat(decoderProgramFor('xz', undefined, 100, programs)!.executable)).isFile())
  })
})
