// The benchmark's report: medians, same-round ratios, the issue's targets, printed as Markdown
// tables ready to paste into BENCHMARKS.md.
import { relative } from 'node:path'
import type { LoadResult, Tool } from './load.ts'

/** Run is one load run on one server: what the load tool measured, and the CPU the server got. */
export interface Run extends LoadResult {
  /** cpuShare is the server's CPU seconds per second of load: 1 when it had its CPU to itself. */
  cpuShare: number
  /** perCPUSecond is requests answered per CPU second the server used, which other processes disturb less. */
  perCPUSecond: number
}

/** Settings are the bench's command-line options, with the mode's defaults filled in. */
export interface Settings {
  smoke: boolean
  rounds: number
  seconds: number
  warmupSeconds: number
  soakSeconds: number
  spawns: number
  connections: number
  tool: Tool | undefined
  /** service is the script measured against the bare server: the built service unless --service says otherwise. */
  service: string
  /** toggle is the variable a third service gets in the rounds (--toggle NAME=VALUE), to price an add-on. */
  toggle: { label: string; env: Record<string, string> }
  /** overload holds the options of --overload, undefined without it. */
  overload: OverloadSettings | undefined
  argv: string[]
}

/** OverloadSettings are the overload mode's options. */
export interface OverloadSettings {
  /** factor times the measured capacity is the rate of the overload. */
  factor: number
  /** shed holds one environment per configuration with shedding on (--shed NAME=VALUE,...). */
  shed: Record<string, string>[]
  /** clients caps the load generator's connections (--clients). */
  clients: number
  /** timeoutMs is how long a client waits before giving up on a request. */
  timeoutMs: number
}

/** Measurements is everything one bench run measured. */
export interface Measurements {
  machine: { cpu: string; node: string; date: string; commit: string; tool: string; pinned: boolean }
  settings: Settings
  spawn: { service: number[]; bare: number[]; node: number[] }
  rounds: { service: Run; bare: Run; toggled: Run }[]
  rssIdle: { service: number; bare: number; toggled: number }
  rssAfterLoad: { service: number; bare: number; toggled: number }
  /** toggle names the third service's variable, and whether it changed its start-up log. */
  toggle: { label: string; changed: boolean }
  /** soak holds the soak's memory samples in MiB; heap is undefined when the service has no /debug/vars. */
  soak: { rss: number[]; heap: number[] | undefined; rps: number }
  logChecks: LogCheck[]
}

/** LogCheck is one service process's access-log count, checked equal to the requests it received. */
export interface LogCheck {
  name: string
  lines: number
  received: number
  answered: number
}

// The targets (BENCHMARKS.md, Targets; medians of same-round ratios), checked by the full run only.
const targets = { throughput: 0.88, p99: 1.5, spawn: 1.4, rssOverBareMiB: 25, soakGrowthMiB: 5 }

/** median returns the middle value (the mean of the two middle ones for an even count). */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1
    ? (sorted[mid] ?? Number.NaN)
    : ((sorted[mid - 1] ?? Number.NaN) + (sorted[mid] ?? Number.NaN)) / 2
}

/**
 * soakGrowth is how far memory rose over the soak: the lowest sample of its last third minus the
 * lowest of its middle third. The floor, because between collections the heap (and with it RSS)
 * climbs and drops by tens of MiB, and what a leak raises is the level it drops back to. Not the
 * first third: a fresh process's RSS still rises for a few seconds after its warm-up.
 */
export function soakGrowth(samples: number[]): number {
  const third = Math.max(1, Math.floor(samples.length / 3))
  return Math.min(...samples.slice(-third)) - Math.min(...samples.slice(-2 * third, -third))
}

function ratio(a: number, b: number): number {
  return b === 0 ? Number.NaN : a / b
}

function fixed(n: number, digits: number): string {
  return Number.isFinite(n) ? n.toFixed(digits) : 'n/a'
}

function verdict(pass: boolean | undefined): string {
  return pass === undefined ? 'n/a' : pass ? 'PASS' : 'FAIL'
}

/**
 * printReport writes the report through say and returns whether every target passed. A target
 * whose inputs are unmeasurable (autocannon's whole-millisecond p99 of 0) counts as not failed.
 */
export function printReport(m: Measurements, say: (line: string) => void): boolean {
  const { machine, settings } = m
  say('')
  say(`- Machine: ${machine.cpu}; Node ${machine.node}; ${machine.date}`)
  say(`- Commit: ${machine.commit}; measured: ${relative(process.cwd(), settings.service)}`)
  say(
    `- Load: ${machine.tool}, ${settings.connections} connections, ${machine.pinned ? 'server on CPU 0, load generator on CPU 1 (taskset)' : 'not pinned'}`,
  )
  say(`- Command: npm run bench${settings.argv.length > 0 ? ` -- ${settings.argv.join(' ')}` : ''}`)
  say(
    `- Rounds: ${settings.rounds} × ${settings.seconds} s each after a ${settings.warmupSeconds} s warm-up; soak ${settings.soakSeconds} s`,
  )
  say('')
  const throughput = printRounds(m, say)
  say('')
  const rows = targetRows(m, throughput)
  say('| measure | service | bare | service vs bare | target | result |')
  say('| --- | ---: | ---: | ---: | --- | --- |')
  for (const row of rows) say(`| ${row.join(' | ')} |`)
  say('')
  printToggle(m, say)
  say('')
  const failed = rows.filter((row) => row[5] === 'FAIL').length
  if (settings.smoke) say('smoke run: targets not checked; the access-log count matched')
  else say(failed === 0 ? 'all targets PASS' : `${failed} target(s) FAIL`)
  return failed === 0
}

