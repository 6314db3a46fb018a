/** The heap-growing flag unnar sets at start, and the user's own setting taking precedence. */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { HEAP_GROWING_FLAG, heapGrowingFlag } from '../src/v8-heap.js'

describe('heapGrowingFlag', () => {
  it('is set when node was started without one', () => {
    assert.equal(heapGrowingFlag([], undefined), HEAP_GROWING_FLAG)
    assert.equal(heapGrowingFlag(['--enable-source-maps'], '--max-old-space-size=4096'), HEAP_GROWING_FLAG)
  })

  it('leaves a setting of the user’s own alone, on the command line or in NODE_OPTIONS, in either spelling', () => {
    assert.equal(heapGrowingFlag(['--heap-growing-percent=100'], undefined), undefined)
    assert.equal(heapGrowingFlag([], '--max-old-space-size=4096 --heap_growing_percent=20'), undefined)
  })
})
