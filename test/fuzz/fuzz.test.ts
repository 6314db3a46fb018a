/** The hostile-input properties of properties.ts with few cases each; `npm run fuzz` runs the same ones at scale. */
import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { FUZZ_PROPERTIES } from './properties.js'
import { checkProperty, formatFuzzSummary, fuzzSeed, positiveInteger } from './runner.js'

const NUM_RUNS = positiveInteger('FUZZ_RUNS', process.env.FUZZ_RUNS ?? '500')
const seed = fuzzSeed(process.env)

describe(`hostile input properties (seed ${seed})`, () => {
  let cases = 0
  const failures: string[] = []
  after(() => console.log(formatFuzzSummary({ cases, properties: FUZZ_PROPERTIES.length, failures, seed })))

  for (const property of FUZZ_PROPERTIES) {
    it(property.name, async () => {
      const outcome = await checkProperty(property, { numRuns: NUM_RUNS, seed })
      cases += outcome.cases
      if (outcome.failure !== undefined) {
        failures.push(outcome.failure)
        assert.fail(outcome.failure)
      }
    })
  }
})
