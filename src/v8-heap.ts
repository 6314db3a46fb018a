/**
 * How far V8 lets unnar's old generation grow between full collections. By default V8 collects
 * once it has grown to up to 4x what the last one left live; unnar's live heap is small (~20-40 MB)
 * and what it promotes is garbage a few hundred milliseconds old, so RSS wandered by 20-30 MB with
 * where the collections happened to fall (bench/ "crawl": RSS at the end vs halfway). At 1.5x they
 * come several times as often and still cost well under 1% of a core (bench/ "mixed soak", "crawl").
 */
export const HEAP_GROWING_FLAG = '--heap-growing-percent=50'

/** The V8 flag to set at start, unless node was started with a heap-growing setting of its own. */
export function heapGrowingFlag(execArgv: readonly string[], nodeOptions: string | undefined): string | undefined {
  const given = [...execArgv, ...(nodeOptions ?? '').split(/\s+/)]
  return given.some((arg) => /^--heap[-_]growing[-_]percent\b/.test(arg)) ? undefined : HEAP_GROWING_FLAG
}
