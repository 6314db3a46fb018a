/**
 * The hostile-input properties of properties.ts with few cases each, and a share of the confinement
 * properties of confinement.ts (issue 19: narinfo URLs reach only their own cache, checked where
 * requests leave the process); `npm run fuzz` runs the same ones at scale. FUZZ_RUNS sets the cases
 * per pure property (default 500), FUZZ_CONFINEMENT_CASES the total of the confinement ones
 * (default: their `runs.test`), FUZZ_SEED replays a run.
 */
import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { CONFINEMENT_PROPERTIES } from './confinement.js'
import { FUZZ_PROPERTIES } from './properties.js'
import {
  checkHarnessedProperty,
  checkProperty,
  formatFuzzSummary,
  formatHarnessedLine,
  fuzzSeed,
  harnessedRuns,
  positiveInteger,
} from './runner.js'

const NUM_RUNS = positiveInteger('FUZZ_RUNS', process.env.FUZZ_RUNS ?? '500')
const CONFINEMENT_RUNS = harnessedRuns(
  CONFINEMENT_PROPERTIES,
  'test',
  process.env.FUZZ_CONFINEMENT_CASES === undefined
    ? undefined
    : positiveInteger('FUZZ_CONFINEMENT_CASES', process.env.FUZZ_CONFINEMENT_CASES),
)
const seed = fuzzSeed(process.env)

describe(`hostile input properties (seed ${seed})`, () => {
  let cases = 0
  const failures: string[] = []
  after(() =>
    console.log(
      formatFuzzSummary({ cases, properties: FUZZ_PROPERTIES.length + CONFINEMENT_PROPERTIES.length, failures, seed }),
    ),
  )

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

  for (const [i, property] of CONFINEMENT_PROPERTIES.entries()) {
    it(property.name, async (t) => {
      const outcome = await checkHarnessedProperty(property, { numRuns: CONFINEMENT_RUNS[i]!, seed })
      cases += outcome.cases
      t.diagnostic(formatHarnessedLine(property.name, outcome))
      if (outcome.failure !== undefined) {
        failures.push(outcome.failure)
        assert.fail(outcome.failure)
      }
    })
  }
})
