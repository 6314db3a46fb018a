/**
 * `npm run bench`: every unnar benchmark in one run, each compared with a reference measured in
 * the same run. Prints one markdown table (and writes it to bench/RESULTS.md).
 *
 * Processes: the bench script is only the client. Cold runs use bench/unnar-child.ts (an unnar
 * restarted on a fresh, empty cache directory for every run, in its own process); RSS and wrk rows
 * use the real `unnar` command (src/main.ts) as a separate process; row 8 serves the NARs through
 * the HTTP test upstream in a third process (bench/upstream-child.ts).
 *
 * Knobs: BENCH_REPS (default 3) runs per timed measurement, at least 9 for the sub-second ones
 * (the median is reported); BENCH_WRK_SECONDS (default 5) per wrk measurement; BENCH_SOAK_SECONDS
 * (default 120) for the mixed soak (row 10); BENCH_ONLY=3,8 runs only the rows with those numbers
 * (both compressions of a row that has two; row 4 needs row 2) and does not write bench/RESULTS.md.
 * The fixtures are built once (≈1.5 min + ≈1 min, needs nix) and cached in bench/.work/ (see
 * fixture.ts and fixture-scale.ts).
 */
import { spawnSync } from 'node:child_process'
import { availableParallelism, getPriority, loadavg } from 'node:os'
import { copyFile, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import http from 'node:http'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { decodeWithFzstd, decodeWithZstdNapi } from './codecs.js'
import { COMPRESSIONS, NIX_CONFIG, prepareFixture, type Compression, type Fixture } from './fixture.js'
import { prepareCrawlFixture, prepareGbFixture, prepareSoakFixture, prepareXzBlocksFixture } from './fixture-scale.js'
import {
  BENCH,
  buildUnnar,
  cpuSnapshot,
  fetchBody,
  freshDir,
  hasTool,
  IpcChild,
  log,
  median,
  memoryOf,
  runH2load,
  runWrk,
  sha256File,
  spawnUnnar,
  startBareHttp,
  summarizeLog,
  startNginx,
  stopProcess,
  timeCommand,
  waitForCommit,
  WORK,
  type UnnarProcess,
  type WrkResult,
} from './lib.js'

const REPS = Math.max(1, Number(process.env.BENCH_REPS ?? 3) || 3)
/** Sub-second measurements get more runs: cheap, and steadier on a shared machine (`zstd -dc` alone varies 160–230 ms there). */
const FAST_REPS = Math.max(REPS, 9)
const WRK_SECONDS = Math.max(1, Number(process.env.BENCH_WRK_SECONDS ?? 5) || 5)
const CONCURRENT = 200
/** Alternating unnar/nginx wrk rounds for rows 6 and 7. */
const HOT_ROUNDS = 3
const RSS_BUDGET = 200 * 1024 * 1024

/** A peak-RSS row: measured against the fixed budget rather than a reference run. */
function addRssRow(id: string, name: string, hwm: number, shown: string): void {
  addRow({
    id,
    name,
    unnar: shown,
    reference: `${fmtMB(RSS_BUDGET)} budget`,
    ratio: hwm / RSS_BUDGET,
    target: '< 1 (< 200 MiB)',
    check: (ratio) => ratio < 1,
  })
}
const SOAK_SECONDS = Math.max(10, Number(process.env.BENCH_SOAK_SECONDS ?? 120) || 120)
/** RSS is compared with its value this far into the soak (a third of it for short soaks). */
const SOAK_BASELINE_SECONDS = Math.min(20, Math.floor(SOAK_SECONDS / 3))
const SOAK_CONNECTIONS = 256
/** Small enough that the soak's cold store paths keep evicting each other (see benchSoak). */
const SOAK_CACHE_SIZE = '4M'
const SOAK_HOT_PATHS = 16
/** The default `--memory-cache-size`, which row 12 runs with. */
const CRAWL_MEMORY_CACHE = 128 * 1024 * 1024
const CRAWL_CONCURRENCY = 8
const ONLY = process.env.BENCH_ONLY?.split(',')
  .map((s) => s.trim())
  .filter((s) => s !== '')
const runs = (...rowNumbers: number[]) => ONLY === undefined || rowNumbers.some((n) => ONLY.includes(String(n)))

// ───────────────────────────── results ─────────────────────────────

type Verdict = 'yes' | 'NO' | 'info' | 'skipped' | 'error'

interface Row {
  readonly id: string
  readonly name: string
  readonly unnar: string
  readonly reference: string
  readonly ratio: number | undefined
  readonly target: string
  readonly verdict: Verdict
}

const rows: Row[] = []
const notes: string[] = []

/** A compared row; `check` says whether the ratio meets the target (no check: informational). */
function addRow(row: Omit<Row, 'verdict'> & { check?: (ratio: number) => boolean }): void {
  const { check, ...rest } = row
  // An info row may have no ratio (a reference measurement of its own).
  const verdict: Verdict =
    check === undefined && row.ratio === undefined
      ? 'info'
      : row.ratio === undefined || !Number.isFinite(row.ratio)
        ? 'error'
        : check === undefined
          ? 'info'
          : check(row.ratio)
            ? 'yes'
            : 'NO'
  rows.push({ ...rest, verdict })
  log(
    `${row.id} ${row.name}: ${row.unnar} vs ${row.reference} → ${row.ratio === undefined ? '—' : row.ratio.toFixed(2) + '×'} (${verdict})`,
  )
}

function skipRow(id: string, name: string, target: string, why: string): void {
  rows.push({ id, name, unnar: '—', reference: `skipped: ${why}`, ratio: undefined, target, verdict: 'skipped' })
  log(`${id} ${name}: SKIPPED (${why})`)
}

function errorRow(id: string, name: string, target: string, err: unknown): void {
  const message = (err as Error).message.split('\n')[0]!.slice(0, 160)
  rows.push({ id, name, unnar: `error: ${message}`, reference: '—', ratio: undefined, target, verdict: 'error' })
  log(`${id} ${name}: ERROR ${(err as Error).stack ?? message}`)
}

const fmtMs = (ms: number) => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(ms < 10 ? 2 : 0)} ms`)
/** A median and, in parentheses, the fastest and slowest run: for rows whose ratio lands near its target from run to run. */
const fmtSpread = (values: readonly number[]) =>
  `${fmtMs(median(values))} (${fmtMs(Math.min(...values))}–${fmtMs(Math.max(...values))})`
const fmtMB = (bytes: number) =>
  bytes < 1024 * 1024 ? `${(bytes / 1024).toFixed(0)} KiB` : `${(bytes / 1024 / 1024).toFixed(0)} MiB`
const fmtRate = (bytesPerSec: number) =>
  bytesPerSec >= 1e9 ? `${(bytesPerSec / 1e9).toFixed(2)} GB/s` : `${(bytesPerSec / 1e6).toFixed(0)} MB/s`
const fmtReqs = (n: number) => `${Math.round(n).toLocaleString('en-US')} req/s`

// ───────────────────────────── the run ─────────────────────────────

const started = performance.now()
const cpuStart = await cpuSnapshot()
const tools = Object.fromEntries(
  await Promise.all(
    ['nix', 'nix-store', 'xz', 'zstd', 'wrk', 'nginx', 'h2load'].map(async (t) => [t, await hasTool(t)] as const),
  ),
) as Record<string, boolean>
const machine = await describeMachine()
log(machine.join(' | '))

await mkdir(WORK, { recursive: true })
await buildUnnar()
let fixture: Fixture
try {
  if (!tools.nix || !tools['nix-store']) log('nix is not installed: only a fixture built earlier can be used')
  fixture = await prepareFixture(WORK, log)
} catch (err) {
  log(`cannot prepare the fixture (needs nix-store and nix on PATH the first time): ${(err as Error).message}`)
  process.exit(1)
}
const bigName = path.basename(fixture.big.storePath)
const hugeName = path.basename(fixture.huge.storePath)
const lastUrlPath = `/nix/store/${bigName}/${fixture.lastRel}`
const firstUrlPath = `/nix/store/${bigName}/${fixture.firstRel}`
const hugeUrlPath = `/nix/store/${hugeName}/${fixture.hugeRel}`
const lastFile = path.join(fixture.big.tree, fixture.lastRel)
const lastSha = await sha256File(lastFile)
const firstSha = await sha256File(path.join(fixture.big.tree, fixture.firstRel))
const lastSize = (await readFile(lastFile)).length
log(
  `NAR ${bigName}: ${fmtMB(fixture.big.narSize)} (xz ${fmtMB(fixture.caches.xz.fileSize.big)}, zstd ${fmtMB(fixture.caches.zstd.fileSize.big)}); last file ${fmtMB(lastSize)}`,
)
// Page cache: every run reads the compressed NARs from memory, unnar and references alike.
for (const c of COMPRESSIONS) for (const f of Object.values(fixture.caches[c].narFile)) await readFile(f)
const nixEnv = { ...process.env, NIX_CONFIG }

if (runs(1)) await benchCodecs()
const coldLast: Partial<Record<Compression, number>> = {}
const unnarChild = await IpcChild.spawn(path.join(BENCH, 'unnar-child.ts'))
try {
  for (const c of COMPRESSIONS) if (runs(c === 'xz' ? 2 : 3)) await benchColdLast(c)
  if (runs(4)) await benchFirstByte()
  if (runs(4)) await benchStrictCost()
  if (runs(8)) await benchConcurrent()
  if (runs(11)) await benchXzBlocks()
  if (runs(13)) await benchColdHttp()
} finally {
  await unnarChild.kill()
}
if (runs(5)) await benchRss()
if (runs(5)) await benchGbRss()
if (runs(6, 7)) await benchHot()
if (runs(10)) await benchSoak()
if (runs(12)) await benchCrawl()
await rm(path.join(WORK, 'runs'), { recursive: true, force: true })

const totalSeconds = (performance.now() - started) / 1000
const cpuEnd = await cpuSnapshot()
const cpuOthers =
  cpuStart !== undefined && cpuEnd !== undefined
    ? Math.max(0, cpuEnd.machine - cpuStart.machine - (cpuEnd.ours - cpuStart.ours))
    : undefined
const report = renderReport(totalSeconds)
process.stdout.write('\n' + report)
if (ONLY === undefined) {
  await writeFile(path.join(BENCH, 'RESULTS.md'), report)
  log(`wrote bench/RESULTS.md (${totalSeconds.toFixed(0)} s in total)`)
} else {
  log(`BENCH_ONLY=${ONLY.join(',')}: bench/RESULTS.md left as it was (${totalSeconds.toFixed(0)} s in total)`)
}

// ───────────────────────────── rows ─────────────────────────────

/**
 * An info row: the median of per-run ratios, each run against the reference run beside it. This
 * machine has phases in which everything runs up to 1.5x slower for a few seconds; a pair shares
 * its phase, so this moves less than the ratio of the two medians, which stays the target's.
 */
function pairedRow(
  of: string,
  beside: string,
  runs: readonly number[],
  references: readonly number[],
): Omit<Row, 'verdict' | 'id'> {
  const pairs = runs.map((run, i) => run / references[i]!)
  return {
    name: `${of} as the median of its ${pairs.length} pairs (each run ÷ ${beside})`,
    unnar: `${Math.min(...pairs).toFixed(2)}×–${Math.max(...pairs).toFixed(2)}×`,
    reference: '—',
    ratio: median(pairs),
    target: 'info',
  }
}

/** Row 1: zstd-napi vs fzstd vs the zstd CLI on the ≈100 MB zstd NAR. */
async function benchCodecs(): Promise<void> {
  const file = fixture.caches.zstd.narFile.big
  const name = 'zstd decode ≈100 MB NAR: zstd-napi `DecompressStream`'
  try {
    log('row 1: zstd decoders')
    const napi: number[] = []
    const fz: number[] = []
    const cli: number[] = []
    await decodeWithZstdNapi(file) // warm-up
    for (let i = 0; i < FAST_REPS; i++) {
      const a = await decodeWithZstdNapi(file)
      const b = await decodeWithFzstd(file)
      if (a.bytes !== fixture.big.narSize || b.bytes !== fixture.big.narSize)
        throw new Error(`decoded ${a.bytes} / ${b.bytes} bytes, NarSize is ${fixture.big.narSize}`)
      napi.push(a.ms)
      fz.push(b.ms)
      if (tools.zstd) cli.push((await timeCommand('zstd', ['-dc', file])).ms)
    }
    const m = median(napi)
    addRow({
      id: '1a',
      name: `${name} vs fzstd \`Decompress\``,
      unnar: fmtMs(m),
      reference: `${fmtMs(median(fz))} (fzstd)`,
      ratio: m / median(fz),
      target: '< 1 (why zstd-napi)',
      check: (r) => r < 1,
    })
    if (tools.zstd)
      addRow({
        id: '1b',
        name: `${name} vs \`zstd -dc\``,
        unnar: fmtMs(m),
        reference: `${fmtMs(median(cli))} (zstd -dc)`,
        ratio: m / median(cli),
        target: 'info',
      })
    else skipRow('1b', `${name} vs \`zstd -dc\``, 'info', 'zstd not installed')
  } catch (err) {
    errorRow('1', name, '< 1', err)
  }
}

