/** Starting next to a running instance: a second start that cannot listen leaves the cache directory alone. */
import assert from 'node:assert/strict'
import { readdir, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { describe, it } from 'node:test'
import { cacheDir, fixturePath } from '../helpers/fixtures.js'
import { startUnnar } from '../helpers/unnar.js'

const basic = fixturePath('basic')

describe('start-up', () => {
  it('fails on a taken port before touching the cache directory (the running instance keeps its downloads)', async () => {
    const first = await startUnnar([`file://${cacheDir('none')}`])
    try {
      // A download of the running instance, as its temp file.
      const inFlight = path.join(first.cacheDir, 'tmp', 'sha256-inflight.nar.0123456789ab.nar')
      await writeFile(inFlight, 'part of a NAR')
      const port = new URL(first.url).port
      await assert.rejects(
        startUnnar([`file://${cacheDir('none')}`], { PORT: port, UNNAR_CACHE_DIR: first.cacheDir }),
        /EADDRINUSE/,
      )
      assert.deepEqual(await readdir(path.join(first.cacheDir, 'tmp')), [path.basename(inFlight)])
      // And the running instance still serves.
      assert.equal((await fetch(first.store(`${basic.hash}-${basic.name}/bin/hello`))).status, 200)
    } finally {
      await first.stop()
    }
  })
})
