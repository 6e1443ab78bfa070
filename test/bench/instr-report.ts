// The report of `npm run bench:instr`: Markdown tables ready to paste into BENCHMARKS.md, with the
// raw callgrind summaries beside every figure so a reader can recompute it.
import type { Row } from './instr-rows.ts'

/** Count is one row counted once: the summaries of its two runs and the cost per request they give. */
export interface Count {
  row: Row
  /** repetition numbers the counts of one row from 1 (--repeat). */
  repetition: number
  summaries: { n1: number; n2: number }
  /** seconds are the runs' wall times, spawn to exit. */
  seconds?: { n1: number; n2: number }
  perRequest: number
  /** perIdleSecond is what the server runs per second idle, from its idle run; undefined without one. */
  perIdleSecond?: number | undefined
}

/** perRequest returns (summary2 - summary1) / (n2 - n1): the instructions of one request, start-up and exit cancelled out. */
export function perRequest(summaries: { n1: number; n2: number }, n1: number, n2: number): number {
  return (summaries.n2 - summaries.n1) / (n2 - n1)
}

const thousands = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 })

function formatCount(n: number): string {
  return thousands.format(n)
}

function name(count: Count, repeated: boolean): string {
  return repeated ? `${count.row.id} #${count.repetition}` : count.row.id
}

function describeEnv(row: Row): string {
  const pairs = Object.entries(row.env).map(([key, value]) => `${key}=${value}`)
  return pairs.length === 0 ? (row.server === 'bare' ? '' : 'default') : pairs.join(' ')
}

/** bareFor returns the bare count a service count compares with: same connections, same repetition. */
export function bareFor(count: Count, counts: Count[]): Count | undefined {
  return counts.find(
    (c) => c.row.server === 'bare' && c.row.connections === count.row.connections && c.repetition === count.repetition,
  )
}

/** ratioToBare returns count's instructions per request over bare's, or undefined when bare was not counted. */
export function ratioToBare(count: Count, counts: Count[]): number | undefined {
  const bare = bareFor(count, counts)
  return bare === undefined ? undefined : count.perRequest / bare.perRequest
}

/** formatTable returns the default table: one line per row (per repetition with --repeat). */
export function formatTable(counts: Count[], n1: number, n2: number): string[] {
  const repeated = counts.some((count) => count.repetition > 1)
  const lines = [
    `| row | server | connections | stdout | env | instructions per request | ratio to bare | summary, ${n1} requests | summary, ${n2} requests |`,
    '| --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: |',
  ]
  for (const count of counts) {
    const { row } = count
    const ratio = row.server === 'bare' ? undefined : ratioToBare(count, counts)
    lines.push(
      `| ${name(count, repeated)} | ${row.server} | ${row.connections} | ${row.stdout} | ${describeEnv(row)} | ${formatCount(count.perRequest)} | ${ratio === undefined ? '' : `${ratio.toFixed(3)}×`} | ${formatCount(count.summaries.n1)} | ${formatCount(count.summaries.n2)} |`,
    )
  }
  return lines
}

/** formatAblation returns the knock-out table: what each feature's removal saves per request against the unpatched build. */
export function formatAblation(counts: Count[], n1: number, n2: number): string[] {
  const repeated = counts.some((count) => count.repetition > 1)
  const lines = [
    `| knock-out | what it removes | instructions per request | saved per request | saved | summary, ${n1} requests | summary, ${n2} requests |`,
    '| --- | --- | ---: | ---: | ---: | ---: | ---: |',
  ]
  for (const count of counts) {
    const { row } = count
    const base = counts.find((c) => c.row.id === 'unpatched' && c.repetition === count.repetition)
    const saved = base === undefined || row.id === 'unpatched' ? undefined : base.perRequest - count.perRequest
    const removes =
      row.knockout?.removes ??
      (row.id === 'unpatched' ? 'nothing: the build as it is' : `no patch: ${describeEnv(row)}`)
    lines.push(
      `| ${name(count, repeated)} | ${removes} | ${formatCount(count.perRequest)} | ${saved === undefined ? '' : formatCount(saved)} | ${saved === undefined || base === undefined ? '' : `${((100 * saved) / base.perRequest).toFixed(1)} %`} | ${formatCount(count.summaries.n1)} | ${formatCount(count.summaries.n2)} |`,
    )
  }
  return lines
}

/**
 * formatTimeDriven returns, for the counts with an idle run, what the server runs per second idle
 * and how much of its per-request figure that work could make: per idle second × (the N2 run's
 * wall time - the N1 run's) / (N2 - N1). Under callgrind a request takes milliseconds of wall
 * time, natively microseconds, so there that part all but vanishes. An estimate: busy, a timer
 * may cost less per run than idle.
 */
export function formatTimeDriven(counts: Count[], n1: number, n2: number): string[] {
  const measured = counts.filter((count) => count.perIdleSecond !== undefined && count.seconds !== undefined)
  if (measured.length === 0) return []
  const repeated = counts.some((count) => count.repetition > 1)
  const lines = [
    '| row | instructions per idle second | wall seconds, N1 and N2 runs | of the per-request figure, time-driven (estimate) |',
    '| --- | ---: | ---: | ---: |',
  ]
  for (const count of measured) {
    const { n1: t1, n2: t2 } = count.seconds ?? { n1: NaN, n2: NaN }
    const share = ((count.perIdleSecond ?? NaN) * (t2 - t1)) / (n2 - n1)
    lines.push(
      `| ${name(count, repeated)} | ${formatCount(count.perIdleSecond ?? NaN)} | ${t1.toFixed(0)}, ${t2.toFixed(0)} | ${formatCount(share)} |`,
    )
  }
  return lines
}

/** formatRepeatability returns, per row counted more than once, its figures and their spread (max - min over the mean). */
export function formatRepeatability(counts: Count[]): string[] {
  const lines: string[] = []
  for (const id of new Set(counts.map((count) => count.row.id))) {
    const figures = counts.filter((count) => count.row.id === id).map((count) => count.perRequest)
    if (figures.length < 2) continue
    const mean = figures.reduce((sum, n) => sum + n, 0) / figures.length
    const spread = (Math.max(...figures) - Math.min(...figures)) / mean
    lines.push(
      `${id}: ${figures.map(formatCount).join(', ')} instructions per request: spread ${(100 * spread).toFixed(2)} %`,
    )
  }
  return lines
}

/**
 * checkCeilings compares the ratio to bare of every row that has a ceiling with it: failures holds
 * one line per ratio above its ceiling, checked one per ratio at or below. A row counted without
 * its bare row has no ratio and is left out.
 */
export function checkCeilings(
  counts: Count[],
  ceilings: Record<string, { ratio: number; option: string }>,
): { failures: string[]; checked: string[] } {
  const failures: string[] = []
  const checked: string[] = []
  const repeated = counts.some((count) => count.repetition > 1)
  for (const [id, ceiling] of Object.entries(ceilings)) {
    for (const count of counts.filter((c) => c.row.id === id)) {
      const ratio = ratioToBare(count, counts)
      if (ratio === undefined) continue
      const line = `${name(count, repeated)}: ${ratio.toFixed(3)}× bare, ceiling ${ceiling.ratio.toFixed(2)}× (--${ceiling.option})`
      if (ratio > ceiling.ratio) failures.push(line)
      else checked.push(line)
    }
  }
  return { failures, checked }
}