/**
 * Row 11: the last file of a cold ≥ 200 MB xz NAR written in many blocks (Nix's
 * `parallel-compression`), against single-threaded `xz -dc` of the whole NAR (and, for information,
 * `xz -T0 -dc` on every core) run beside it.
 */
async function benchXzBlocks(): Promise<void> {
  const name = 'cold last file of a multi-block xz NAR'
  const limit = 0.6
  if (!tools.xz) return skipRow('11', name, `≤ ${limit}×`, 'xz not installed')
  try {
    log('row 11: cold last file, multi-block xz')
    const xzFixture = await prepareXzBlocksFixture(WORK, log)
    const upstream = `file://${xzFixture.cache}`
    const narinfo = await readFile(
      path.join(xzFixture.cache, `${path.basename(xzFixture.storePath).slice(0, 32)}.narinfo`),
      'utf8',
    )
    const narFile = path.join(xzFixture.cache, /^URL: (.*)$/m.exec(narinfo)![1]!)
    await readFile(narFile) // into the page cache
    const urlPath = `/nix/store/${path.basename(xzFixture.storePath)}/${xzFixture.lastRel}`
    const unnar: number[] = []
    const single: number[] = []
    const threaded: number[] = []
    for (let i = 0; i < REPS; i++) {
      const measureUnnar = async () => {
        const r = await coldRequest(upstream, urlPath, { waitForCommit: true })
        if (r.bytes !== xzFixture.lastSize) throw new Error(`GET ${xzFixture.lastRel}: ${r.bytes} bytes`)
        unnar.push(r.totalMs)
      }
      const measureCli = async () => {
        single.push((await timeCommand('xz', ['-dc', narFile])).ms)
        threaded.push((await timeCommand('xz', ['-T0', '-dc', narFile])).ms)
      }
      if (i % 2 === 0) {
        await measureUnnar()
        await measureCli()
      } else {
        await measureCli()
        await measureUnnar()
      }
    }
    const pairs = unnar.map((ms, i) => ms / single[i]!)
    const what = `(NAR ${fmtMB(xzFixture.narSize)}, ${xzFixture.blocks} blocks, last file ${fmtMB(xzFixture.lastSize)})`
    addRow({
      id: '11a',
      name: `${name} ${what} vs single-threaded \`xz -dc\` of the whole NAR, median of ${pairs.length} pairs`,
      unnar: fmtSpread(unnar),
      reference: fmtSpread(single),
      ratio: median(pairs),
      target: `≤ ${limit}×`,
      check: (r) => r <= limit,
    })
    addRow({
      id: '11b',
      name: `${name} vs \`xz -T0 -dc\` (every core) of the whole NAR, median of ${pairs.length} pairs`,
      unnar: fmtMs(median(unnar)),
      reference: fmtSpread(threaded),
      ratio: median(unnar.map((ms, i) => ms / threaded[i]!)),
      target: 'info',
    })
  } catch (err) {
    errorRow('11', name, `≤ ${limit}×`, err)
  }
}

