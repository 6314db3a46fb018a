/** Type declarations for the untyped dependencies, limited to what unnar uses. */
declare module 'lzma-native' {
  import type { Transform } from 'node:stream'
  const lzma: { createDecompressor(options?: { synchronous?: boolean }): Transform }
  export default lzma
}
