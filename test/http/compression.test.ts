/** Accept-Encoding negotiation and the streaming compressors. */
import assert from 'node:assert/strict'
import { brotliDecompressSync, gunzipSync } from 'node:zlib'
import { describe, it } from 'node:test'
import { decompress as zstdDecompress } from 'zstd-napi'
import { compressStream, isCompressible, negotiateEncoding } from '../../src/http/compression.js'
import { eventually } from '../helpers/wait.js'

describe('negotiateEncoding', () => {
  const cases: Array<[string | undefined, string | undefined]> = [
    [undefined, undefined],
    ['gzip, deflate, br', 'br'],
    ['gzip', 'gzip'],
    ['zstd, gzip', 'zstd'],
    ['br;q=0, gzip;q=0.5', 'gzip'],
    ['identity', undefined],
    ['*', 'br'],
    ['*, br;q=0', 'zstd'],
  ]
  for (const [header, expected] of cases) {
    it(`picks ${expected ?? 'identity'} for ${JSON.stringify(header)}`, () =>
      assert.equal(negotiateEncoding(header), expected))
  }
})

describe('isCompressible', () => {
  it('compresses text-like types and leaves media and archives alone', () => {
    for (const t of [
      'text/html; charset=utf-8',
      'application/json',
      'image/svg+xml',
      'application/javascript; charset=utf-8',
    ])
      assert.ok(isCompressible(t), t)
    for (const t of ['image/png', 'application/gzip', 'application/octet-stream', 'video/mp4'])
      assert.ok(!isCompressible(t), t)
  })
})

describe('compressStream', () => {
  const text = Buffer.from(Array.from({ length: 20_000 }, (_, i) => `line ${i} of a large text file\n`).join(''))
  const source = () =>
    new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < text.length; i += 65536) controller.enqueue(text.subarray(i, i + 65536))
        controller.close()
      },
    })
  const decoders = { br: brotliDecompressSync, gzip: gunzipSync, zstd: (b: Buffer) => Buffer.from(zstdDecompress(b)) }
  for (const [encoding, decode] of Object.entries(decoders)) {
    it(`streams ${encoding} that decodes back to the input`, async () => {
      const chunks: Uint8Array[] = []
      for await (const chunk of compressStream(source(), encoding as 'br') as unknown as AsyncIterable<Uint8Array>)
        chunks.push(chunk)
      const compressed = Buffer.concat(chunks)
      assert.ok(compressed.length < text.length / 5)
      assert.ok(decode(compressed).equals(text))
    })

    it(`cancels its source (the NAR read behind it) when the client stops reading ${encoding}`, async () => {
      let cancelled = false
      let pulled = 0
      const endless = new ReadableStream<Uint8Array>(
        {
          pull: (controller) => controller.enqueue(text.subarray(0, 65536 + pulled++)),
          cancel: () => {
            cancelled = true
          },
        },
        { highWaterMark: 0 },
      )
      const reader = compressStream(endless, encoding as 'br').getReader()
      await reader.read()
      await reader.cancel(new Error('the client went away'))
      await eventually(() => cancelled, 'the source cancelled')
    })
  }
})