/**
 * Row 13: the last file of a cold NAR from the HTTP upstream (bench/upstream-child.ts) against
 * `curl -s <NAR URL> | <decoder> -dc` from the same upstream, each run beside the other.
 */
async function benchColdHttp(): Promise<void> {
  const upstreamChild = await IpcChild.spawn(path.join(BENCH, 'upstream-child.ts'))
  try {
    for (const c of COMPRESSIONS) {
      const id = c === 'xz' ? '13a' : '13b'
      const name = `cold last file (${fmtMB(lastSize)}) of ≈100 MB NAR over an HTTP upstream, ${c}, vs \`curl -s | ${c} -dc\` of the NAR, median of per-pair ratios`
      if (!tools[c] || !(await hasTool('curl'))) {
        skipRow(id, name, '≤ 1.05×', `${c} or curl not installed`)
        continue
      }
      try {
        log(`row 13: cold last file over HTTP, ${c}`)
        const { url: upstream } = (await upstreamChild.request({ type: 'start', root: fixture.caches[c].dir })) as {
          url: string
        }
        const narUrl = `${upstream}/${path.relative(fixture.caches[c].dir, fixture.caches[c].narFile.big)}`
        await coldRequest(upstream, lastUrlPath, { waitForCommit: true }) // warm-up (JIT), not counted
        const unnar: number[] = []
        const ref: number[] = []
        for (let i = 0; i < (c === 'zstd' ? FAST_REPS : REPS); i++) {
          const measureUnnar = async () => {
            const r = await coldRequest(upstream, lastUrlPath, { waitForCommit: true, hash: true })
            if (r.sha256 !== lastSha) throw new Error(`unnar sent ${r.bytes} bytes that differ from ${fixture.lastRel}`)
            unnar.push(r.totalMs)
          }
          const measureCli = async () => {
            ref.push((await timeCommand('sh', ['-c', `curl -sf '${narUrl}' | ${c} -dc > /dev/null`])).ms)
          }
          if (i % 2 === 0) {
            await measureUnnar()
            await measureCli()
          } else {
            await measureCli()
            await measureUnnar()
          }
        }
        addRow({
          id,
          name,
          unnar: fmtSpread(unnar),
          reference: fmtSpread(ref),
          ratio: median(unnar.map((ms, i) => ms / ref[i]!)),
          target: '≤ 1.05×',
          check: (r) => r <= 1.05,
        })
      } catch (err) {
        errorRow(id, name, '≤ 1.05×', err)
      }
    }
  } finally {
    await upstreamChild.kill()
  }
}

/** Runs `use` against a fresh server on a fresh, empty cache directory, then stops it. */
async function withFreshServer<T>(
  upstream: string,
  use: (url: string, cacheDir: string) => Promise<T>,
  verify: 'strict' | 'stream' = 'strict',
): Promise<T> {
  const cacheDir = await freshDir('cold')
  const { url } = (await unnarChild.request({ type: 'start', upstream, cacheDir, verify })) as { url: string }
  try {
    return await use(url, cacheDir)
  } finally {
    await unnarChild.request({ type: 'stop' })
    await rm(cacheDir, { recursive: true, force: true })
  }
}

/** One cold request for `urlPath` on a fresh server and a fresh cache directory. */
async function coldRequest(
  upstream: string,
  urlPath: string,
  options: { waitForCommit: boolean; hash?: boolean; verify?: 'strict' | 'stream' },
) {
  return withFreshServer(
    upstream,
    async (url, cacheDir) => {
      const result = await fetchBody(url + urlPath, { hash: options.hash ?? false })
      if (result.status !== 200) throw new Error(`GET ${urlPath}: HTTP ${result.status}`)
      if (options.waitForCommit) await waitForCommit(cacheDir)
      return result
    },
    options.verify,
  )
}

/**
 * Row 8e: what the 200 clients alone cost: nginx answering them the same file, hot, from a plain
 * directory (each client on its own connection, as in row 8). No cold request for the last file
 * can end sooner than one cold request plus this.
 */
async function concurrentFloor(client: Client): Promise<number | undefined> {
  const name = `floor: ${CONCURRENT} concurrent requests (${client}) for the last file, hot, answered by nginx`
  if (!tools.nginx) {
    skipRow('8e', name, 'info', 'nginx not installed')
    return undefined
  }
  const root = path.join(WORK, 'nginx', 'floor')
  await rm(root, { recursive: true, force: true })
  await mkdir(root, { recursive: true })
  await copyFile(lastFile, path.join(root, 'last.bin'))
  const nginx = await startNginx(root)
  try {
    const times: number[] = []
    for (let i = 0; i <= FAST_REPS; i++) {
      const ms = await concurrentGets(`${nginx.url}/last.bin`, CONCURRENT, client)
      if (i > 0) times.push(ms) // the first round is a warm-up
    }
    const m = median(times)
    addRow({ id: '8e', name, unnar: '—', reference: fmtMs(m), ratio: undefined, target: 'info' })
    return m
  } catch (err) {
    errorRow('8e', name, 'info', err)
    return undefined
  } finally {
    await stopProcess(nginx.proc, 'SIGQUIT')
  }
}

/** Who sends row 8's requests: h2load when installed, else the bench's own Node client. */
type Client = 'h2load' | 'node'

/** `n` GETs of the last file at `url` at once, each on its own connection; the time, unless an answer is wrong. */
async function concurrentGets(url: string, n: number, client: Client): Promise<number> {
  if (client === 'h2load') {
    const r = await runH2load(url, n)
    if (r.ok !== n || r.bodyBytes !== n * lastSize)
      throw new Error(`h2load got ${r.ok} of ${n} 2xx answers with ${r.bodyBytes} body bytes, expected ${n * lastSize}`)
    return r.ms
  }
  const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity })
  const t0 = performance.now()
  const results = await Promise.all(Array.from({ length: n }, () => fetchBody(url, { agent })))
  const ms = performance.now() - t0
  const bad = results.filter((r) => r.status !== 200 || r.bytes !== lastSize)
  if (bad.length > 0)
    throw new Error(`${bad.length} of ${n} responses were wrong (e.g. HTTP ${bad[0]!.status}, ${bad[0]!.bytes} bytes)`)
  return ms
}