type Round = Measurements['rounds'][number]

// One column of the per-round table: its heading and how to print a round (or the medians row).
const columns: [string, (r: Round) => number, number][] = [
  ['service req/s', (r) => r.service.rps, 0],
  ['bare req/s', (r) => r.bare.rps, 0],
  ['ratio', (r) => ratio(r.service.rps, r.bare.rps), 3],
  ['service CPU', (r) => r.service.cpuShare, 2],
  ['bare CPU', (r) => r.bare.cpuShare, 2],
  ['req/CPU-s ratio', (r) => ratio(r.service.perCPUSecond, r.bare.perCPUSecond), 3],
  ['service p50 ms', (r) => r.service.p50Ms, 2],
  ['bare p50 ms', (r) => r.bare.p50Ms, 2],
  ['service p99 ms', (r) => r.service.p99Ms, 2],
  ['bare p99 ms', (r) => r.bare.p99Ms, 2],
  ['p99 ratio', (r) => ratio(r.service.p99Ms, r.bare.p99Ms), 2],
]

/**
 * printRounds prints the per-round table, with the median of each column (for ratios: the median
 * of the same-round ratios), and returns the ratios the targets are checked against.
 */
function printRounds(m: Measurements, say: (line: string) => void) {
  say(`| round | ${columns.map(([heading]) => heading).join(' | ')} |`)
  say(`| ---: | ${columns.map(() => '---:').join(' | ')} |`)
  const isDisturbed = (r: Round) => Math.min(r.service.cpuShare, r.bare.cpuShare) < 0.9
  m.rounds.forEach((round, i) => {
    const label = `${i + 1}${isDisturbed(round) ? '*' : ''}`
    say(`| ${label} | ${columns.map(([, pick, digits]) => fixed(pick(round), digits)).join(' | ')} |`)
  })
  const medianOf = (pick: (r: Round) => number) => median(m.rounds.map(pick).filter(Number.isFinite))
  say(`| median | ${columns.map(([, pick, digits]) => fixed(medianOf(pick), digits)).join(' | ')} |`)
  const throughput = m.rounds.map((r) => ratio(r.service.rps, r.bare.rps))
  const disturbed = m.rounds.filter(isDisturbed).length
  if (disturbed > 0)
    say(
      `\n*: ${disturbed} of ${m.rounds.length} rounds gave a server under 0.9 of its CPU: other processes took turns on it, or the load generator could not keep it busy`,
    )
  return {
    rps: median(throughput),
    min: Math.min(...throughput),
    max: Math.max(...throughput),
    perCPUSecond: medianOf((r) => ratio(r.service.perCPUSecond, r.bare.perCPUSecond)),
    p99: medianOf((r) => ratio(r.service.p99Ms, r.bare.p99Ms)),
  }
}

