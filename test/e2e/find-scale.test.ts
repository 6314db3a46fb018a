/**
 * `?find` on a generated 20,000-entry store path (#23): the server time of each answer, read from
 * the request log, is reported (t.diagnostic), never asserted; the answers themselves are checked.
 * The goal is ≤ 50 ms of server time per search.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { MAX_FIND_HITS } from '../../src/http/tree-search.js'
import { serveStorePath } from '../helpers/publish.js'
import { directory, regular, type NarTree } from '../formats/nar-builder.js'

/** 160 packages × (1 directory + 124 files) = 20,000 entries below the root. */
function bigTree(): NarTree {
  const packages: Record<string, NarTree> = {}
  for (let p = 0; p < 160; p++) {
    const files: Record<string, NarTree> = {}
    for (let f = 0; f < 124; f++) files[`module-${String(f).padStart(3, '0')}.py`] = regular(`# ${p}/${f}\n`)
    packages[`package-${String(p).padStart(3, '0')}`] = directory(files)
  }
  return directory({ lib: directory({ 'site-packages': directory(packages) }) })
}

describe('?find on 20,000 entries', () => {
  const served = serveStorePath('python-env', bigTree)

  /** The request log's `ms` for each search, best of three (the first also parses the `.ls`). */
  async function serverTimes(from: string): Promise<Record<string, number>> {
    const times: Record<string, number> = {}
    const cases: ReadonlyArray<readonly [string, string, Record<string, string>]> = [
      ['one hit, html', 'package-042/module-007', { accept: 'text/html' }],
      ['one hit, json', 'package-042/module-007', { accept: 'application/json' }],
      ['124 hits, text', 'package-042/', { 'user-agent': 'curl/8' }],
      ['no hit, json', 'nothing-like-this', { accept: 'application/json' }],
      [`cut at ${MAX_FIND_HITS}, html`, 'module', { accept: 'text/html', 'accept-encoding': 'br' }],
      [`cut at ${MAX_FIND_HITS}, json`, 'module', { accept: 'application/json' }],
    ]
    for (const [what, text, headers] of cases) {
      let best = Number.POSITIVE_INFINITY
      for (let run = 0; run < 3; run++) {
        const id = `find-scale-${from}-${what}-${run}`.replace(/[^\w-]/g, '-')
        const res = await fetch(`${served.unnar.store(`${served.base}/`)}?find=${encodeURIComponent(text)}`, {
          headers: { ...headers, 'x-request-id': id },
        })
        assert.equal(res.status, 200)
        await res.arrayBuffer()
        const line = await served.unnar.waitForLog((l) => l.msg === 'request' && l.id === id, `the log line of ${id}`)
        best = Math.min(best, line.ms as number)
      }
      times[what] = best
    }
    return times
  }

  it('answers from the .ls and from the cached NAR, reporting the server time', async (t) => {
    const json = await fetch(`${served.unnar.store(`${served.base}/`)}?find=package-042/&json`)
    const found = (await json.json()) as { truncated: boolean; entries: unknown[] }
    assert.equal(found.entries.length, 124)
    assert.equal(found.truncated, false)
    t.diagnostic(`find ms from the .ls (request log, best of 3): ${JSON.stringify(await serverTimes('ls'))}`)
    assert.equal(served.upstream.count(/^\/nar\//), 0)

    assert.equal(
      (await fetch(served.unnar.store(`${served.base}/lib/site-packages/package-000/module-000.py`))).status,
      200,
    )
    await served.unnar.waitForLog((l) => l.msg === 'NAR cached', 'the NAR is cached')
    t.diagnostic(`find ms from the NAR (request log, best of 3): ${JSON.stringify(await serverTimes('nar'))}`)
  })
})
