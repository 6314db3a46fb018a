/** Maps a narinfo `Compression` name to a streaming decoder (a Node Transform with backpressure). */
import { createRequire } from 'node:module'
import { type Duplex, PassThrough, type Readable, Transform, type TransformCallback } from 'node:stream'
import { finished } from 'node:stream/promises'
import { createBrotliDecompress, createGunzip } from 'node:zlib'
import lzma from 'lzma-native'
import type { DecoderPrograms } from './decoder-programs.js'
import { createProcessDecoder, DECODE_ARGS } from './process-decoder.js'
import { WorkerZstdDecoder } from './worker-decoder.js'
import { ZstdDecoder } from './zstd-decoder.js'

export class UnsupportedCompressionError extends Error {
  override readonly name = 'UnsupportedCompressionError'
  readonly compression: string
  /** `what` names where the name came from: the narinfo's Compression, or the body's Content-Encoding. */
  constructor(compression: string, what: 'NAR compression' | 'Content-Encoding' = 'NAR compression') {
    super(`unsupported ${what} "${compression}"`)
    this.compression = compression
  }
}

/** A decoder that can reuse the memory of chunks it produced (the zstd worker decoder). */
export interface Recycler {
  /** The consumer is done with `chunk` and keeps no view of it. */
  recycle(chunk: Uint8Array): void
}

/** The decoder's recycle(), when it has one. */
export function recyclerOf(decoder: Duplex): ((chunk: Uint8Array) => void) | undefined {
  const recycle = (decoder as Partial<Recycler>).recycle
  return typeof recycle === 'function' ? recycle.bind(decoder) : undefined
}

export interface DecoderOptions {
  /** Decode zstd off the event loop, in a worker thread (default true). */
  readonly external?: boolean
  /**
   * The most bytes the decoder may produce (a NAR's NarSize): past that it fails with
   * DecodedTooLargeError, whatever its consumer does, having decoded little more (what fills a
   * child's pipe, a byte for in-process zstd, 16 KiB for node:zlib, a byte for the zstd worker and
   * bzip2, nothing for lzma-native), so a small bomb costs neither memory nor CPU.
   */
  readonly maxOutputBytes?: number
  /** The `xz` and `bzip2` programs to decode with, found at start (default: none, decoded in-process). */
  readonly programs?: DecoderPrograms | undefined
}

/** The decoded data went past DecoderOptions.maxOutputBytes: a decompression bomb, or a wrong NarSize. */
export class DecodedTooLargeError extends Error {
  override readonly name = 'DecodedTooLargeError'
  constructor(max: number) {
    super(`the decoded NAR is larger than its NarSize ${max}`)
  }
}

/** zstd NARs smaller than this decode in-process: a worker's round trip or a program's start costs more. */
export const SMALL_ZSTD_BYTES = 1024 * 1024

/**
 * A fresh decoder for one NAR body.
 *
 * xz prefers the system's `xz` in a child process (DecoderOptions.programs): lzma-native's prebuilt liblzma is compiled without optimisation and decodes at less than
 * half the speed of `xz -dc` (bench/ "cold last file", xz, went from 2.62x to 1.04x of `xz -dc`), and the child decodes on the
 * second core while the event loop indexes and writes; lzma-native remains the fallback. zstd uses
 * zstd-napi, about as fast as `zstd -dc` (bench/ "zstd decode"), in a worker thread (worker-decoder.ts)
 * for big NARs: decoding then overlaps with the event loop's indexing and writing, and buffers move
 * between the threads without copies. Measured 2026-11 on two cores, six alternating runs: the
 * cold last file of a 100 MB NAR median 338 ms in-process → 274 ms in a worker; 200
 * concurrent cold requests 650 ms → 556 ms. A `zstd -dc` child piping into this process was no
 * faster (moving 100 MB through a pipe costs the event loop about what decoding saves); one that
 * writes the NAR file itself is, and downloads use that when they can (file-decoder.ts). fzstd is ~5x
 * slower. `@mongodb-js/zstd` 1.x is not used for upstream bodies: it has no streaming API, and its
 * whole-buffer decode cannot be bounded (in a review's run, a 120 KB zstd narinfo grew to 4 GB
 * before its length could be checked); decodeZstdBuffer() decodes `.ls` and narinfo bodies with a
 * bound instead.
 */
