/** Runs fuzz properties with fast-check and sums them up in one line. */
import fc from 'fast-check'
import type { FuzzProperty } from './properties.js'

export interface PropertyOutcome {
  readonly cases: number
  /** fast-check's report (counterexample, seed and path to replay it), when the property failed. */
  readonly failure: string | undefined
}

export interface FuzzReport {
  readonly cases: number
  readonly properties: number
  readonly failures: readonly string[]
  readonly seed: number
}

export async function checkProperty({ name, property }: FuzzProperty, options: { numRuns: number; seed: number }): Promise<PropertyOutcome> {
  // An async run stuck for this long is a hang; sync properties are bounded by their own checks.
  const details = await fc.check(property, { numRuns: options.numRuns, seed: options.seed, timeout: 10_000 })
  return { cases: details.numRuns, failure: details.failed ? `${name}: ${fc.defaultReportMessage(details)}` : undefined }
}

/** `cases` are shared out evenly among the properties. */
export async function runFuzz(properties: readonly FuzzProperty[], options: { cases: number; seed: number }): Promise<FuzzReport> {
  const numRuns = Math.ceil(options.cases / properties.length)
  let cases = 0
  const failures: string[] = []
  for (const property of properties) {
    const outcome = await checkProperty(property, { numRuns, seed: options.seed })
    cases += outcome.cases
    if (outcome.failure !== undefined) failures.push(outcome.failure)
  }
  return { cases, properties: properties.length, failures, seed: options.seed }
}

export function formatFuzzSummary(report: FuzzReport): string {
  return `fuzz: ${report.cases} cases over ${report.properties} properties, ${report.failures.length} failures (seed ${report.seed})`
}

/** FUZZ_SEED when set (to replay a failure), else a fresh one. */
export function fuzzSeed(env: NodeJS.ProcessEnv): number {
  return env.FUZZ_SEED === undefined ? Math.floor(Math.random() * 2 ** 31) : positiveInteger('FUZZ_SEED', env.FUZZ_SEED, 0)
}

export function positiveInteger(name: string, text: string, min = 1): number {
  const value = Number(text)
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < min) throw new Error(`${name}: expected an integer ≥ ${min}, got ${JSON.stringify(text)}`)
  return value
}
