/** The in-memory cache of hot small files: keyed by NAR content, bounded in bytes. */
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { describe, it } from 'node:test'
import { parseNarInfo, type NarInfo } from '../../src/formats/narinfo.js'
import { HotFiles, type HotFile } from '../../src/store/hot-files.js'
import { cacheDir, fixturePath } from '../helpers/fixtures.js'

const narInfoOf = (kind: string): NarInfo =>
  parseNarInfo(readFileSync(path.join(cacheDir('xz'), `${fixturePath(kind).hash}.narinfo`), 'utf8'))

const file = (text: string, size = text.length): HotFile => ({
  bytes: new Uint8Array(Buffer.from(text.padEnd(size, '.'))),
})

describe('HotFiles', () => {
  it('never answers for one NAR with the bytes of another, whatever the path', () => {
    const hot = new HotFiles<HotFile>({ maxBytes: 1024 * 1024 })
    const basic = narInfoOf('basic')
    const site = narInfoOf('site')
    hot.set(basic, ['share', 'a.txt'], file('from basic'))
    assert.equal(hot.get(site, ['share', 'a.txt']), undefined)
    hot.set(site, ['share', 'a.txt'], file('from site'))
    assert.equal(Buffer.from(hot.get(basic, ['share', 'a.txt'])!.bytes).toString(), 'from basic')
    assert.equal(Buffer.from(hot.get(site, ['share', 'a.txt'])!.bytes).toString(), 'from site')
  })

  it('finds a file by NarHash, not by the narinfo object that carried it', () => {
    const hot = new HotFiles<HotFile>({ maxBytes: 1024 * 1024 })
    hot.set(narInfoOf('basic'), ['bin', 'hello'], file('hello'))
    assert.equal(Buffer.from(hot.get(narInfoOf('basic'), ['bin', 'hello'])!.bytes).toString(), 'hello')
  })

  it('keeps paths apart that only differ in where the slashes are', () => {
    const hot = new HotFiles<HotFile>({ maxBytes: 1024 * 1024 })
    const basic = narInfoOf('basic')
    hot.set(basic, ['a', 'b'], file('a/b'))
    assert.equal(hot.get(basic, ['a/b']), undefined)
    assert.equal(hot.get(basic, ['ab']), undefined)
  })

  it('counts the reads it admitted and that are still running against its bound', () => {
    const hot = new HotFiles<HotFile>({ maxBytes: 1000 })
    const basic = narInfoOf('basic')
    const admitSecondTime = (name: string) => {
      hot.admit(basic, [name], 300) // the first request only marks the file as asked for
      return hot.admit(basic, [name], 300)
    }
    assert.equal(admitSecondTime('a'), true)
    assert.equal(admitSecondTime('b'), false, '300 + 300 bytes being read would pass half of the bound')
    hot.abandon(basic, ['a'])
    assert.equal(hot.admit(basic, ['b'], 300), true, 'room again once the first read is given up')
  })

  it('stays within its byte bound, dropping the least recently used files', () => {
    const hot = new HotFiles<HotFile>({ maxBytes: 64 * 1024 })
    const basic = narInfoOf('basic')
    for (let i = 0; i < 20; i++) hot.set(basic, [`f${i}`], file(`file ${i}`, 8 * 1024))
    assert.ok(hot.size <= 64 * 1024, `${hot.size} bytes`)
    assert.equal(hot.get(basic, ['f0']), undefined)
    assert.ok(hot.get(basic, ['f19']) !== undefined)
    hot.set(basic, ['huge'], file('huge', 128 * 1024))
    assert.equal(hot.get(basic, ['huge']), undefined, 'a file larger than the bound is not kept')
  })

  it('remembers the files asked for once within a byte bound, however long their paths', () => {
    const hot = new HotFiles<HotFile>({ maxBytes: 1024 * 1024 })
    const basic = narInfoOf('basic')
    const long = (i: number) => [`${i}`.padStart(1000, 'x')]
    // 2,000 paths of 1,000 characters: twice what the bound holds as two-byte strings.
    for (let i = 0; i < 2000; i++) assert.equal(hot.admit(basic, long(i), 10), false, 'asked for once')
    assert.equal(hot.admit(basic, long(0), 10), false, 'the oldest was forgotten: asked for once again')
    assert.equal(hot.admit(basic, long(1999), 10), true, 'the newest is remembered')
  })

  it('makes room within its bound for the reads it admitted, before their bytes arrive', () => {
    const hot = new HotFiles<HotFile>({ maxBytes: 64 * 1024 })
    const basic = narInfoOf('basic')
    for (let i = 0; i < 7; i++) hot.set(basic, [`f${i}`], file(`file ${i}`, 8 * 1024))
    hot.admit(basic, ['big'], 30 * 1024)
    assert.equal(hot.admit(basic, ['big'], 30 * 1024), true)
    assert.ok(hot.size <= 64 * 1024, `${hot.size} bytes with the read in flight`)
    assert.equal(hot.get(basic, ['f0']), undefined, 'the least recently used file made room')
    assert.ok(hot.get(basic, ['f6']) !== undefined)
    hot.set(basic, ['big'], file('big', 30 * 1024))
    assert.ok(hot.get(basic, ['big']) !== undefined)
    assert.ok(hot.size <= 64 * 1024, `${hot.size} bytes`)
  })
})
