/** What the NAR store leaves behind: file descriptors, files outside the bound, slots, after trouble. */
import assert from 'node:assert/strict'
import { mkdtemp, readdir, readlink, rm } from 'node:fs/promises'
import { createRequire, syncBuiltinESMExports } from 'node:module'
import os from 'node:os'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { after, describe, it } from 'node:test'
import { createLogger } from '../../src/log.js'
import { NarStore, narKey } from '../../src/store/nar-store.js'
import { FileUpstream } from '../../src/upstream/file-upstream.js'
import { PathInfoLookup, type PathInfo } from '../../src/upstream/path-info-lookup.js'
import { cacheDir, fixturePath } from '../helpers/fixtures.js'

const log = createLogger('silent')

async function infoOf(kind: string): Promise<PathInfo> {
  const lookup = new PathInfoLookup([new FileUpstream(pathToFileURL(cacheDir('none')))], {
    log,
    negativeTtlMs: 1000,
    maxEntries: 10,
    trustedKeys: () => undefined,
  })
  const info = await lookup.find(fixturePath(kind).hash)
  assert.ok(info !== undefined)
  return info
}

/** Descriptors this process holds on files under `dir` (deleted ones included). */
async function openFilesUnder(dir: string): Promise<string[]> {
  const links = await Promise.all(
    (await readdir('/proc/self/fd')).map((fd) => readlink(`/proc/self/fd/${fd}`).catch(() => '')),
  )
  return links.filter((link) => link.startsWith(dir))
}

/** Downloads `info` through `store` and waits until it is committed. */
async function fetchWhole(store: NarStore, info: PathInfo): Promise<void> {
  const lease = await store.open(info)
  await lease.source.listing()
  lease.release()
  await store.idle(10_000)
}

describe('NarStore cleanup', () => {
  const dirs: string[] = []
  const tempDir = async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'unnar-cleanup-'))
    dirs.push(dir)
    return dir
  }
  after(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true })
  })

  it('closes every file of a NAR cached twice (an old copy still read while the new one is used)', async () => {
    const basic = await infoOf('basic')
    const site = await infoOf('site')
    const dir = await tempDir()
    // Room for one of the two NARs at a time.
    const store = new NarStore({
      dir,
      maxBytes: Math.max(basic.narInfo.narSize, site.narInfo.narSize) + 1,
      maxNarBytes: 1 << 30,
      log,
    })
    await store.init()
    await fetchWhole(store, basic)
    const old = await store.open(basic) // a slow client holds the first copy
    await fetchWhole(store, site) // evicts it (kept on disk while held)
    await fetchWhole(store, basic) // the same NAR again: a second entry, evicting site
    const current = await store.open(basic)
    const hello = await old.source.node(['bin', 'hello'])
    assert.ok(hello?.type === 'regular' && hello.narOffset !== undefined)
    await old.source.readBytes(hello.narOffset, hello.narOffset + hello.size) // the old copy is read again
    current.release()
    old.release()
    await fetchWhole(store, site) // evicts the second copy
    await store.close()
    assert.deepEqual(await openFilesUnder(dir), [])
    assert.deepEqual((await readdir(path.join(dir, 'nar'))).sort(), [`${narKey(site)}.ls`, `${narKey(site)}.nar`])
  })

  it('at start, deletes a cached NAR larger than the whole (since lowered) cache size', async () => {
    const basic = await infoOf('basic')
    const dir = await tempDir()
    const big = new NarStore({ dir, maxBytes: 1 << 30, maxNarBytes: 1 << 30, log })
    await big.init()
    await fetchWhole(big, basic)
    await big.close()
    const small = new NarStore({ dir, maxBytes: basic.narInfo.narSize - 1, maxNarBytes: 1 << 30, log })
    await small.init()
    assert.equal(small.entries, 0)
    assert.deepEqual(await readdir(path.join(dir, 'nar')), [])
    await small.close()
  })

  it('ends a download whose commit and cleanup the disk both refuse: slot released, nothing unhandled', async () => {
    const basic = await infoOf('basic')
    const dir = await tempDir()
    const store = new NarStore({ dir, maxBytes: 1 << 30, maxNarBytes: 1 << 30, log, maxDownloads: 1 })
    await store.init()
    const unhandled: unknown[] = []
    const onUnhandled = (err: unknown) => unhandled.push(err)
    process.on('unhandledRejection', onUnhandled)
    // The cache filesystem turns read-only: writing the listing and removing the temp file fail.
    const fsp = createRequire(import.meta.url)('node:fs/promises') as typeof import('node:fs/promises')
    const { writeFile, rm: remove } = fsp
    const readOnly = (file: unknown) => {
      if (String(file).startsWith(path.join(dir, 'tmp')))
        throw Object.assign(new Error('EROFS: read-only file system'), { code: 'EROFS' })
    }
    Object.assign(fsp, {
      writeFile: async (file: string, ...rest: unknown[]) => {
        readOnly(file)
        return (writeFile as (...a: unknown[]) => Promise<void>)(file, ...rest)
      },
      rm: async (file: string, ...rest: unknown[]) => {
        readOnly(file)
        return (remove as (...a: unknown[]) => Promise<void>)(file, ...rest)
      },
    })
    syncBuiltinESMExports()
    try {
      const lease = await store.open(basic)
      await lease.source.listing()
      lease.release()
      await store.idle(10_000)
    } finally {
      Object.assign(fsp, { writeFile, rm: remove })
      syncBuiltinESMExports()
      await new Promise((resolve) => setImmediate(resolve))
      process.off('unhandledRejection', onUnhandled)
    }
    assert.deepEqual(unhandled, [])
    assert.equal(store.downloading(basic), false)
    assert.deepEqual(store.downloads, { active: 0, queued: 0 })
    assert.equal(store.has(basic), false)
    await store.close()
  })

  it('a download that waited for a slot while the store closed does not start', async () => {
    const basic = await infoOf('basic')
    const site = await infoOf('site')
    const dir = await tempDir()
    const store = new NarStore({ dir, maxBytes: 1 << 30, maxNarBytes: 1 << 30, log, maxDownloads: 1 })
    await store.init()
    const first = store.open(basic)
    const second = store.open(site) // waits for the only slot
    await store.close()
    const outcomes = await Promise.allSettled(
      [first, second].map(async (opening) => {
        const lease = await opening
        try {
          return await lease.source.listing()
        } finally {
          lease.release()
        }
      }),
    )
    assert.ok(
      outcomes.every((o) => o.status === 'rejected'),
      'no download runs past close()',
    )
    assert.deepEqual(await readdir(path.join(dir, 'tmp')), [])
    assert.equal(store.has(site), false)
  })
})
