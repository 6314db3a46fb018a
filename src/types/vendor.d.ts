/** Type declarations for the untyped dependencies, limited to what unnar uses. */
declare module 'lzma-native' {
  import type { Transform } from 'node:stream'
  const lzma: { createDecompressor(options?: { synchronous?: boolean }): Transform }
  export default lzma
}

declare module 'unbzip2-stream' {
  import type { Duplex } from 'node:stream'
  export default function unbzip2Stream(): Duplex
}