/** `n` cold requests at once (one, or many) for the last file on a fresh server: their time, and the NAR GETs the upstream saw until the commit. */
async function coldConcurrent(
  upstream: string,
  n: number,
  client: Client,
  countGets: () => Promise<number>,
): Promise<{ ms: number; gets: number }> {
  return withFreshServer(upstream, async (url, cacheDir) => {
    const before = await countGets()
    const ms = await concurrentGets(url + lastUrlPath, n, client)
    await waitForCommit(cacheDir)
    return { ms, gets: (await countGets()) - before }
  })
}

/** Rows 2 and 3: the last file of the cold NAR vs the CLI decompressor and vs `nix store cat`. */
async function benchColdLast(c: Compression): Promise<void> {
  const id = c === 'xz' ? '2' : '3'
  const cli = c === 'xz' ? 'xz' : 'zstd'
  const upstream = `file://${fixture.caches[c].dir}`
  const narFile = fixture.caches[c].narFile.big
  const name = `cold last file (${fmtMB(lastSize)}) of ≈100 MB NAR, ${c}`
  try {
    log(`row ${id}: cold last file, ${c}`)
    await coldRequest(upstream, lastUrlPath, { waitForCommit: true }) // warm-up (JIT), not counted
    const unnar: number[] = []
    const streamed: number[] = []
    const ref: number[] = []
    const nixCat: number[] = []
    for (let i = 0; i < (c === 'zstd' ? FAST_REPS : REPS); i++) {
      const measureUnnar = async () => {
        for (const verify of ['strict', 'stream'] as const) {
          const r = await coldRequest(upstream, lastUrlPath, { waitForCommit: true, hash: true, verify })
          if (r.sha256 !== lastSha) throw new Error(`unnar sent ${r.bytes} bytes that differ from ${fixture.lastRel}`)
          ;(verify === 'strict' ? unnar : streamed).push(r.totalMs)
        }
      }
      const measureCli = async () => {
        if (tools[cli]) ref.push((await timeCommand(cli, ['-dc', narFile])).ms)
      }
      // Whichever runs right after `nix store cat` is slower by a few percent (measured: the cold
      // zstd ratio was 1.24-1.27 with unnar always next, 1.11-1.19 with zstd always next), so the
      // two take turns going first.
      if (i % 2 === 0) {
        await measureUnnar()
        await measureCli()
      } else {
        await measureCli()
        await measureUnnar()
      }
      if (tools.nix) {
        const n = await timeCommand(
          'nix',
          ['store', 'cat', '--store', upstream, `${fixture.big.storePath}/${fixture.lastRel}`],
          { env: nixEnv, capture: true },
        )
        if (n.stdoutSha256 !== lastSha) throw new Error('nix store cat printed something else than the last file')
        nixCat.push(n.ms)
      }
    }
    const m = median(unnar)
    coldLast[c] = m
    const limit = 1.15
    if (tools[cli])
      addRow({
        id: `${id}a`,
        name: `${name} vs \`${cli} -dc\` of the whole NAR`,
        unnar: fmtSpread(unnar),
        reference: fmtSpread(ref),
        ratio: m / median(ref),
        target: `≤ ${limit}×`,
        check: (r) => r <= limit,
      })
    else skipRow(`${id}a`, `${name} vs \`${cli} -dc\``, `≤ ${limit}×`, `${cli} not installed`)
    if (tools.nix)
      addRow({
        id: `${id}b`,
        name: `${name} vs \`nix store cat\``,
        unnar: fmtMs(m),
        reference: fmtMs(median(nixCat)),
        ratio: m / median(nixCat),
        target: '< 1 (faster)',
        check: (r) => r < 1,
      })
    else skipRow(`${id}b`, `${name} vs \`nix store cat\``, '< 1 (faster)', 'nix not installed')
    if (tools[cli]) addRow({ id: `${id}c`, ...pairedRow(`row ${id}a`, `the \`${cli} -dc\` run beside it`, unnar, ref) })
    // What strict verification costs this file: its last byte waits for the NAR's NarHash.
    if (tools[cli])
      addRow({
        id: `${id}d`,
        name: `${name} with --verify stream vs \`${cli} -dc\``,
        unnar: fmtSpread(streamed),
        reference: fmtSpread(ref),
        ratio: median(streamed) / median(ref),
        target: 'info',
      })
  } catch (err) {
    errorRow(id, name, `≤ 1.15× / < 1`, err)
  }
}

/**
 * Rows 4b and 4c: what strict verification costs. The first file of the cold ≈100 MB xz NAR, whole:
 * in strict mode its last byte waits for the whole NAR's NarHash, in stream mode it does not; and
 * its first byte, which must not move. Strict and stream runs alternate.
 */
async function benchStrictCost(): Promise<void> {
  const name = 'cold FIRST file (xz) of ≈100 MB NAR'
  try {
    log('row 4b: strict vs stream verification, first file')
    const upstream = `file://${fixture.caches.xz.dir}`
    const runs: Record<'strict' | 'stream', { total: number[]; ttfb: number[] }> = {
      strict: { total: [], ttfb: [] },
      stream: { total: [], ttfb: [] },
    }
    for (let i = 0; i < FAST_REPS; i++) {
      for (const verify of i % 2 === 0 ? (['strict', 'stream'] as const) : (['stream', 'strict'] as const)) {
        const r = await coldRequest(upstream, firstUrlPath, { waitForCommit: false, hash: true, verify })
        if (r.sha256 !== firstSha) throw new Error(`unnar sent ${r.bytes} bytes that differ from ${fixture.firstRel}`)
        runs[verify].total.push(r.totalMs)
        runs[verify].ttfb.push(r.ttfbMs)
      }
    }
    const { strict, stream } = runs
    addRow({
      id: '4b',
      name: `${name}, complete: --verify strict vs stream (the last byte waits for the NAR's NarHash)`,
      unnar: fmtSpread(strict.total),
      reference: fmtSpread(stream.total),
      ratio: median(strict.total) / median(stream.total),
      target: 'info',
    })
    addRow({
      id: '4c',
      name: `${name}, time to first byte: --verify strict vs stream`,
      unnar: fmtMs(median(strict.ttfb)),
      reference: fmtMs(median(stream.ttfb)),
      ratio: median(strict.ttfb) / median(stream.ttfb),
      target: '≤ 1.2×',
      check: (r) => r <= 1.2,
    })
  } catch (err) {
    errorRow('4b', name, 'info / ≤ 1.2×', err)
  }
}

/** Row 4: first byte of the first file vs the whole last file, both cold, xz. */
async function benchFirstByte(): Promise<void> {
  const name = 'cold TTFB of the FIRST file (xz) vs cold last file (row 2a)'
  try {
    log('row 4: time to first byte of the first file')
    const upstream = `file://${fixture.caches.xz.dir}`
    const ttfb: number[] = []
    for (let i = 0; i < FAST_REPS; i++) {
      // The server is stopped right after the response, which aborts the rest of the download.
      const r = await coldRequest(upstream, firstUrlPath, { waitForCommit: false })
      ttfb.push(r.ttfbMs)
    }
    const last = coldLast.xz
    if (last === undefined) throw new Error('row 2 did not produce a cold last-file time')
    const m = median(ttfb)
    addRow({
      id: '4',
      name,
      unnar: fmtMs(m),
      reference: fmtMs(last),
      ratio: m / last,
      target: '≤ 0.1×',
      check: (r) => r <= 0.1,
    })
  } catch (err) {
    errorRow('4', name, '≤ 0.1×', err)
  }
}

/**
 * Row 8: many cold requests on one NAR through an HTTP upstream: one NAR GET, little extra time.
 * Single and concurrent runs use the same client; row 8i repeats 8d with the bench's own Node
 * client, whose CPU on the same two cores is part of what it measures.
 */
