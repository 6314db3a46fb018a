/** Credentials files read again when they change, and kept when a change cannot be used. */
import assert from 'node:assert/strict'
import { mkdtemp, rename, rm, unlink, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { after, before, describe, it } from 'node:test'
import { createLogger } from '../../src/log.js'
import { CredentialFiles } from '../../src/upstream/credential-files.js'
import { readNetrcFile, readTokensFile } from '../../src/upstream/credentials.js'

describe('CredentialFiles', () => {
  let dir: string
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'unnar-creds-'))
  })
  after(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  const setup = async (
    name: string,
    options: { tokens?: string; netrc?: string; fixed?: Record<string, string>; recheckMs?: number },
  ) => {
    const logs: Array<{ level: string; msg: string; file?: string; error?: string }> = []
    const tokensFile = options.tokens === undefined ? undefined : path.join(dir, `${name}-tokens`)
    const netrcFile = options.netrc === undefined ? undefined : path.join(dir, `${name}-netrc`)
    if (tokensFile !== undefined) await writeFile(tokensFile, options.tokens!)
    if (netrcFile !== undefined) await writeFile(netrcFile, options.netrc!)
    const files = new CredentialFiles({
      netrcFile,
      readNetrc: readNetrcFile,
      tokensFile,
      readTokens: readTokensFile,
      fixedTokens: new Map(Object.entries(options.fixed ?? {})),
      log: createLogger('debug', (line) => logs.push(JSON.parse(line))),
      recheckMs: options.recheckMs ?? 0,
    })
    return { files, logs, tokensFile: tokensFile!, netrcFile: netrcFile! }
  }

  it('takes a rewritten or replaced tokens file, and gives the same object while nothing changed', async () => {
    const { files, tokensFile } = await setup('rotate', { tokens: 'cache.example=old-token\n' })
    const first = files.current()
    assert.equal(first.tokens?.get('cache.example'), 'old-token')
    assert.equal(files.current(), first, 'unchanged: the same credentials object')
    await writeFile(tokensFile, 'cache.example=new-token-1\n')
    assert.equal(files.current().tokens?.get('cache.example'), 'new-token-1', 'rewritten in place')
    const next = path.join(dir, 'rotate-next')
    await writeFile(next, 'cache.example=new-token-2\n')
    await rename(next, tokensFile)
    assert.equal(files.current().tokens?.get('cache.example'), 'new-token-2', 'replaced by rename')
  })

  it('keeps the last good credentials, warning once, while the file is broken or missing', async () => {
    const { files, logs, tokensFile } = await setup('broken', { tokens: 'cache.example=good\n' })
    await writeFile(tokensFile, 'cache.example=\n')
    assert.equal(files.current().tokens?.get('cache.example'), 'good')
    assert.equal(files.current().tokens?.get('cache.example'), 'good')
    const warnings = logs.filter((l) => l.level === 'warn')
    assert.equal(warnings.length, 1, 'one warning per change, not per request')
    assert.equal(warnings[0]!.file, tokensFile)
    assert.match(warnings[0]!.error!, /not host=token/)
    await unlink(tokensFile)
    assert.equal(files.current().tokens?.get('cache.example'), 'good')
    assert.match(logs.filter((l) => l.level === 'warn')[1]!.error!, /ENOENT/)
    await writeFile(tokensFile, '')
    assert.equal(
      files.current().tokens?.get('cache.example'),
      'good',
      'an emptied file (caught mid-rewrite) is refused',
    )
    assert.match(logs.filter((l) => l.level === 'warn')[2]!.error!, /no entries/)
    // A token pasted without its host: the warning names the line, never its text.
    await writeFile(tokensFile, 'cache.example=x\nc2VjcmV0LXRva2VuK/zz==\n')
    assert.equal(files.current().tokens?.get('cache.example'), 'good')
    assert.match(logs.filter((l) => l.level === 'warn')[3]!.error!, /line 2 is not host=token/)
    await writeFile(tokensFile, 'cache.example=fixed\n')
    assert.equal(files.current().tokens?.get('cache.example'), 'fixed', 'a mended file is taken')
    const logged = JSON.stringify(logs)
    for (const secret of ['good', 'fixed', 'c2VjcmV0']) assert.ok(!logged.includes(secret), `${secret} in the log`)
  })

  it("lets the environment's tokens win over the file's, also after a change", async () => {
    const { files, tokensFile } = await setup('env', {
      tokens: 'a.example=file-a b.example=file-b\n',
      fixed: { 'a.example': 'env-a' },
    })
    assert.deepEqual(Object.fromEntries(files.current().tokens!), { 'a.example': 'env-a', 'b.example': 'file-b' })
    await writeFile(tokensFile, 'a.example=file-a2 b.example=file-b2\n')
    assert.deepEqual(Object.fromEntries(files.current().tokens!), { 'a.example': 'env-a', 'b.example': 'file-b2' })
  })

  it('reads a changed netrc again', async () => {
    const { files, netrcFile } = await setup('netrc', { netrc: 'machine cache.example login alice password one\n' })
    assert.equal(files.current().netrc?.[0]?.password, 'one')
    await writeFile(netrcFile, 'machine cache.example login alice password two\n')
    assert.equal(files.current().netrc?.[0]?.password, 'two')
  })

  it('looks at the files at most once per recheck interval', async () => {
    const { files, tokensFile } = await setup('throttle', { tokens: 'cache.example=one\n', recheckMs: 60_000 })
    await writeFile(tokensFile, 'cache.example=two\n')
    assert.equal(files.current().tokens?.get('cache.example'), 'one')
  })
})
