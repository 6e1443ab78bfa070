// The rolling test's verdict: what the run measured, the checks on it, and for every failed
// request what the client, haproxy and the restarts say about it.
import { readFileSync } from 'node:fs'
import { type ServerStats, detectionMs } from './haproxy.ts'
import { type Instance, type InstanceLog, type Slot, readInstanceLog } from './instance.ts'
import type { Failure, LoadResult } from './load.ts'
import type { Settings } from './main.ts'
import type { Exit } from './workspace.ts'

/** Restart is what one step of the rollout saw; times are Date.now() values. */
export interface Restart {
  old: Instance
  next: Instance
  signalledAt: number
  /** downAt is when haproxy was first seen reporting the old instance DOWN; undefined without checks. */
  downAt: number | undefined
  /** stoppedAt is the time of the old instance's 'stopped accepting connections' line. */
  stoppedAt: number | undefined
  exitedAt: number
  exit: Exit
  /** upAt is when the balancer counted the new instance in. */
  upAt: number
}

/** Run is everything the rollout saw, for the report. */
export interface Run {
  slots: Slot[]
  /** instances holds every instance started, old and new, all exited by now. */
  instances: Instance[]
  restarts: Restart[]
  load: LoadResult
  /** stats are haproxy's server stats once the load had stopped. */
  stats: ServerStats[]
  haproxyLog: string
  idPrefix: string
}

interface Check {
  ok: boolean
  text: string
}

// Failed requests shown for each restart: enough to see the pattern; all of them are counted.
const failuresShown = 4

/** printReport prints the numbers and the checks, and returns the exit code: 0 when every check passed. */
export function printReport(run: Run, settings: Settings, say: (line: string) => void): number {
  const logs = new Map(
    run.instances.map((instance) => [instance.label, readInstanceLog(instance.logFile, run.idPrefix)]),
  )
  const linesOf = (instance: Instance) => logs.get(instance.label)?.loadIds.length ?? 0
  const { load } = run
  const loadLines = run.instances.reduce((sum, instance) => sum + linesOf(instance), 0)
  const forwarded = run.stats.reduce((sum, server) => sum + server.forwarded, 0)

  say(describeSettings(settings))
  const detection = run.restarts.map((restart) => (restart.downAt ?? Number.NaN) - restart.signalledAt)
  const measured =
    settings.checks === null ? '' : `; detection measured (SIGTERM to haproxy DOWN): ${detection.join(', ')} ms`
  say(`SHUTDOWN_DELAY=${settings.delay}${measured}`)
  const seconds = load.durationMs / 1000
  say(
    `load: ${load.sent} requests in ${seconds.toFixed(1)} s (${Math.round(load.sent / seconds)}/s) over ` +
      `${settings.connections} keep-alive connections: ${describeCounts(load)}`,
  )
  const perInstance = run.instances.map((instance) => `${instance.label} ${linesOf(instance)}`).join(', ')
  const checks = [...logs.values()].reduce((sum, log) => sum + log.checks, 0)
  say(`access log: ${loadLines} lines for the load (${perInstance}), and ${checks} health checks left out`)
  const perServer = run.stats.map((server) => `${server.name} ${server.forwarded}`).join(', ')
  say(`haproxy forwarded ${forwarded} requests (${perServer}); health checks are not counted`)

  const results = runChecks(run, logs, forwarded, loadLines)
  if (load.failures.length > 0) printFailures(run, say)
  for (const { ok, text } of results) say(`${ok ? 'ok' : 'FAIL'}: ${text}`)
  const failed = results.filter((result) => !result.ok).length
  say(`${results.length - failed} passed, ${failed} failed`)
  return failed === 0 ? 0 : 1
}

function runChecks(run: Run, logs: Map<string, InstanceLog>, forwarded: number, loadLines: number): Check[] {
  return [...checkCounts(run, logs, forwarded, loadLines), checkBalancerErrors(run.stats), ...checkInstances(run, logs)]
}

/** checkCounts holds the client's, haproxy's and the access log's counts of the load against each other. */
function checkCounts(run: Run, logs: Map<string, InstanceLog>, forwarded: number, loadLines: number): Check[] {
  const { load } = run
  const logged = new Set([...logs.values()].flatMap((log) => log.loadIds))
  const missing = load.answered.filter((id) => !logged.has(id)).length
  const not200 = [...logs.values()].reduce((sum, log) => sum + log.loadNot200, 0)
  const perSlot = run.slots.map((slot) => {
    const server = run.stats.find((row) => row.name === slot.name)?.forwarded ?? -1
    const lines = run.instances
      .filter((instance) => instance.slot === slot)
      .map((instance) => logs.get(instance.label)?.loadIds.length ?? 0)
    return { ok: server === lines.reduce((a, b) => a + b, 0), text: `${slot.name} ${server} = ${lines.join(' + ')}` }
  })
  return [
    {
      ok: load.failures.length === 0 && load.answered.length === load.sent,
      text: `every request answered 200 with its own id: ${load.answered.length} of ${load.sent}`,
    },
    {
      ok: loadLines === load.sent && logged.size === loadLines && missing === 0 && not200 === 0,
      text:
        `one access-log line per request: ${loadLines} lines for ${load.sent} sent ` +
        `(${loadLines - logged.size} duplicates, ${missing} answered but not logged, ${not200} not 200)`,
    },
    {
      ok: forwarded === load.sent,
      text: `haproxy forwarded as many requests as were sent: ${forwarded} = ${load.sent}`,
    },
    {
      ok: perSlot.every((slot) => slot.ok),
      text: `haproxy's count per server equals its instances' access lines: ${perSlot.map((slot) => slot.text).join(', ')}`,
    },
  ]
}