async function benchConcurrent(): Promise<void> {
  const upstreamChild = await IpcChild.spawn(path.join(BENCH, 'upstream-child.ts'))
  const narGets = '^/nar/[^/]+\\.nar(\\.[a-z0-9]+)?$'
  const client: Client = tools.h2load ? 'h2load' : 'node'
  const floor = await concurrentFloor(client)
  try {
    for (const c of COMPRESSIONS) {
      const name = `${CONCURRENT} concurrent cold requests (${client}), last file, HTTP upstream, ${c}`
      try {
        log(`row 8: ${CONCURRENT} concurrent cold requests, ${c}`)
        const { url: upstream } = (await upstreamChild.request({ type: 'start', root: fixture.caches[c].dir })) as {
          url: string
        }
        const count = async () =>
          ((await upstreamChild.request({ type: 'count', pattern: narGets })) as { n: number }).n
        const reps = c === 'zstd' ? FAST_REPS : REPS
        const single: number[] = []
        const many: number[] = []
        const gets: number[] = []
        await coldConcurrent(upstream, 1, client, count) // warm-up (JIT) of the single and the concurrent path, not counted
        await coldConcurrent(upstream, CONCURRENT, client, count)
        for (let i = 0; i < reps; i++) {
          single.push((await coldConcurrent(upstream, 1, client, count)).ms)
          const run = await coldConcurrent(upstream, CONCURRENT, client, count)
          many.push(run.ms)
          gets.push(run.gets)
        }
        const maxGets = Math.max(...gets)
        addRow({
          id: `8${c === 'xz' ? 'a' : 'c'}`,
          name: `${name}: upstream NAR GETs`,
          unnar: gets.join(', '),
          reference: '1 per run',
          ratio: maxGets,
          target: '= 1',
          check: (r) => r === 1,
        })
        const m = median(many)
        addRow({
          id: `8${c === 'xz' ? 'b' : 'd'}`,
          name: `${name}: wall time vs 1 cold request`,
          unnar: fmtSpread(many),
          reference: fmtSpread(single),
          ratio: m / median(single),
          target: '≤ 1.2×',
          check: (r) => r <= 1.2,
        })
        addRow({
          id: c === 'xz' ? '8g' : '8h',
          ...pairedRow(`row 8${c === 'xz' ? 'b' : 'd'}`, 'the single cold request before it', many, single),
        })
        if (c === 'zstd' && floor !== undefined) {
          addRow({
            id: '8f',
            name: `${name}: wall time vs 1 cold request + the floor of row 8e`,
            unnar: fmtMs(m),
            reference: `${fmtMs(median(single))} + ${fmtMs(floor)}`,
            ratio: m / (median(single) + floor),
            target: 'info',
          })
        }
        if (c === 'zstd') await benchConcurrentNodeClient(upstream, client, count)
      } catch (err) {
        errorRow(`8${c === 'xz' ? 'a' : 'c'}`, name, '= 1 GET, ≤ 1.2×', err)
      }
    }
  } finally {
    await upstreamChild.kill()
  }
}

/**
 * Row 8i: row 8d again with the bench's own Node client, in rounds of its own after h2load's
 * (alternating with h2load's runs, the Node client's ratio came out 1.6–1.8× against 1.3–1.4× in
 * rounds of its own, for reasons not found).
 */
async function benchConcurrentNodeClient(
  upstream: string,
  client: Client,
  countGets: () => Promise<number>,
): Promise<void> {
  const name = "row 8d with the bench's own Node client (`http.Agent`, in the bench process)"
  if (client === 'node') {
    skipRow('8i', name, 'info', 'h2load not installed: rows 8a–8h use the Node client')
    return
  }
  try {
    const single: number[] = []
    const many: number[] = []
    await coldConcurrent(upstream, 1, 'node', countGets) // warm-up, not counted
    await coldConcurrent(upstream, CONCURRENT, 'node', countGets)
    for (let i = 0; i < FAST_REPS; i++) {
      single.push((await coldConcurrent(upstream, 1, 'node', countGets)).ms)
      const run = await coldConcurrent(upstream, CONCURRENT, 'node', countGets)
      if (run.gets !== 1)
        throw new Error(`${CONCURRENT} requests from the Node client caused ${run.gets} upstream NAR GETs`)
      many.push(run.ms)
    }
    addRow({
      id: '8i',
      name: `${name} instead of ${client}`,
      unnar: fmtSpread(many),
      reference: fmtSpread(single),
      ratio: median(many) / median(single),
      target: 'info',
    })
  } catch (err) {
    errorRow('8i', name, 'info', err)
  }
}

/** Row 5: peak RSS of a fresh `unnar` process serving the cold 100 MB NAR. */
async function benchRss(): Promise<void> {
  for (const c of COMPRESSIONS) {
    const name = `peak RSS (VmHWM) of a fresh unnar process serving the cold ≈100 MB NAR, ${c}`
    try {
      log(`row 5: peak RSS, ${c}`)
      const cacheDir = await freshDir('rss')
      const unnar = await spawnUnnar(`file://${fixture.caches[c].dir}`, cacheDir)
      try {
        const idle = await memoryOf(unnar.proc.pid!)
        const r = await fetchBody(unnar.url + lastUrlPath)
        if (r.status !== 200 || r.bytes !== lastSize)
          throw new Error(`GET ${lastUrlPath}: HTTP ${r.status}, ${r.bytes} bytes`)
        await waitForCommit(cacheDir)
        const { hwm } = await memoryOf(unnar.proc.pid!)
        addRssRow(`5${c === 'xz' ? 'a' : 'b'}`, name, hwm, `${fmtMB(hwm)} (idle ${fmtMB(idle.rss)})`)
      } finally {
        await stopProcess(unnar.proc)
        await rm(cacheDir, { recursive: true, force: true })
        noteLog(`row 5 (${c})`, unnar.logLines)
      }
    } catch (err) {
      errorRow(`5${c === 'xz' ? 'a' : 'b'}`, name, '< 200 MiB', err)
    }
  }
}

