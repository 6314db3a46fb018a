/** Real Nix (Debian's nix-bin) as the reference: `nix store cat` must give the same bytes as unnar. */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { pathToFileURL } from 'node:url'
import { after, before, describe, it } from 'node:test'
import { cacheDir, COMPRESSIONS, loadFixturePaths } from '../helpers/fixtures.js'
import { encodeRel, startUnnar, type TestUnnar } from '../helpers/unnar.js'

const run = promisify(execFile)
const NIX_ENV = { ...process.env, NIX_CONFIG: 'experimental-features = nix-command\nsubstituters =' }
const hasNix = await run('nix', ['--version'], { env: NIX_ENV }).then(
  () => true,
  () => false,
)

/** A spread of files: every regular file of the small paths, and a sample of the 1500-file directory. */
function sampleFiles(): Array<{ storePath: string; base: string; rel: string }> {
  const out: Array<{ storePath: string; base: string; rel: string }> = []
  for (const fixture of loadFixturePaths()) {
    const regular = Object.entries(fixture.entries)
      .filter(([, e]) => e.type === 'regular')
      .map(([rel]) => rel)
    const picked =
      regular.length > 40 ? regular.filter((_, i) => i % 100 === 0 || !regular[i]!.startsWith('many/')) : regular
    for (const rel of picked) out.push({ storePath: fixture.storePath, base: `${fixture.hash}-${fixture.name}`, rel })
  }
  return out
}

describe('byte-for-byte agreement with nix store cat', {
  timeout: 180_000,
  skip: hasNix ? false : 'nix-bin is not installed (.ci/run installs it)',
}, () => {
  for (const compression of COMPRESSIONS) {
    describe(`the ${compression} cache`, () => {
      let unnar: TestUnnar
      const store = pathToFileURL(cacheDir(compression)).href
      before(async () => {
        unnar = await startUnnar([store])
      })
      after(() => unnar.stop())

      it('serves what Nix extracts, for every sampled file', async () => {
        const files = sampleFiles()
        assert.ok(files.length > 30)
        for (const { storePath, base, rel } of files) {
          const { stdout: expected } = await run('nix', ['store', 'cat', '--store', store, `${storePath}/${rel}`], {
            env: NIX_ENV,
            encoding: 'buffer',
            maxBuffer: 64 * 1024 * 1024,
          })
          const res = await fetch(unnar.store(`${base}/${encodeRel(rel)}`))
          assert.equal(res.status, 200, rel)
          assert.ok(Buffer.from(await res.arrayBuffer()).equals(expected), `${compression} ${storePath}/${rel}`)
        }
      })
    })
  }
})
