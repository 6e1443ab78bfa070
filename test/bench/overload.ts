// The benchmark's overload mode (--overload): what the service does when asked for three times
// what it can serve, with load shedding off and on. Per round it measures what a fresh service
// sustains on a route that does real work (closed loop, the load tool), then drives a fresh
// service per configuration at factor × that rate with open-loop.ts, while the bench probes
// /health every 100 ms as a kubelet would and samples the service's RSS. Every service's access-log
// count is checked as in the other modes.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { get } from 'node:http'
import { createInterface } from 'node:readline'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import type { OpenLoopOptions, OpenLoopReport } from './open-loop.ts'
import type { LogCheck, OverloadSettings } from './report.ts'
import { type Context, type CountedService, loadService, startService, stopService } from './runs.ts'
import { readCPUSeconds, readLogLines, readRSS } from './servers.ts'

const openLoopMain = fileURLToPath(new URL('open-loop.js', import.meta.url))

// GET /items?limit=100 reads a page of 100 items from SQLite and encodes them, each with a note of
// about 1,000 characters: several times the CPU of /health, or of a shed 503. A cheaper work route
// defeats the test: at three times its capacity, answering 503 alone would take the whole CPU, as
// it did once the service got faster with short notes (BENCHMARKS.md, Overload).
const workPath = '/items?limit=100'
const seedItems = 100
const lorem = 'words to look like real data; '.repeat(33)
// Kubernetes' probe settings in deploy/kubernetes/deployment.yaml: a probe slower than this fails.
const probeTimeoutMs = 2000
const probeIntervalMs = 100
const rssIntervalMs = 250
const capacitySeconds = 5

/** Config is one configuration the overload runs against: a name and the service's environment. */
export interface Config {
  name: string
  env: Record<string, string>
}

/** OverloadRun is one configuration's run at the overload rate. */
export interface OverloadRun {
  round: number
  config: string
  rate: number
  load: OpenLoopReport
  /** probes holds each /health probe's latency in ms, undefined for one that failed or timed out. */
  probes: (number | undefined)[]
  /** rss holds the service's RSS in MiB, every 250 ms from the start of the load. */
  rss: number[]
  /** cpuShare is the service's CPU seconds per second of the run. */
  cpuShare: number
  seconds: number
}

/** Capacity is what a fresh service sustained on the work route, closed loop. */
export interface Capacity {
  round: number
  rps: number
  microsPerRequest: number
  p99Ms: number
}

/** OverloadMeasurements is everything the overload mode measured. */
export interface OverloadMeasurements {
  capacities: Capacity[]
  runs: OverloadRun[]
  logChecks: LogCheck[]
  configs: Config[]
}

/** overloadConfigs returns shedding off, then one configuration per --shed. */
export function overloadConfigs(settings: OverloadSettings): Config[] {
  return [{ name: 'off', env: {} }, ...settings.shed.map((env) => ({ name: describeEnv(env), env }))]
}

function describeEnv(env: Record<string, string>): string {
  return Object.entries(env)
    .map(([name, value]) => `${name}=${value}`)
    .join(' ')
}

/**
 * measureOverload runs the rounds: per round, the capacity on a fresh service, then each
 * configuration on a fresh service of its own at factor × capacity, in an order that rotates from
 * round to round.
 */
export async function measureOverload(ctx: Context, settings: OverloadSettings): Promise<OverloadMeasurements> {
  const configs = overloadConfigs(settings)
  const capacities: Capacity[] = []
  const runs: OverloadRun[] = []
  const logChecks: LogCheck[] = []
  for (let round = 1; round <= ctx.settings.rounds; round++) {
    const capacity = await measureCapacity(ctx, round, logChecks)
    capacities.push(capacity)
    const rate = Math.round(capacity.rps * settings.factor)
    ctx.say(
      `round ${round}: capacity ${capacity.rps.toFixed(0)} req/s (${capacity.microsPerRequest.toFixed(0)} µs CPU each); overload at ${rate} req/s`,
    )
    for (let i = 0; i < configs.length; i++) {
      const index = (i + round - 1) % configs.length
      const config = configs[index]
      if (config === undefined) continue
      const service = await startConfigured(ctx, config, `${index === 0 ? 'off' : `shed${index}`}-${round}`)
      const run = await runOverload(
        ctx,
        service,
        { round, config: config.name, rate, capacity: capacity.rps },
        settings,
      )
      runs.push(run)
      logChecks.push(await stopService(ctx, service))
      ctx.say(describeRun(run))
    }
  }
  return { capacities, runs, logChecks, configs }
}