/** Rows 6 and 7: hot files, unnar (its own process) vs nginx on the same files, measured by wrk. */
async function benchHot(): Promise<void> {
  const names = {
    small: `hot small file (${((await readFile(path.join(fixture.big.tree, fixture.firstRel))).length / 1024).toFixed(1)} KiB), \`wrk -t2 -c64 -d${WRK_SECONDS}s\`, vs nginx`,
    huge: `hot 64 MiB file throughput, \`wrk -t2 -c4 -d${WRK_SECONDS}s\`, vs nginx`,
    disk: `hot 64 MiB file from the cached NAR on disk (\`--memory-cache-size 0\`), \`wrk -t2 -c4 -d${WRK_SECONDS}s\`, vs nginx, median of ${HOT_ROUNDS} rounds' ratios`,
  }
  const missing = !tools.wrk ? 'wrk not installed' : !tools.nginx ? 'nginx not installed' : undefined
  if (missing !== undefined) {
    skipRow('6', names.small, '≥ 0.5×', missing)
    skipRow('7', names.huge, '≥ 0.8×', missing)
    skipRow('7b', names.disk, '≥ 0.85×', missing)
    return
  }
  log('rows 6-7: hot files under wrk')
  const cacheDir = await freshDir('hot')
  const diskCacheDir = await freshDir('hot-disk')
  const root = path.join(WORK, 'nginx', 'root')
  await rm(root, { recursive: true, force: true })
  await mkdir(root, { recursive: true })
  await copyFile(path.join(fixture.big.tree, fixture.firstRel), path.join(root, 'aaa-first.txt'))
  await copyFile(path.join(fixture.huge.tree, fixture.hugeRel), path.join(root, 'big.bin'))
  let unnar: UnnarProcess | undefined
  let unnarDisk: UnnarProcess | undefined
  let nginx: Awaited<ReturnType<typeof startNginx>> | undefined
  let bare: Awaited<ReturnType<typeof startBareHttp>> | undefined
  try {
    unnar = await spawnUnnar(`file://${fixture.caches.zstd.dir}`, cacheDir)
    nginx = await startNginx(root)
    // Make both NARs hot (downloaded, verified, committed), then check both servers send the same bytes.
    await fetchBody(unnar.url + firstUrlPath)
    await fetchBody(unnar.url + hugeUrlPath)
    await waitForCommit(cacheDir, 2)
    // Row 7b: an unnar without memory for hot files reads the file from its cached NAR every time.
    unnarDisk = await spawnUnnar(`file://${fixture.caches.zstd.dir}`, diskCacheDir, {
      args: ['--memory-cache-size', '0'],
    })
    await fetchBody(unnarDisk.url + hugeUrlPath)
    await waitForCommit(diskCacheDir, 1)
    const targets = [
      {
        key: 'small' as const,
        unnarUrl: unnar.url + firstUrlPath,
        nginxUrl: `${nginx.url}/aaa-first.txt`,
        connections: 64,
      },
      { key: 'huge' as const, unnarUrl: unnar.url + hugeUrlPath, nginxUrl: `${nginx.url}/big.bin`, connections: 4 },
      {
        key: 'disk' as const,
        unnarUrl: unnarDisk.url + hugeUrlPath,
        nginxUrl: `${nginx.url}/big.bin`,
        connections: 4,
      },
    ]
    for (const t of targets) {
      const [a, b] = await Promise.all([fetchBody(t.unnarUrl, { hash: true }), fetchBody(t.nginxUrl, { hash: true })])
      if (a.status !== 200 || b.status !== 200 || a.sha256 !== b.sha256)
        throw new Error(`unnar and nginx disagree on ${t.key} (HTTP ${a.status}/${b.status})`)
    }
    // Row 6b's server: unnar's own headers for the small file, without the per-request ones.
    const smallHeaders: string[] = []
    await new Promise<void>((resolve, reject) => {
      http
        .get(targets[0]!.unnarUrl, (res) => {
          for (let i = 0; i < res.rawHeaders.length; i += 2) {
            const name = res.rawHeaders[i]!
            if (!['date', 'connection', 'keep-alive', 'x-request-id'].includes(name.toLowerCase()))
              smallHeaders.push(name, res.rawHeaders[i + 1]!)
          }
          res.resume().on('end', resolve)
        })
        .on('error', reject)
    })
    bare = await startBareHttp(path.join(root, 'aaa-first.txt'), smallHeaders)
    for (const t of targets) {
      const id = t.key === 'small' ? '6' : t.key === 'huge' ? '7' : '7b'
      try {
        // 1 s warm-up each, then HOT_ROUNDS rounds of one measured run each, alternating: a single
        // pair of runs moved by ±20% on this shared two-core machine. The round with the median
        // ratio is reported.
        const bareUrl = t.key === 'small' ? `${bare.url}/` : undefined
        for (const url of [t.unnarUrl, t.nginxUrl, ...(bareUrl === undefined ? [] : [bareUrl])])
          await runWrk(url, 2, t.connections, 1)
        const rounds: Array<{ u: WrkResult; n: WrkResult; b: WrkResult | undefined; ratio: number }> = []
        for (let round = 0; round < HOT_ROUNDS; round++) {
          const u = await runWrk(t.unnarUrl, 2, t.connections, WRK_SECONDS)
          const n = await runWrk(t.nginxUrl, 2, t.connections, WRK_SECONDS)
          const b = bareUrl === undefined ? undefined : await runWrk(bareUrl, 2, t.connections, WRK_SECONDS)
          checkWrk(u, 'unnar')
          checkWrk(n, 'nginx')
          if (b !== undefined) checkWrk(b, 'bare node:http')
          rounds.push({ u, n, b, ratio: t.key === 'small' ? u.reqPerSec / n.reqPerSec : u.bytesPerSec / n.bytesPerSec })
        }
        rounds.sort((x, y) => x.ratio - y.ratio)
        const { u, n, b } = rounds[Math.floor(rounds.length / 2)]!
        if (t.key === 'small') {
          addRow({
            id,
            name: names.small,
            unnar: `${fmtReqs(u.reqPerSec)} (p99 ${fmtMs(u.p99Ms)})`,
            reference: `${fmtReqs(n.reqPerSec)} (p99 ${fmtMs(n.p99Ms)})`,
            ratio: u.reqPerSec / n.reqPerSec,
            target: '≥ 0.5×',
            check: (r) => r >= 0.5,
          })
          addRow({
            id: '6b',
            name: 'ceiling of node:http: the same headers and bytes from a bare `node:http` handler (bench/bare-http-server.ts), same round as row 6, vs nginx',
            unnar: `${fmtReqs(b!.reqPerSec)} (bare node:http)`,
            reference: fmtReqs(n.reqPerSec),
            ratio: b!.reqPerSec / n.reqPerSec,
            target: 'info',
          })
          addRow({
            id: '6c',
            name: 'row 6, unnar vs the bare node:http handler of row 6b',
            unnar: fmtReqs(u.reqPerSec),
            reference: fmtReqs(b!.reqPerSec),
            ratio: u.reqPerSec / b!.reqPerSec,
            target: 'info',
          })
        } else if (t.key === 'disk') {
          addRow({
            id,
            name: names.disk,
            unnar: fmtRate(u.bytesPerSec),
            reference: fmtRate(n.bytesPerSec),
            ratio: median(rounds.map((r) => r.ratio)),
            target: '≥ 0.85×',
            check: (r) => r >= 0.85,
          })
        } else {
          addRow({
            id,
            name: names.huge,
            unnar: fmtRate(u.bytesPerSec),
            reference: fmtRate(n.bytesPerSec),
            ratio: u.bytesPerSec / n.bytesPerSec,
            target: '≥ 0.8×',
            check: (r) => r >= 0.8,
          })
        }
      } catch (err) {
        errorRow(id, names[t.key], t.key === 'small' ? '≥ 0.5×' : t.key === 'huge' ? '≥ 0.8×' : '≥ 0.85×', err)
      }
    }
  } catch (err) {
    errorRow('6', names.small, '≥ 0.5×', err)
    errorRow('7', names.huge, '≥ 0.8×', err)
  } finally {
    if (unnar !== undefined) {
      await stopProcess(unnar.proc)
      noteLog('rows 6-7', unnar.logLines)
    }
    if (unnarDisk !== undefined) {
      await stopProcess(unnarDisk.proc)
      noteLog('row 7b', unnarDisk.logLines)
    }
    if (nginx !== undefined) await stopProcess(nginx.proc, 'SIGQUIT')
    if (bare !== undefined) await stopProcess(bare.proc)
    await rm(cacheDir, { recursive: true, force: true })
    await rm(diskCacheDir, { recursive: true, force: true })
  }
}

