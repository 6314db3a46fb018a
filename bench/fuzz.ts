/**
 * `npm run fuzz`: every hostile-input property of test/fuzz/properties.ts at scale, then one summary
 * line. FUZZ_CASES sets the total (default 120,000), FUZZ_SEED replays a run. Exit status 1 on a failure.
 */
import { FUZZ_PROPERTIES } from '../test/fuzz/properties.js'
import { formatFuzzSummary, fuzzSeed, positiveInteger, runFuzz } from '../test/fuzz/runner.js'

const cases = positiveInteger('FUZZ_CASES', process.env.FUZZ_CASES ?? '120000')
const report = await runFuzz(FUZZ_PROPERTIES, { cases, seed: fuzzSeed(process.env) })
for (const failure of report.failures) console.error(failure)
console.log(formatFuzzSummary(report))
process.exitCode = report.failures.length > 0 ? 1 : 0
