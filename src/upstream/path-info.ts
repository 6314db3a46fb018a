/** What one upstream knows about one store path: the answer of a narinfo lookup. */
import type { NarInfo } from '../formats/narinfo.js'
import type { StorePath } from '../formats/store-path.js'
import type { Upstream } from './upstream.js'

export interface PathInfo {
  readonly storePath: StorePath
  readonly narInfo: NarInfo
  readonly upstream: Upstream
  /** The NAR's key relative to that upstream's root (a plain relative path, see cache-key.ts; the upstream checks where it leads again on every request). */
  readonly narKey: string
  /** Which trusted key signed it, `content-address`, or undefined when the upstream is not checked. */
  readonly trustedBy: string | undefined
}