/** targetRows returns the summary table's rows: measure, service, bare, comparison, target, result. */
function targetRows(m: Measurements, throughput: ReturnType<typeof printRounds>): string[][] {
  const check = (pass: boolean | undefined) => verdict(m.settings.smoke ? undefined : pass)
  const spawnService = median(m.spawn.service)
  const spawnBare = median(m.spawn.bare)
  // Starts alternate service, bare, service...: like the rounds, compare each pair, then take the median.
  const spawnRatio = median(m.spawn.service.map((ms, i) => ratio(ms, m.spawn.bare[i] ?? Number.NaN)))
  const rssOver = m.rssAfterLoad.service - m.rssAfterLoad.bare
  return [
    [
      '/health throughput (median of same-round ratios; their range)',
      '',
      '',
      `${fixed(throughput.rps, 3)}× (${fixed(throughput.min, 2)}–${fixed(throughput.max, 2)})`,
      `≥ ${targets.throughput}×`,
      check(throughput.rps >= targets.throughput),
    ],
    [
      'p99 latency (median of same-round ratios)',
      '',
      '',
      `${fixed(throughput.p99, 2)}×`,
      `≤ ${targets.p99}×`,
      check(Number.isFinite(throughput.p99) ? throughput.p99 <= targets.p99 : undefined),
    ],
    [
      'requests per server CPU-second (median of same-round ratios)',
      '',
      '',
      `${fixed(throughput.perCPUSecond, 3)}×`,
      '',
      '',
    ],
    [
      'spawn to first 200, ms (medians; median of same-pair ratios)',
      spawnService.toFixed(1),
      spawnBare.toFixed(1),
      `${spawnRatio.toFixed(2)}×`,
      `≤ ${targets.spawn}×`,
      check(spawnRatio <= targets.spawn),
    ],
    ['`node -e 0`, spawn to exit, ms (median)', '', median(m.spawn.node).toFixed(1), '', '', ''],
    [
      'RSS idle, MiB',
      m.rssIdle.service.toFixed(1),
      m.rssIdle.bare.toFixed(1),
      `+${(m.rssIdle.service - m.rssIdle.bare).toFixed(1)}`,
      '',
      '',
    ],
    [
      'RSS after the rounds, MiB',
      m.rssAfterLoad.service.toFixed(1),
      m.rssAfterLoad.bare.toFixed(1),
      `+${rssOver.toFixed(1)}`,
      `≤ bare + ${targets.rssOverBareMiB}`,
      check(rssOver <= targets.rssOverBareMiB),
    ],
    soakRow('RSS', m.soak.rss, check),
    m.soak.heap === undefined
      ? ['heap used over the soak', 'n/a: no /debug/vars on DEBUG_ADDR', '', '', '', '']
      : soakRow('heap used', m.soak.heap, check),
    ['soak throughput, req/s', m.soak.rps.toFixed(0), '', '', '', ''],
    ...m.logChecks.map(({ name, lines, received, answered }) => [
      `access-log lines = requests received (${name})`,
      `${lines} = ${received}`,
      '',
      `${answered} answered to the bench`,
      'equal',
      lines === received ? 'PASS' : 'FAIL',
    ]),
  ]
}

/**
 * printToggle compares the service with the toggle's variable set (on) and without it (off), in
 * the same rounds: /health throughput and the server's CPU time per request, which moves less than
 * throughput when other processes take turns on the CPU.
 */
function printToggle(m: Measurements, say: (line: string) => void): void {
  const microsPerRequest = (run: Run) => 1e6 / run.perCPUSecond
  const toggleColumns: [string, (r: Round) => number, number][] = [
    ['off req/s', (r) => r.service.rps, 0],
    ['on req/s', (r) => r.toggled.rps, 0],
    ['on/off', (r) => ratio(r.toggled.rps, r.service.rps), 3],
    ['off CPU', (r) => r.service.cpuShare, 2],
    ['on CPU', (r) => r.toggled.cpuShare, 2],
    ['off CPU µs/req', (r) => microsPerRequest(r.service), 1],
    ['on CPU µs/req', (r) => microsPerRequest(r.toggled), 1],
    ['on/off', (r) => ratio(microsPerRequest(r.toggled), microsPerRequest(r.service)), 3],
  ]
  say(`/health with \`${m.toggle.label}\` (on) and without (off), same rounds:`)
  if (!m.toggle.changed) say('(the variable changed nothing in the start-up log: both sides ran the same service)')
  say('')
  say(`| round | ${toggleColumns.map(([heading]) => heading).join(' | ')} |`)
  say(`| ---: | ${toggleColumns.map(() => '---:').join(' | ')} |`)
  m.rounds.forEach((round, i) => {
    say(`| ${i + 1} | ${toggleColumns.map(([, pick, digits]) => fixed(pick(round), digits)).join(' | ')} |`)
  })
  const medianOf = (pick: (r: Round) => number) => median(m.rounds.map(pick).filter(Number.isFinite))
  const range = (pick: (r: Round) => number) => {
    const values = m.rounds.map(pick)
    return `${fixed(Math.min(...values), 2)}–${fixed(Math.max(...values), 2)}`
  }
  say(`| median | ${toggleColumns.map(([, pick, digits]) => fixed(medianOf(pick), digits)).join(' | ')} |`)
  say('')
  const [, throughput] = toggleColumns[2] ?? []
  const [, cpu] = toggleColumns[7] ?? []
  if (throughput === undefined || cpu === undefined) return
  say(
    `on/off, medians of same-round ratios (range): throughput ${fixed(medianOf(throughput), 3)}× (${range(throughput)}), CPU per request ${fixed(medianOf(cpu), 3)}× (${range(cpu)}); RSS after the rounds ${m.rssAfterLoad.toggled.toFixed(1)} vs ${m.rssAfterLoad.service.toFixed(1)} MiB`,
  )
}

/** soakRow reports one memory series of the soak: first, max and last sample, and its growth. */
function soakRow(what: string, samples: number[], check: (pass: boolean | undefined) => string): string[] {
  const growth = soakGrowth(samples)
  return [
    `${what} over the soak, MiB (first / max / last of ${samples.length} samples; growth)`,
    `${(samples[0] ?? 0).toFixed(1)} / ${Math.max(...samples).toFixed(1)} / ${(samples.at(-1) ?? 0).toFixed(1)}; ${growth >= 0 ? '+' : ''}${growth.toFixed(1)}`,
    '',
    '',
    `growth ≤ ${targets.soakGrowthMiB}`,
    check(growth <= targets.soakGrowthMiB),
  ]
}