/** Row 5c: peak RSS of a fresh `unnar` process serving the last file of a cold ≈1 GB NAR. */
async function benchGbRss(): Promise<void> {
  const name = 'peak RSS (VmHWM) of a fresh unnar process serving the cold ≈1 GB NAR (last file), zstd'
  try {
    log('row 5c: peak RSS, 1 GB NAR')
    const gb = await prepareGbFixture(WORK, log)
    const narFile = path.join(
      gb.cache,
      /^URL: (.*)$/m.exec(
        await readFile(path.join(gb.cache, `${path.basename(gb.storePath).slice(0, 32)}.narinfo`), 'utf8'),
      )![1]!,
    )
    await readFile(narFile) // into the page cache, like the other rows' NARs
    const cacheDir = await freshDir('rss-gb')
    const unnar = await spawnUnnar(`file://${gb.cache}`, cacheDir)
    try {
      const idle = await memoryOf(unnar.proc.pid!)
      const r = await fetchBody(`${unnar.url}/nix/store/${path.basename(gb.storePath)}/${gb.lastRel}`)
      if (r.status !== 200 || r.bytes !== gb.lastSize)
        throw new Error(`GET ${gb.lastRel}: HTTP ${r.status}, ${r.bytes} bytes`)
      await waitForCommit(cacheDir, 1, 300_000)
      const { hwm } = await memoryOf(unnar.proc.pid!)
      addRssRow(
        '5c',
        `${name} (NAR ${fmtMB(gb.narSize)}, zstd ${fmtMB(gb.fileSize)})`,
        hwm,
        `${fmtMB(hwm)} (idle ${fmtMB(idle.rss)}; ${fmtMs(r.totalMs)})`,
      )
    } finally {
      await stopProcess(unnar.proc)
      await rm(cacheDir, { recursive: true, force: true })
      noteLog('row 5c', unnar.logLines)
    }
  } catch (err) {
    errorRow('5c', name, '< 200 MiB', err)
  }
}

/**
 * Row 10: a mixed soak. wrk with 256 connections: 90% of requests for SOAK_HOT_PATHS hot files,
 * 10% walking through ≈1500 small store paths; the cache is SOAK_CACHE_SIZE, far less than those
 * NARs, so the walk keeps downloading NARs that were evicted (cold) while the hot ones stay.
 */
async function benchSoak(): Promise<void> {
  const names = {
    errors: `mixed soak, \`wrk -t2 -c${SOAK_CONNECTIONS} -d${SOAK_SECONDS}s\`, 90% hot / 10% cold small files, cache ${SOAK_CACHE_SIZE}: errors`,
    rss: `mixed soak (row 10a): RSS at the end vs RSS after ${SOAK_BASELINE_SECONDS} s`,
  }
  if (!tools.wrk) {
    skipRow('10a', names.errors, '0', 'wrk not installed')
    skipRow('10b', names.rss, '≤ 1.2×', 'wrk not installed')
    return
  }
  try {
    log(`row 10: mixed soak for ${SOAK_SECONDS} s`)
    const soak = await prepareSoakFixture(WORK, log)
    const url = (base: string) => `/nix/store/${base}/${soak.fileRel}`
    const pathsFile = path.join(WORK, 'soak-paths.txt')
    const hot = soak.storePaths.slice(0, SOAK_HOT_PATHS)
    const cold = soak.storePaths.slice(SOAK_HOT_PATHS)
    await writeFile(
      pathsFile,
      [...hot.map((p) => `hot ${url(p)}`), ...cold.map((p) => `cold ${url(p)}`)].join('\n') + '\n',
    )
    // wrk takes one script: the request mix with the report's done() appended.
    const script = path.join(WORK, 'wrk-soak.gen.lua')
    await writeFile(
      script,
      (await readFile(path.join(BENCH, 'wrk-soak.lua'), 'utf8')) +
        '\n' +
        (await readFile(path.join(BENCH, 'wrk-report.lua'), 'utf8')),
    )
    const cacheDir = await freshDir('soak')
    const unnar = await spawnUnnar(`file://${soak.cache}`, cacheDir, { cacheSize: SOAK_CACHE_SIZE })
    try {
      for (const p of hot) {
        const r = await fetchBody(unnar.url + url(p))
        if (r.status !== 200) throw new Error(`GET ${url(p)}: HTTP ${r.status}`)
      }
      const pid = unnar.proc.pid!
      const started = performance.now()
      let baseline: number | undefined
      let last = 0
      const sampler = setInterval(() => {
        void memoryOf(pid).then(
          ({ rss }) => {
            last = rss
            if (baseline === undefined && performance.now() - started >= SOAK_BASELINE_SECONDS * 1000) baseline = rss
          },
          () => {},
        )
      }, 1000)
      let w: WrkResult
      try {
        w = await runWrk(unnar.url + url(hot[0]!), 2, SOAK_CONNECTIONS, SOAK_SECONDS, { script, args: [pathsFile] })
      } finally {
        clearInterval(sampler)
      }
      if (w.requests === 0) throw new Error('wrk completed no request')
      // wrk hangs up mid-request at its deadline; let the downloads it started finish before the stop.
      await sleep(2000)
      const cached = (await readdir(path.join(cacheDir, 'nar'))).filter((n) => n.endsWith('.nar')).length
      addRow({
        id: '10a',
        name: names.errors,
        unnar: `${w.errors} errors (${w.errorDetail}); ${fmtReqs(w.reqPerSec)}, p99 ${fmtMs(w.p99Ms)}; ${cached} NARs cached at the end`,
        reference: '0 errors',
        ratio: w.errors,
        target: '= 0',
        check: (r) => r === 0,
      })
      if (baseline === undefined) throw new Error('no RSS sample after the baseline time')
      addRow({
        id: '10b',
        name: names.rss,
        unnar: `${fmtMB(last)} at the end`,
        reference: `${fmtMB(baseline)} after ${SOAK_BASELINE_SECONDS} s`,
        ratio: last / baseline,
        target: '≤ 1.2×',
        check: (r) => r <= 1.2,
      })
    } finally {
      await stopProcess(unnar.proc)
      await rm(cacheDir, { recursive: true, force: true })
      noteLog('row 10', unnar.logLines)
    }
  } catch (err) {
    errorRow('10', names.errors, '0 errors, ≤ 1.2×', err)
  }
}

/** Anything unnar logged at warn or above while it should have been serving happily goes into the notes. */

/**
 * Row 12: one request for every regular file of the crawl fixture's store paths and the ≈1 GB NAR
 * (each NAR cold once, then its files hot from disk or memory), eight at a time, with the default
 * memory cache: peak RSS against that cache's size plus 120 MB, and RSS at the end against RSS
 * halfway through.
 */