export function createDecoder(compression: string, options: DecoderOptions = {}): Duplex {
  const external = options.external ?? true
  const max = options.maxOutputBytes ?? Infinity
  switch (compression) {
    case 'none':
      return new PassThrough()
    case 'xz': {
      // The `xz` child for every size: its pipe has backpressure, lzma-native's output does not.
      const xz = options.programs?.xz
      return xz !== undefined ? limitOutput(createProcessDecoder(xz, DECODE_ARGS), max) : createXzDecoder(max)
    }
    case 'zstd':
      return external ? new WorkerZstdDecoder(max) : new ZstdDecoder(max)
    case 'bzip2': {
      // The system's `bzip2` in a child is faster, and decodes beside the event loop.
      const bzip2 = options.programs?.bzip2
      return bzip2 !== undefined ? limitOutput(createProcessDecoder(bzip2, DECODE_ARGS), max) : new Bzip2Decoder(max)
    }
    // node:zlib decodes 16 KiB at a time and stops as soon as it is destroyed.
    case 'br':
      return limitOutput(createBrotliDecompress(), max)
    case 'gzip':
      return limitOutput(createGunzip(), max)
    default:
      throw new UnsupportedCompressionError(compression)
  }
}

/**
 * The decoders between an upstream's NAR `body` and the NAR: the body's HTTP Content-Encoding, if
 * any, then the narinfo's Compression, bounded by NarSize. When either is unsupported it throws,
 * having destroyed `body` (nothing owns it yet: its connection would stay open) and any decoder it
 * already started (a worker job or a child process). `programs`: as DecoderOptions.programs.
 */
export function createNarDecoders(
  body: Readable,
  contentEncoding: string | undefined,
  compression: string,
  narSize: number,
  programs?: DecoderPrograms,
): Duplex[] {
  const options: DecoderOptions = { external: narSize >= SMALL_ZSTD_BYTES, maxOutputBytes: narSize, programs }
  const decoders: Duplex[] = []
  try {
    if (contentEncoding !== undefined && contentEncoding !== 'identity') {
      try {
        decoders.push(createDecoder(contentEncoding === 'x-gzip' ? 'gzip' : contentEncoding, { programs }))
      } catch (err) {
        throw err instanceof UnsupportedCompressionError
          ? new UnsupportedCompressionError(contentEncoding, 'Content-Encoding')
          : err
      }
    }
    decoders.push(createDecoder(compression, options))
    return decoders
  } catch (err) {
    for (const stream of [body, ...decoders]) stream.destroy()
    throw err
  }
}

/**
 * Destroys `decoder` once it has produced more than `max` bytes (lzma-native and node:zlib push
 * from callbacks, where a throw would be uncaught; a child process is killed).
 */
function limitOutput<T extends Duplex>(decoder: T, max: number): T {
  if (max === Infinity) return decoder
  let produced = 0
  const push = decoder.push.bind(decoder)
  decoder.push = (chunk: unknown, encoding?: BufferEncoding): boolean => {
    if (chunk !== null && chunk !== undefined) {
      produced += (chunk as Uint8Array).length
      if (produced > max) {
        decoder.destroy(new DecodedTooLargeError(max))
        return false
      }
    }
    return push(chunk, encoding)
  }
  return decoder
}

/**
 * lzma-native decodes the whole chunk it is given (in the thread pool, into memory) before any of
 * its output can be counted: one 64 KiB chunk of a bomb is ~450 MB. So the chunks' LZMA2 headers
 * are read first (XzLayout), and a chunk that would take the output past `max` is refused
 * undecoded. Slicing the input instead (whatever it is, one byte of xz decodes to at most ~7,100)
 * would take ~128-byte slices near the end: a 3.3 MB NAR of random bytes went from 0.04 to 0.6 s.
 */
function createXzDecoder(max: number): Transform {
  // Also counted as it comes out, should liblzma ever read a chunk otherwise than XzLayout.
  const decoder = limitOutput(lzma.createDecompressor() as Transform, max)
  if (max === Infinity) return decoder
  const layout = new XzLayout()
  let announced = 0
  const write = decoder._write.bind(decoder)
  // Every byte passes here once (lzma-native's _writev() calls _write(); its _transform() sees its own pieces too).
  decoder._write = (chunk: Buffer, encoding: BufferEncoding, callback: (error?: Error | null) => void) => {
    try {
      announced += layout.read(chunk)
    } catch (err) {
      return callback(err as Error)
    }
    if (announced > max) return callback(new DecodedTooLargeError(max))
    write(chunk, encoding, callback)
  }
  return decoder
}

/** The size of an xz Check field, by Check ID. */
const XZ_CHECK_BYTES = [0, 4, 4, 4, 8, 8, 8, 16, 16, 16, 32, 32, 32, 64, 64, 64]
const XZ_MAGIC = [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]

