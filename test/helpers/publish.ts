/** Writes hand-made store paths (uncompressed NAR, unsigned narinfo, optionally a `.ls`) into a cache directory. */
import { createHash } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import path from 'node:path'
import { formatListing, listingFromEntries } from '../../src/formats/listing.js'
import { NarIndexer } from '../../src/formats/nar-indexer.js'
import { formatNarInfo } from '../../src/formats/narinfo.js'
import { encodeNix32 } from '../../src/formats/nixbase32.js'
import { buildNar, type NarTree } from '../formats/nar-builder.js'

export interface PublishOptions {
  readonly references?: readonly string[]
  /** Also write the `.ls` listing, with offsets, as Nix does. */
  readonly listing?: boolean
}

/** One store path into the cache at `root` (which has a `nar/` folder); returns its hash. */
export async function publish(
  root: string,
  name: string,
  tree: NarTree,
  options: PublishOptions = {},
): Promise<string> {
  const hash = encodeNix32(createHash('sha256').update(name).digest().subarray(0, 20))
  const nar = buildNar(tree)
  await writeFile(path.join(root, 'nar', `${hash}.nar`), nar)
  const narHash = { algorithm: 'sha256' as const, digest: new Uint8Array(createHash('sha256').update(nar).digest()) }
  const narInfo = formatNarInfo({
    storePath: `/nix/store/${hash}-${name}`,
    url: `nar/${hash}.nar`,
    compression: 'none',
    fileSize: nar.length,
    narHash,
    narSize: nar.length,
    references: [...(options.references ?? [])],
    sigs: [],
    quirks: [],
  })
  await writeFile(path.join(root, `${hash}.narinfo`), narInfo)
  if (options.listing === true) {
    const indexer = new NarIndexer()
    const entries = indexer.push(nar)
    indexer.end()
    await writeFile(path.join(root, `${hash}.ls`), formatListing(listingFromEntries(entries)))
  }
  return hash
}