async function benchCrawl(): Promise<void> {
  const name = 'crawl: every file of real store paths, default memory cache (128 MiB)'
  const limit = CRAWL_MEMORY_CACHE + 120 * 1000 * 1000
  try {
    log('row 12: crawl')
    const crawl = await prepareCrawlFixture(WORK, log)
    const gb = await prepareGbFixture(WORK, log)
    const files: string[] = []
    const narSizes: number[] = []
    const sources = [
      ...crawl.storePaths.map((p) => ({ cache: crawl.cache, base: p })),
      { cache: gb.cache, base: path.basename(gb.storePath) },
    ]
    for (const { cache, base } of sources) {
      const hash = base.slice(0, 32)
      const listing = JSON.parse(await readFile(path.join(cache, `${hash}.ls`), 'utf8')) as { root: CrawlNode }
      const before = files.length
      listRegular(listing.root, `/nix/store/${base}`, files)
      if (files.length === before) files.push(`/nix/store/${base}`)
      narSizes.push(Number(/^NarSize: (\d+)$/m.exec(await readFile(path.join(cache, `${hash}.narinfo`), 'utf8'))![1]))
    }
    const cacheDir = await freshDir('crawl')
    const unnar = await spawnUnnar(`file://${crawl.cache} file://${gb.cache}`, cacheDir)
    try {
      const agent = new http.Agent({ keepAlive: true, maxSockets: CRAWL_CONCURRENCY })
      const pid = unnar.proc.pid!
      let next = 0
      let failed = 0
      let midpoint: number | undefined
      const started = performance.now()
      const worker = async () => {
        while (next < files.length) {
          const i = next++
          const r = await fetchBody(unnar.url + files[i]!, { agent })
          if (r.status !== 200) failed++
          if (i === Math.floor(files.length / 2)) midpoint = (await memoryOf(pid)).rss
        }
      }
      await Promise.all(Array.from({ length: CRAWL_CONCURRENCY }, worker))
      const seconds = (performance.now() - started) / 1000
      agent.destroy()
      const end = await memoryOf(pid)
      if (failed > 0) throw new Error(`${failed} of ${files.length} requests failed`)
      const what = `${files.length.toLocaleString('en-US')} files of ${sources.length} NARs up to ${fmtMB(Math.max(...narSizes))}, ${CRAWL_CONCURRENCY} at a time, ${seconds.toFixed(0)} s`
      addRow({
        id: '12a',
        name: `${name}: peak RSS (VmHWM) vs the memory cache + 120 MB (${what})`,
        unnar: fmtMB(end.hwm),
        reference: `${fmtMB(limit)} (128 MiB + 120 MB)`,
        ratio: end.hwm / limit,
        target: '≤ 1',
        check: (r) => r <= 1,
      })
      addRow({
        id: '12b',
        name: `${name}: RSS at the end vs RSS halfway`,
        unnar: `${fmtMB(end.rss)} at the end`,
        reference: `${fmtMB(midpoint!)} halfway`,
        ratio: end.rss / midpoint!,
        target: '≤ 1.1×',
        check: (r) => r <= 1.1,
      })
    } finally {
      await stopProcess(unnar.proc)
      await rm(cacheDir, { recursive: true, force: true })
      noteLog('row 12', unnar.logLines)
    }
  } catch (err) {
    errorRow('12', name, '≤ 1', err)
  }
}

type CrawlNode =
  | { type: 'regular'; size: number }
  | { type: 'symlink'; target: string }
  | { type: 'directory'; entries: Record<string, CrawlNode> }

/** The URL paths of every regular file under `node`, in NAR order. */
function listRegular(node: CrawlNode, at: string, out: string[]): void {
  if (node.type === 'regular') out.push(at)
  else if (node.type === 'directory')
    for (const name of Object.keys(node.entries).sort())
      listRegular(node.entries[name]!, `${at}/${encodeURIComponent(name)}`, out)
}

function noteLog(where: string, lines: readonly string[]): void {
  const summary = summarizeLog(lines)
  if (summary.length > 0) notes.push(`unnar logged during ${where}: ${summary.join('; ')}`)
}

function checkWrk(r: WrkResult, who: string): void {
  if (r.requests === 0) throw new Error(`wrk completed no request against ${who}`)
  if (r.errors > 0) notes.push(`wrk saw ${r.errors} socket/status errors against ${who}`)
}

// ───────────────────────────── report ─────────────────────────────

async function describeMachine(): Promise<string[]> {
  const cpuinfo = await readFile('/proc/cpuinfo', 'utf8').catch(() => '')
  const model = /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1]?.trim() ?? 'unknown'
  const version = (cmd: string, args: string[]) => (tools[cmd] ? versionOf(cmd, args) : 'not installed')
  return [
    `nproc: ${availableParallelism()}`,
    `CPU: ${model}`,
    `node: ${process.version}`,
    `load average at start: ${loadavg()[0]!.toFixed(2)}`,
    // Run under `nice -n -15` on a machine shared with other work: the references inherit it too.
    `nice: ${getPriority()}`,
    `nix: ${version('nix', ['--version'])}`,
    `xz: ${version('xz', ['--version'])}`,
    `zstd: ${version('zstd', ['--version'])}`,
    `wrk: ${version('wrk', ['--version'])}`,
    `nginx: ${version('nginx', ['-v'])}`,
    `h2load: ${version('h2load', ['--version'])}`,
  ]
}

function versionOf(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' })
  const text = `${r.stdout ?? ''}${r.stderr ?? ''}`
  return /\d+\.\d+(\.\d+)?/.exec(text)?.[0] ?? 'unknown'
}

function renderReport(seconds: number): string {
  const cell = (s: string) => s.replace(/\|/g, '\\|')
  const lines = [
    '# unnar benchmarks',
    '',
    `Measured ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC in ${seconds.toFixed(0)} s. Reproduce: \`npm run bench\` in the repository root (BENCH_REPS=${REPS}, BENCH_WRK_SECONDS=${WRK_SECONDS}).`,
    '',
    `Machine: ${machine.join(', ')}.`,
    '',
    `Fixture ${fixture.key}: \`${bigName}\`, NAR ${fmtMB(fixture.big.narSize)} of real shared libraries (xz ${fmtMB(fixture.caches.xz.fileSize.big)}, zstd ${fmtMB(fixture.caches.zstd.fileSize.big)}), first file \`${fixture.firstRel}\`, last file \`${fixture.lastRel}\` (${fmtMB(lastSize)}); \`${hugeName}\`: one 64 MiB file. Times are medians of ${REPS} runs (${FAST_REPS} for sub-second ones: rows 1, 3, 4, 8 zstd), after a warm-up (rows 2a, 3a, 8b, 8d, 8i add the fastest and slowest run in parentheses; rows 2c, 3c, 8g, 8h give the median of per-run ratios instead); cold = fresh server and empty cache directory, compressed NARs in the page cache; "ratio" = unnar ÷ reference.`,
    '',
    '| # | benchmark | unnar | reference | ratio | target | met? |',
    '|---|---|---|---|---|---|---|',
    ...[...rows]
      .sort((a, b) => a.id.localeCompare(b.id, 'en', { numeric: true }))
      .map(
        (r) =>
          `| ${r.id} | ${cell(r.name)} | ${cell(r.unnar)} | ${cell(r.reference)} | ${r.ratio === undefined ? '—' : Number.isInteger(r.ratio) ? String(r.ratio) : r.ratio.toFixed(2) + '×'} | ${cell(r.target)} | ${r.verdict === 'NO' ? '**NO**' : r.verdict} |`,
      ),
    '',
  ]
  if (cpuOthers !== undefined) {
    const share = cpuOthers / (seconds * availableParallelism())
    const text = `Other processes used ${cpuOthers.toFixed(0)} CPU-seconds during the run (${(share * 100).toFixed(0)}% of the machine).`
    lines.push(share > 0.1 ? `**Warning:** ${text} The numbers are noisy; rerun on a quiet machine.` : text, '')
  }
  const missed = rows.filter((r) => r.verdict === 'NO' || r.verdict === 'error')
  const skipped = rows.filter((r) => r.verdict === 'skipped')
  if (missed.length > 0)
    lines.push(
      `**Targets missed (${missed.length}):** ${missed.map((r) => `${r.id} (${r.verdict === 'error' ? 'error' : r.ratio?.toFixed(2) + '× vs ' + r.target})`).join('; ')}.`,
      '',
    )
  else lines.push('All measured targets met.', '')
  if (skipped.length > 0)
    lines.push(`Skipped: ${skipped.map((r) => `${r.id} (${r.reference.replace(/^skipped: /, '')})`).join('; ')}.`, '')
  for (const note of notes) lines.push(`- ${note}`)
  if (notes.length > 0) lines.push('')
  return lines.join('\n')
}
