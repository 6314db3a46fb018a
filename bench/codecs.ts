/**
 * Row 1: which zstd decoder to use for NAR bodies. Decodes one .nar.zst file, streaming, with
 * zstd-napi's DecompressStream (the library src/codecs/zstd-decoder.ts drives) and with fzstd's
 * streaming Decompress, discarding the output. Standalone: `npx tsx bench/codecs.ts FILE.nar.zst`.
 */
import { createReadStream } from 'node:fs'
import { Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { pathToFileURL } from 'node:url'
import { Decompress as FzstdDecompress } from 'fzstd'
import { DecompressStream } from 'zstd-napi'

const READ_CHUNK = 256 * 1024 // what src/upstream/file-upstream.ts reads with

export interface DecodeResult {
  readonly ms: number
  readonly bytes: number
}

export async function decodeWithZstdNapi(file: string): Promise<DecodeResult> {
  let bytes = 0
  const start = performance.now()
  await pipeline(
    createReadStream(file, { highWaterMark: READ_CHUNK }),
    new DecompressStream(),
    new Writable({
      write(chunk: Buffer, _encoding, callback) {
        bytes += chunk.length
        callback()
      },
    }),
  )
  return { ms: performance.now() - start, bytes }
}

export async function decodeWithFzstd(file: string): Promise<DecodeResult> {
  let bytes = 0
  const start = performance.now()
  const decoder = new FzstdDecompress((chunk) => {
    bytes += chunk.length
  })
  for await (const chunk of createReadStream(file, { highWaterMark: READ_CHUNK })) decoder.push(chunk as Buffer)
  decoder.push(new Uint8Array(0), true)
  return { ms: performance.now() - start, bytes }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const file = process.argv[2]
  if (file === undefined) {
    process.stderr.write('usage: tsx bench/codecs.ts FILE.nar.zst\n')
    process.exit(2)
  }
  for (const [name, fn] of [
    ['zstd-napi DecompressStream', decodeWithZstdNapi],
    ['fzstd Decompress', decodeWithFzstd],
  ] as const) {
    const r = await fn(file)
    process.stdout.write(`${name.padEnd(28)} ${r.ms.toFixed(0).padStart(6)} ms  ${(r.bytes / 1e6).toFixed(1)} MB out\n`)
  }
}
