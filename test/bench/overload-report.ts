// The overload mode's report: one row per run, then the medians and ranges per configuration,
// printed as Markdown tables ready to paste into BENCHMARKS.md.
import type { Capacity, OverloadMeasurements, OverloadRun } from './overload.ts'
import { median } from './report.ts'

/** OverloadHeader is what the report says about the machine and the command. */
export interface OverloadHeader {
  machine: string
  load: string
  command: string
  factor: number
  seconds: number
  clients: number
  timeoutMs: number
}

// One column: its heading, how to read a run, and the digits to print.
type Column = [string, (run: OverloadRun) => number, number]

const probeTimeoutMs = 2000

const share = (run: OverloadRun, count: number) => (100 * count) / run.load.due
const lost = (run: OverloadRun) => run.load.timedOut + run.load.expired + run.load.errors
const answeredProbes = (run: OverloadRun) => run.probes.filter((ms) => ms !== undefined)

/** percentile returns the p-th percentile of values (nearest rank), NaN for none. */
function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN
}

const columns: Column[] = [
  ['rate req/s', (r) => r.rate, 0],
  ['server CPU', (r) => r.cpuShare, 2],
  ['200s req/s', (r) => (r.load.statuses['200'] ?? 0) / (r.load.due / r.rate), 0],
  ['200s p50 ms', (r) => r.load.ok.p50, 0],
  ['200s p99 ms', (r) => r.load.ok.p99, 0],
  ['shed %', (r) => share(r, r.load.statuses['503'] ?? 0), 1],
  ['lost %', (r) => share(r, lost(r)), 1],
  ['503s p99 ms', (r) => r.load.shed.p99, 0],
  ['/health p50 ms', (r) => percentile(answeredProbes(r), 50), 0],
  ['/health p99 ms', (r) => percentile(answeredProbes(r), 99), 0],
  ['/health max ms', (r) => Math.max(...answeredProbes(r)), 0],
  ['probes', (r) => r.probes.length, 0],
  ['probes failed', (r) => r.probes.length - answeredProbes(r).length, 0],
  ['RSS max MiB', (r) => Math.max(...r.rss), 0],
  ['RSS end MiB', (r) => r.rss.at(-1) ?? Number.NaN, 0],
  ['new conns', (r) => r.load.reconnects, 0],
]

function fixed(n: number, digits: number): string {
  return Number.isFinite(n) ? n.toFixed(digits) : 'n/a'
}

/** printOverloadReport writes the overload mode's tables through say. */
export function printOverloadReport(m: OverloadMeasurements, header: OverloadHeader, say: (line: string) => void) {
  say('')
  say(`- Machine: ${header.machine}`)
  say(`- Load: ${header.load}`)
  say(`- Command: ${header.command}`)
  say(
    `- Per round: capacity of a fresh service on \`GET /items?limit=100\` (closed loop); then a fresh service per configuration, warmed up at half that rate, driven open loop at ${header.factor}× it for ${header.seconds} s by up to ${header.clients} keep-alive connections, a client giving up after ${header.timeoutMs / 1000} s; \`/health\` probed every 100 ms on a new connection, failed past ${probeTimeoutMs / 1000} s`,
  )
  say('')
  printCapacities(m.capacities, say)
  say('')
  say(`| round | configuration | ${columns.map(([heading]) => heading).join(' | ')} |`)
  say(`| ---: | --- | ${columns.map(() => '---:').join(' | ')} |`)
  const isDisturbed = (run: OverloadRun) => header.factor >= 1 && run.cpuShare < 0.9
  for (const run of m.runs) {
    const round = `${run.round}${isDisturbed(run) ? '*' : ''}`
    say(`| ${round} | ${run.config} | ${columns.map(([, pick, digits]) => fixed(pick(run), digits)).join(' | ')} |`)
  }
  const disturbed = m.runs.filter(isDisturbed).length
  if (disturbed > 0) {
    say(
      `\n*: ${disturbed} of ${m.runs.length} runs gave the service under 0.9 of its CPU, which an overload keeps busy: other processes took turns on it`,
    )
  }
  say('')
  printSummary(m, isDisturbed, say)
}

function printCapacities(capacities: Capacity[], say: (line: string) => void) {
  say('| round | capacity req/s | CPU µs per request | p99 ms (50 connections, closed loop) |')
  say('| ---: | ---: | ---: | ---: |')
  for (const c of capacities) {
    say(`| ${c.round} | ${c.rps.toFixed(0)} | ${c.microsPerRequest.toFixed(0)} | ${c.p99Ms.toFixed(1)} |`)
  }
}

// The summary's rows: the columns that answer the questions, as median (range) per configuration.
const summaryRows = new Set([
  '200s req/s',
  '200s p99 ms',
  'shed %',
  'lost %',
  '/health p50 ms',
  '/health p99 ms',
  '/health max ms',
  'probes failed',
  'RSS max MiB',
  'server CPU',
])

/**
 * printSummary prints the median and range of each measure per configuration, over the runs in
 * which the service had its CPU, when a configuration has any; over all its runs otherwise. Below
 * the capacity (--factor under 1) every run counts: the service is not kept busy then.
 */
function printSummary(
  m: OverloadMeasurements,
  isDisturbed: (run: OverloadRun) => boolean,
  say: (line: string) => void,
) {
  const names = m.configs.map((config) => config.name)
  const runsOf = (name: string) => {
    const all = m.runs.filter((run) => run.config === name)
    const clean = all.filter((run) => !isDisturbed(run))
    return { all, used: clean.length > 0 ? clean : all, clean }
  }
  say(`| measure, median (range) | ${names.join(' | ')} |`)
  say(`| --- | ${names.map(() => '---:').join(' | ')} |`)
  const counts = names.map((name) => {
    const { all, clean } = runsOf(name)
    return `${clean.length} of ${all.length}`
  })
  say(`| runs with the CPU to itself (used when any) | ${counts.join(' | ')} |`)
  for (const [heading, pick, digits] of columns) {
    if (!summaryRows.has(heading)) continue
    const cells = names.map((name) => {
      const values = runsOf(name).used.map(pick).filter(Number.isFinite)
      if (values.length === 0) return 'n/a'
      const range = `${fixed(Math.min(...values), digits)}–${fixed(Math.max(...values), digits)}`
      return `${fixed(median(values), digits)} (${range})`
    })
    say(`| ${heading} | ${cells.join(' | ')} |`)
  }
  const capacity = median(m.capacities.map((c) => c.rps))
  say('')
  say(`capacity, median of ${m.capacities.length} rounds: ${capacity.toFixed(0)} req/s`)
}
