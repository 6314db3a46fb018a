/**
 * `npm run fuzz`: every hostile-input property of test/fuzz/properties.ts at scale, then the
 * confinement properties of test/fuzz/confinement.ts (servers, files), then one summary line.
 * FUZZ_CASES sets the total of the first (default 120,000, shared evenly), FUZZ_CONFINEMENT_CASES
 * that of the second (default 107,000, shared as their `runs.fuzz`), FUZZ_SEED replays a run and
 * FUZZ_ONLY runs just the properties whose name contains it. Exit status 1 on a failure.
 */
import { CONFINEMENT_PROPERTIES } from '../test/fuzz/confinement.js'
import { FUZZ_PROPERTIES } from '../test/fuzz/properties.js'
import { formatFuzzSummary, fuzzSeed, harnessedRuns, positiveInteger, runFuzz } from '../test/fuzz/runner.js'

const only = process.env.FUZZ_ONLY
const pick = <T extends { readonly name: string }>(list: readonly T[]): T[] =>
  list.filter((p) => only === undefined || p.name.includes(only))
const properties = pick(FUZZ_PROPERTIES)
const harnessed = pick(CONFINEMENT_PROPERTIES)
const cases = positiveInteger('FUZZ_CASES', process.env.FUZZ_CASES ?? '120000')
const confinementCases =
  process.env.FUZZ_CONFINEMENT_CASES === undefined
    ? undefined
    : positiveInteger('FUZZ_CONFINEMENT_CASES', process.env.FUZZ_CONFINEMENT_CASES)
const started = performance.now()
const report = await runFuzz(properties, {
  cases,
  seed: fuzzSeed(process.env),
  harnessed,
  harnessedRuns: harnessedRuns(harnessed, 'fuzz', confinementCases),
  onProperty: (line) => console.error(line),
})
for (const failure of report.failures) console.error(failure)
console.error(`fuzz: ${((performance.now() - started) / 1000).toFixed(1)} s`)
console.log(formatFuzzSummary(report))
process.exitCode = report.failures.length > 0 ? 1 : 0