/** measureCapacity warms a fresh service up on the work route, then measures it, closed loop. */
async function measureCapacity(ctx: Context, round: number, logChecks: LogCheck[]): Promise<Capacity> {
  const service = await startService(ctx, `capacity-${round}`)
  await seed(ctx, service)
  await loadService(ctx, service, ctx.settings.warmupSeconds, workPath)
  const run = await loadService(ctx, service, capacitySeconds, workPath)
  logChecks.push(await stopService(ctx, service))
  return { round, rps: run.rps, microsPerRequest: 1e6 / run.perCPUSecond, p99Ms: run.p99Ms }
}

/** startConfigured starts a service with config's environment, and checks that shedding is on when asked. */
async function startConfigured(ctx: Context, config: Config, name: string): Promise<CountedService> {
  const service = await startService(ctx, name, config.env)
  const lines = await readLogLines(service.logFile)
  const on = lines.some((line) => line.msg === 'load shedding on')
  if (on !== (config.name !== 'off')) {
    throw new Error(
      on
        ? 'the service logged "load shedding on" with no SHED_ variable set'
        : `the service did not log "load shedding on" with ${config.name}: is the shedding add-on in cmd/server/main.ts?`,
    )
  }
  await seed(ctx, service)
  return service
}

/**
 * seed creates the items GET /items?limit=100 then reads, one request at a time. A 503 is tried
 * again: on a busy machine a service with shedding on may shed the first requests after its start.
 */
async function seed(ctx: Context, service: CountedService): Promise<void> {
  let shed = 0
  for (let i = 1; i <= seedItems; i++) {
    const res = await fetch(`http://127.0.0.1:${service.port}/items`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', connection: 'close' },
      body: JSON.stringify({ name: `item ${i}`, note: `a note for item ${i}: ${lorem}` }),
    })
    await res.arrayBuffer()
    service.answered++
    if (res.status === 503 && shed++ < 100) {
      i--
      await sleep(20)
    } else if (res.status !== 201) throw new Error(`POST /items answered ${res.status}`)
  }
  if (shed > 0) ctx.say(`  ${service.name}: ${shed} of the seeding requests were shed and sent again`)
}

/**
 * drive runs open-loop.ts against the work route, pinned to the load CPU, calls onRun when its run
 * starts, and counts what it answered. Every configuration gets the same warm-up: half the
 * capacity, so that none is shed.
 */
async function drive(
  ctx: Context,
  service: CountedService,
  { rate, capacity }: { rate: number; capacity: number },
  settings: OverloadSettings,
  onRun: () => void,
): Promise<OpenLoopReport> {
  const { seconds, warmupSeconds } = ctx.settings
  const options: OpenLoopOptions = {
    port: service.port,
    path: workPath,
    rate,
    seconds,
    warmupRate: Math.round(capacity / 2),
    warmupSeconds,
    maxConnections: settings.clients,
    timeoutMs: settings.timeoutMs,
  }
  const args = [openLoopMain, JSON.stringify(options)]
  const [command, commandArgs] =
    ctx.loadCPU === undefined
      ? [process.execPath, args]
      : ['taskset', ['-c', String(ctx.loadCPU), process.execPath, ...args]]
  const child = spawn(command, commandArgs, { stdio: ['ignore', 'pipe', 'pipe'] })
  // A bound for failures only: the run, its warm-up, priming and the wait for its last answers.
  const limit = setTimeout(() => child.kill('SIGKILL'), (seconds + warmupSeconds + 60) * 1000 + 3 * settings.timeoutMs)
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
  let report: OpenLoopReport | undefined
  for await (const line of createInterface({ input: child.stdout })) {
    if (line === 'run') onRun()
    else if (line.startsWith('{')) report = JSON.parse(line) as OpenLoopReport
  }
  const [code] = (await once(child, 'exit')) as [number | null]
  clearTimeout(limit)
  if (code !== 0 || report === undefined) throw new Error(`open-loop.js exited with ${code}: ${stderr}`)
  service.answered += report.answeredInAll
  service.unanswered += report.sentInAll - report.answeredInAll
  return report
}

