/** Hand-made store paths (uncompressed NAR, unsigned narinfo, optionally a `.ls`) written into a cache directory, and served. */
import { createHash } from 'node:crypto'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before } from 'node:test'
import { formatListing, listingFromEntries } from '../../src/formats/listing.js'
import { NarIndexer } from '../../src/formats/nar-indexer.js'
import { formatNarInfo } from '../../src/formats/narinfo.js'
import { encodeNix32 } from '../../src/formats/nixbase32.js'
import { buildNar, type NarTree } from '../formats/nar-builder.js'
import { startTestUpstream, type TestUpstream } from './test-upstream.js'
import { startUnnar, type TestUnnar } from './unnar.js'

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

export interface ServedStorePath {
  /** `<hash>-<name>` */
  readonly base: string
  readonly upstream: TestUpstream
  readonly unnar: TestUnnar
}

/**
 * One hand-made store path, with its `.ls`, in a cache of its own that a test upstream serves to
 * an unnar: for the describe() it is called in (made before its tests, removed after).
 */
export function serveStorePath(name: string, tree: () => NarTree): ServedStorePath {
  let root: string | undefined
  let served: ServedStorePath | undefined
  before(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'unnar-published-'))
    await mkdir(path.join(root, 'nar'))
    await writeFile(path.join(root, 'nix-cache-info'), 'StoreDir: /nix/store\n')
    const base = `${await publish(root, name, tree(), { listing: true })}-${name}`
    const upstream = await startTestUpstream({ root })
    served = { base, upstream, unnar: await startUnnar([upstream.url]) }
  })
  after(async () => {
    await served?.unnar.stop()
    await served?.upstream.close()
    if (root !== undefined) await rm(root, { recursive: true, force: true })
  })
  const get = (): ServedStorePath => {
    if (served === undefined) throw new Error('serveStorePath: used outside its tests')
    return served
  }
  return {
    get base() {
      return get().base
    },
    get upstream() {
      return get().upstream
    },
    get unnar() {
      return get().unnar
    },
  }
}
