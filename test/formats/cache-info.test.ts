/** nix-cache-info parsing, with Nix's leniency. */
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { describe, it } from 'node:test'
import { parseCacheInfo } from '../../src/formats/cache-info.js'
import { cacheDir } from '../helpers/fixtures.js'

describe('parseCacheInfo', () => {
  it('reads what Nix writes', () => {
    assert.deepEqual(parseCacheInfo(readFileSync(path.join(cacheDir('xz'), 'nix-cache-info'), 'utf8')), {
      storeDir: '/nix/store',
    })
    assert.deepEqual(parseCacheInfo('StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n'), {
      storeDir: '/nix/store',
      wantMassQuery: true,
      priority: 40,
    })
  })
  it('trims values and ignores unknown keys, lines without a colon and bad numbers', () => {
    assert.deepEqual(parseCacheInfo('junk\nStoreDir:/opt/store  \nFoo: bar\nPriority: high\nWantMassQuery: yes'), {
      storeDir: '/opt/store',
      wantMassQuery: false,
    })
  })
})