/** checkBalancerErrors wants haproxy's error counters at zero: a retry would hide a failure from the client. */
function checkBalancerErrors(stats: ServerStats[]): Check {
  const sum = (field: 'responses5xx' | 'connectErrors' | 'responseErrors' | 'retries' | 'redispatches') =>
    stats.reduce((total, row) => total + row[field], 0)
  const errors = {
    '5xx from servers': sum('responses5xx'),
    'connection errors': sum('connectErrors'),
    'response errors': sum('responseErrors'),
    retries: sum('retries'),
    redispatches: sum('redispatches'),
  }
  const list = Object.entries(errors).map(([name, n]) => `${n} ${name}`)
  return { ok: Object.values(errors).every((n) => n === 0), text: `haproxy counted no errors: ${list.join(', ')}` }
}

/** checkInstances checks each instance's exit, its shutdown against haproxy's detection, and its log. */
function checkInstances(run: Run, logs: Map<string, InstanceLog>): Check[] {
  const results: Check[] = []
  const exits = run.instances.map((instance) => ({
    label: instance.label,
    code: instance.child.process.exitCode ?? instance.child.process.signalCode,
  }))
  results.push({
    ok: exits.every((exit) => exit.code === 0),
    text: `every instance exited 0 after SIGTERM: ${exits.map((exit) => `${exit.label} ${exit.code}`).join(', ')}`,
  })
  // The rule itself: the balancer must have stopped sending before the listener closes.
  if (run.restarts.every((restart) => restart.downAt !== undefined)) {
    const margins = run.restarts.map((restart) => ({
      label: restart.old.label,
      ms: (restart.stoppedAt ?? Number.NaN) - (restart.downAt ?? Number.NaN),
    }))
    results.push({
      ok: margins.every((margin) => margin.ms >= 0),
      text:
        'haproxy saw each instance DOWN before it stopped accepting connections, by ' +
        margins.map((margin) => `${margin.ms} ms (${margin.label})`).join(', '),
    })
  }
  const idle = run.instances.filter((instance) => (logs.get(instance.label)?.loadIds.length ?? 0) === 0)
  results.push({
    ok: idle.length === 0,
    text: `every instance served part of the load${idle.length ? `: not ${idle.map((i) => i.label).join(', ')}` : ''}`,
  })
  const invalid = [...logs.values()].reduce((total, log) => total + log.invalid, 0)
  results.push({ ok: invalid === 0, text: `every log line is JSON: ${invalid} lines are not` })
  return results
}

function describeSettings({ checks, retries }: Settings): string {
  if (checks === null) return `haproxy without health checks, retries ${retries}`
  return (
    `haproxy checks GET /ready every ${checks.interMs} ms, fall ${checks.fall}, rise ${checks.rise}, ` +
    `timeout ${checks.timeoutMs} ms, retries ${retries}: detection ≤ ${detectionMs(checks)} ms (inter × fall + timeout)`
  )
}

function describeCounts(load: LoadResult): string {
  const statuses = [...load.statuses].map(([status, n]) => `${n} × ${status}`)
  const errors = [...load.errors].map(([code, n]) => `${n} × ${code}`)
  return [...statuses, ...errors].join(', ') || 'nothing'
}

/**
 * printFailures groups the failed requests by the restart they followed, with when they failed
 * relative to its SIGTERM, and shows a few of each with haproxy's log line for them.
 */
function printFailures(run: Run, say: (line: string) => void): void {
  const haproxyLines = new Map<string, string>()
  for (const line of readFileSync(run.haproxyLog, 'utf8').split('\n')) {
    const id = /\{([^}|]*)\}/.exec(line)?.[1]
    if (id !== undefined) haproxyLines.set(id, line.trim())
  }
  say(`${run.load.failures.length} failed requests: ${describeKinds(run.load.failures)}`)
  const groups = groupBy(run.load.failures, (failure) => run.restarts.findLast((r) => r.signalledAt <= failure.at))
  for (const [restart, failures] of groups) {
    if (restart === undefined) {
      say(`  ${failures.length} before the first SIGTERM: ${describeKinds(failures)}`)
    } else {
      const after = failures.map((failure) => failure.at - restart.signalledAt)
      const at = (time: number | undefined) => (time === undefined ? 'never' : `+${time - restart.signalledAt} ms`)
      say(
        `  ${failures.length} from +${Math.min(...after)} to +${Math.max(...after)} ms after SIGTERM to ` +
          `${restart.old.label} (haproxy DOWN ${at(restart.downAt)}, stopped accepting ${at(restart.stoppedAt)}, ` +
          `exit ${at(restart.exitedAt)}): ${describeKinds(failures)}`,
      )
    }
    for (const failure of failures.slice(0, failuresShown)) {
      const offset = restart === undefined ? '' : ` at +${failure.at - restart.signalledAt} ms`
      say(`    ${failure.id}: ${failure.what}${offset}; haproxy: ${haproxyLines.get(failure.id) ?? 'no line'}`)
    }
  }
}

function describeKinds(failures: Failure[]): string {
  const kinds = groupBy(failures, (failure) => failure.what)
  return [...kinds].map(([what, list]) => `${list.length} × ${what}`).join(', ')
}

/** groupBy is Map.groupBy, which the project's lib (es2023) does not declare yet. */
function groupBy<T, K>(items: T[], keyOf: (item: T) => K): Map<K, T[]> {
  const groups = new Map<K, T[]>()
  for (const item of items) {
    const key = keyOf(item)
    const group = groups.get(key)
    if (group === undefined) groups.set(key, [item])
    else group.push(item)
  }
  return groups
}