/**
 * runOverload drives the service at rate while, from the start of the run on, it probes /health,
 * samples RSS and reads the CPU time the service used.
 */
async function runOverload(
  ctx: Context,
  service: CountedService,
  run: { round: number; config: string; rate: number; capacity: number },
  settings: OverloadSettings,
): Promise<OverloadRun> {
  const pid = service.server.pid
  const rss: number[] = []
  const probes: Promise<number | undefined>[] = []
  const url = `http://127.0.0.1:${service.port}/health`
  let sampler: NodeJS.Timeout | undefined
  let prober: NodeJS.Timeout | undefined
  let cpuBefore = 0
  let started = 0
  const onRun = () => {
    cpuBefore = readCPUSeconds(pid)
    started = performance.now()
    rss.push(readRSS(pid))
    sampler = setInterval(() => rss.push(readRSS(pid)), rssIntervalMs)
    prober = setInterval(() => probes.push(probe(url)), probeIntervalMs)
  }
  try {
    const load = await drive(ctx, service, run, settings, onRun)
    const seconds = (performance.now() - started) / 1000
    const cpuShare = (readCPUSeconds(pid) - cpuBefore) / seconds
    clearInterval(prober)
    const latencies = await Promise.all(probes)
    for (const latency of latencies) {
      if (latency === undefined) service.unanswered++
      else service.answered++
    }
    return { round: run.round, config: run.config, rate: run.rate, load, probes: latencies, rss, cpuShare, seconds }
  } finally {
    clearInterval(sampler)
    clearInterval(prober)
  }
}

/**
 * probe GETs url on a fresh connection, as the kubelet does, and resolves with the milliseconds
 * until the whole answer arrived, or undefined when it was not a 200 within the probe timeout.
 */
function probe(url: string): Promise<number | undefined> {
  const started = performance.now()
  return new Promise((resolve) => {
    const req = get(url, { agent: false }, (res) => {
      res.resume()
      res.on('end', () => {
        const ms = performance.now() - started
        resolve(res.statusCode === 200 && ms <= probeTimeoutMs ? ms : undefined)
      })
    })
    const timer = setTimeout(() => {
      resolve(undefined)
      req.destroy()
    }, probeTimeoutMs)
    req.on('close', () => clearTimeout(timer))
    req.on('error', () => resolve(undefined))
  })
}

function describeRun(run: OverloadRun): string {
  const perSecond = (pick: (s: OpenLoopReport['timeline'][number]) => number) =>
    run.load.timeline.map((s) => pick(s).toFixed(0)).join(' ')
  const rssPerSecond = run.rss.filter((_, i) => i % (1000 / rssIntervalMs) === 0)
  return [
    `  ${run.config}: ${run.load.statuses['200'] ?? 0} answered 200, ${run.load.statuses['503'] ?? 0} shed, ${run.load.timedOut + run.load.expired + run.load.errors} lost, ${run.load.reconnects} new connections; server CPU ${run.cpuShare.toFixed(2)}; load generator late by up to ${run.load.maxLagMs.toFixed(0)} ms`,
    `    per second, 200s: ${perSecond((s) => s.ok)}`,
    `    per second, 503s: ${perSecond((s) => s.shed)}`,
    `    per second, lost: ${perSecond((s) => s.lost)}`,
    `    per second, p99 of the 200s, ms: ${perSecond((s) => s.okP99)}`,
    `    per second, requests waiting for a connection: ${perSecond((s) => s.waiting)}`,
    `    RSS, MiB, every second: ${rssPerSecond.map((mib) => mib.toFixed(0)).join(' ')}`,
  ].join('\n')
}
