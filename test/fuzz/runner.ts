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

/**
 * A running harness (servers, temp dirs) and the property that drives it. `close()` stops it and
 * checks what only the whole run can show (requests that arrived late, that the run was not
 * vacuous): it throws when that fails, else returns one line saying what the cases did.
 */
export interface Harness<T> {
  readonly property: fc.IAsyncProperty<[T]>
  /** Values tried before the generated ones (the cases that must be accepted, say). */
  readonly examples?: readonly T[]
  close(): Promise<string>
}

/**
 * A property that needs a harness (servers, files): `runs` are its share of cases in `npm test`
 * and in `npm run fuzz`, which scale them to FUZZ_CONFINEMENT_CASES when it is set.
 */
export interface HarnessedProperty {
  readonly name: string
  readonly runs: { readonly test: number; readonly fuzz: number }
  // Each harness has its own case type.
  // biome-ignore lint/suspicious/noExplicitAny: the list holds harnesses of every case type
  setup(): Promise<Harness<any>>
}

export interface HarnessedOutcome extends PropertyOutcome {
  /** What the cases did (harness.close()'s line), when the harness closed cleanly. */
  readonly account: string | undefined
  readonly ms: number
}

export async function checkProperty(
  { name, property }: FuzzProperty,
  options: { numRuns: number; seed: number },
): Promise<PropertyOutcome> {
  // An async run stuck for this long is a hang; sync properties are bounded by their own checks.
  // includeErrorInReport: the report says what the property found wrong, not only the input.
  const details = await fc.check(property, {
    numRuns: options.numRuns,
    seed: options.seed,
    timeout: 10_000,
    includeErrorInReport: true,
  })
  return {
    cases: details.numRuns,
    failure: details.failed ? `${name}: ${fc.defaultReportMessage(details)}` : undefined,
  }
}

/** Sets the harness up, runs its property, closes it; a failing setup or close is a failure of the property. */
export async function checkHarnessedProperty(
  harnessed: HarnessedProperty,
  options: { numRuns: number; seed: number },
): Promise<HarnessedOutcome> {
  const started = performance.now()
  let harness: Harness<unknown>
  try {
    harness = await harnessed.setup()
  } catch (err) {
    return {
      cases: 0,
      failure: `${harnessed.name}: setup failed: ${describeError(err)}`,
      account: undefined,
      ms: performance.now() - started,
    }
  }
  let cases = 0
  let failure: string | undefined
  try {
    const details = await fc.check(harness.property, {
      numRuns: options.numRuns,
      seed: options.seed,
      timeout: 10_000,
      includeErrorInReport: true,
      ...(harness.examples === undefined ? {} : { examples: harness.examples.map((example): [unknown] => [example]) }),
    })
    cases = details.numRuns
    if (details.failed) failure = `${harnessed.name}: ${fc.defaultReportMessage(details)}`
  } catch (err) {
    failure = `${harnessed.name}: ${describeError(err)}`
  }
  let account: string | undefined
  try {
    account = await harness.close()
  } catch (err) {
    failure = [failure, `${harnessed.name}: ${describeError(err)}`].filter((f) => f !== undefined).join('\n')
  }
  return { cases, failure, account, ms: performance.now() - started }
}

/** `total` cases shared out among `properties` in proportion to their `runs[which]`, at least one each. */
export function harnessedRuns(
  properties: readonly HarnessedProperty[],
  which: 'test' | 'fuzz',
  total?: number,
): number[] {
  const weights = properties.map((p) => p.runs[which])
  const sum = weights.reduce((a, b) => a + b, 0)
  if (total === undefined) return weights
  return weights.map((w) => Math.max(1, Math.round((total * w) / sum)))
}

/**
 * `cases` are shared out evenly among the pure properties; the harnessed ones (if any) run after
 * them, `harnessedRuns` cases each. `onProperty` hears one line per harnessed property.
 */
export async function runFuzz(
  properties: readonly FuzzProperty[],
  options: {
    cases: number
    seed: number
    harnessed?: readonly HarnessedProperty[]
    harnessedRuns?: readonly number[]
    onProperty?: (line: string) => void
  },
): Promise<FuzzReport> {
  const numRuns = Math.ceil(options.cases / properties.length)
  let cases = 0
  const failures: string[] = []
  for (const property of properties) {
    const outcome = await checkProperty(property, { numRuns, seed: options.seed })
    cases += outcome.cases
    if (outcome.failure !== undefined) failures.push(outcome.failure)
  }
  const harnessed = options.harnessed ?? []
  const runs = options.harnessedRuns ?? harnessedRuns(harnessed, 'fuzz')
  for (const [i, property] of harnessed.entries()) {
    const outcome = await checkHarnessedProperty(property, { numRuns: runs[i] ?? 1, seed: options.seed })
    cases += outcome.cases
    if (outcome.failure !== undefined) failures.push(outcome.failure)
    options.onProperty?.(formatHarnessedLine(property.name, outcome))
  }
  return { cases, properties: properties.length + harnessed.length, failures, seed: options.seed }
}

export function formatHarnessedLine(name: string, outcome: HarnessedOutcome): string {
  return `${name}: ${outcome.cases} cases in ${(outcome.ms / 1000).toFixed(1)} s${outcome.account === undefined ? '' : ` (${outcome.account})`}${outcome.failure === undefined ? '' : ', FAILED'}`
}

export function formatFuzzSummary(report: FuzzReport): string {
  return `fuzz: ${report.cases} cases over ${report.properties} properties, ${report.failures.length} failures (seed ${report.seed})`
}

/** FUZZ_SEED when set (to replay a failure), else a fresh one. */
export function fuzzSeed(env: NodeJS.ProcessEnv): number {
  return env.FUZZ_SEED === undefined
    ? Math.floor(Math.random() * 2 ** 31)
    : positiveInteger('FUZZ_SEED', env.FUZZ_SEED, 0)
}

export function positiveInteger(name: string, text: string, min = 1): number {
  const value = Number(text)
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < min)
    throw new Error(`${name}: expected an integer ≥ ${min}, got ${JSON.stringify(text)}`)
  return value
}

function describeError(err: unknown): string {
  return err instanceof Error ? (err.stack ?? err.message) : String(err)
}