type XzPart = 'stream header' | 'block or index' | 'chunk' | 'index' | 'stream padding'

/**
 * Follows an xz file as it streams by (xz file format 1.1.0; LZMA2 as liblzma's lzma2_decoder.c
 * reads it) to tell what its LZMA2 chunks will decode to before they are decoded: each chunk's
 * header says (up to 2 MiB), and liblzma holds the chunk to it. Nothing else decodes to anything:
 * an .xz block's last filter is always LZMA2 (liblzma refuses LZMA1's reserved ID there), and the
 * filters before it keep sizes. Only what locates the chunks is read; liblzma checks the rest.
 */
class XzLayout {
  #part: XzPart = 'stream header'
  /** The header being read, and its length once known. */
  #header: number[] = []
  #headerBytes = 12
  /** Bytes to pass over before the next header: a chunk's data, padding, a check, an index's end. */
  #skip = 0
  #checkBytes = 0
  /** The current block's LZMA2 bytes so far (its padding makes them a multiple of 4). */
  #blockData = 0
  /** The current index's bytes so far, its variable-length integers left (-1: its record count is next), and the count so far. */
  #indexBytes = 0
  #indexFields = -1
  #count = 0
  #countShift = 0

  /** Reads the next bytes of the file; returns what the chunk headers completed in them will decode to. */
  read(data: Uint8Array): number {
    let announced = 0
    for (let i = 0; i < data.length; ) {
      if (this.#skip > 0) {
        const passed = Math.min(this.#skip, data.length - i)
        this.#skip -= passed
        i += passed
      } else {
        this.#header.push(data[i++]!)
        if (this.#header.length === this.#headerBytes) announced += this.#parse()
      }
    }
    return announced
  }

  /** Acts on the complete header; returns what it announces. */
  #parse(): number {
    const header = this.#header
    const first = header[0]!
    switch (this.#part) {
      case 'stream header':
        if (XZ_MAGIC.some((byte, i) => header[i] !== byte)) throw new Error('not xz data')
        this.#checkBytes = XZ_CHECK_BYTES[header[7]! & 0x0f]!
        return this.#next('block or index')
      case 'block or index':
        if (first === 0) {
          this.#indexBytes = 1
          this.#indexFields = -1
          this.#count = this.#countShift = 0
          return this.#next('index')
        }
        this.#skip = (first + 1) * 4 - 1 // the rest of the block header
        this.#blockData = 0
        return this.#next('chunk')
      case 'chunk':
        return this.#chunk(first)
      case 'index':
        return this.#index(first)
      case 'stream padding':
        if (first === 0) return this.#next('stream padding')
        this.#part = 'stream header' // this byte is the next stream's first
        this.#headerBytes = 12
        return 0
    }
  }

  /** An LZMA2 chunk header, read as far as `control` (its first byte) says it goes. */
  #chunk(control: number): number {
    const length = control === 0 ? 1 : control <= 2 ? 3 : control >= 0xc0 ? 6 : control >= 0x80 ? 5 : 0
    if (length === 0) throw new Error('corrupt xz data: a bad LZMA2 chunk')
    if (this.#header.length < length) {
      this.#headerBytes = length
      return 0
    }
    const h = this.#header as [number, number, number, number, number]
    this.#blockData += length
    if (control === 0) {
      // The end of the block: its padding and check.
      this.#skip = ((4 - (this.#blockData % 4)) % 4) + this.#checkBytes
      return this.#next('block or index')
    }
    // Stored bytes (1, 2), or LZMA data with the decoded size's top bits in the control byte.
    const data = control <= 2 ? ((h[1] << 8) | h[2]) + 1 : ((h[3] << 8) | h[4]) + 1
    const decoded = control <= 2 ? data : (((control & 0x1f) << 16) | (h[1] << 8) | h[2]) + 1
    this.#skip = data
    this.#blockData += data
    this.#next('chunk')
    return decoded
  }

  /** One byte of an index: its record count, then two integers a record; then its padding, CRC32 and the stream footer. */
  #index(byte: number): number {
    this.#indexBytes++
    if (this.#indexFields < 0) {
      this.#count += (byte & 0x7f) * 2 ** this.#countShift
      this.#countShift += 7
    }
    if ((byte & 0x80) === 0) this.#indexFields = this.#indexFields < 0 ? 2 * this.#count : this.#indexFields - 1
    if ((byte & 0x80) !== 0 || this.#indexFields > 0) return this.#next('index')
    this.#skip = ((4 - (this.#indexBytes % 4)) % 4) + 4 + 12
    return this.#next('stream padding')
  }

  #next(part: XzPart): 0 {
    this.#part = part
    this.#header = []
    this.#headerBytes = 1
    return 0
  }
}

/** A whole zstd buffer (an `.ls` or narinfo body), decoded to at most `maxBytes`. */
export async function decodeZstdBuffer(input: Uint8Array, maxBytes: number): Promise<Buffer> {
  const decoder = createDecoder('zstd', { external: false, maxOutputBytes: maxBytes })
  const chunks: Buffer[] = []
  decoder.on('data', (chunk: Buffer) => chunks.push(chunk))
  decoder.end(input)
  await finished(decoder)
  return Buffer.concat(chunks)
}

/** unbzip2-stream's decoder itself, without its stream wrapper (lib/bzip2.js, lib/bit_iterator.js). */
interface BitReader {
  (bits: number | null): number
  readonly bytesRead: number
}
interface Bzip2Blocks {
  /** Reads a stream header; returns its block size in 100 kB. */
  header(bits: BitReader): number
  /** Decodes one block into `output`, a byte at a time; returns the stream's CRC so far, or null at its end. */
  decompress(
    bits: BitReader,
    output: (byte: number) => void,
    table: Int32Array,
    tableSize: number,
    streamCRC: number | null,
  ): number | null
}
const require = createRequire(import.meta.url)
const bzip2Blocks = require('unbzip2-stream/lib/bzip2.js') as Bzip2Blocks
const bitReader = require('unbzip2-stream/lib/bit_iterator.js') as (next: () => Uint8Array) => BitReader

/** Decoded bzip2 bytes are handed on in pieces of this size. */
const BZIP2_PIECE_BYTES = 64 * 1024

/**
 * bzip2 in-process, a block at a time as unbzip2-stream decodes it, but through its decoder alone:
 * its stream wrapper collects a block's output (up to ~46 MB from a few dozen bytes) in a JS array
 * of numbers before anything can count it. Here every byte is counted as it is decoded, and
 * the block fails at the first byte past `max`.
 */
class Bzip2Decoder extends Transform {
  readonly #max: number
  readonly #input: Uint8Array[] = []
  #received = 0
  #bits: BitReader | undefined
  /** The current stream's block size (in 100 kB), 0 until its header is read. */
  #blockSize = 0
  #table = new Int32Array(0)
  #streamCRC: number | null = null
  #piece = Buffer.allocUnsafe(BZIP2_PIECE_BYTES)
  #filled = 0
  #produced = 0

  constructor(max: number) {
    super()
    this.#max = max
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#input.push(chunk)
    this.#received += chunk.length
    this.#bits ??= bitReader(() => this.#next())
    // As unbzip2-stream: a block is decoded once the most it can take is there (or at the end).
    this.#decode(() => this.#received - this.#bits!.bytesRead + 1 >= 25_000 + 100_000 * this.#blockSize, callback)
  }

  override _flush(callback: TransformCallback): void {
    this.#decode(
      () => this.#bits !== undefined && this.#received > this.#bits.bytesRead,
      (err) => {
        callback(err ?? (this.#streamCRC !== null ? new Error('the bzip2 data ends in the middle of a stream') : null))
      },
    )
  }

  #decode(more: () => boolean, callback: TransformCallback): void {
    try {
      while (more()) this.#step()
    } catch (err) {
      return callback(err as Error)
    }
    callback()
  }

  #step(): void {
    const bits = this.#bits!
    if (this.#blockSize === 0) {
      this.#blockSize = bzip2Blocks.header(bits)
      if (this.#table.length !== 100_000 * this.#blockSize) this.#table = new Int32Array(100_000 * this.#blockSize)
      this.#streamCRC = 0
      return
    }
    this.#streamCRC = bzip2Blocks.decompress(bits, this.#output, this.#table, this.#table.length, this.#streamCRC)
    if (this.#streamCRC === null) this.#blockSize = 0
    this.#handOver()
  }

  readonly #output = (byte: number): void => {
    if (++this.#produced > this.#max) throw new DecodedTooLargeError(this.#max)
    this.#piece[this.#filled++] = byte
    if (this.#filled === BZIP2_PIECE_BYTES) this.#handOver()
  }

  #handOver(): void {
    if (this.#filled === 0) return
    this.push(this.#piece.subarray(0, this.#filled))
    this.#piece = Buffer.allocUnsafe(BZIP2_PIECE_BYTES)
    this.#filled = 0
  }

  #next(): Uint8Array {
    const chunk = this.#input.shift()
    if (chunk === undefined) throw new Error('the bzip2 data ends in the middle of a block')
    return chunk
  }
}
