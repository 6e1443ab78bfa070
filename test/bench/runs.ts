// The benchmark's load phases: interleaved rounds on the service and the bare server, and a soak
// of a second service process whose memory is sampled. Every service process the load reaches is
// stopped with SIGTERM and its access-log lines checked against the requests it received.
import { readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { type Tool, runLoad } from './load.ts'
import type { LogCheck, Measurements, Run, Settings } from './report.ts'
import {
  type HealthResponse,
  type ServerOptions,
  type ServerProcess,
  countLogLines,
  findFreePort,
  readLogLines,
  readCPUSeconds,
  readRSS,
  readURL,
  startServer,
  stopServer,
  waitForOK,
} from './servers.ts'

/** Context is what every measurement needs. */
export interface Context {
  settings: Settings
  tool: Tool
  dir: string
  wrkScript: string
  serverCPU: number | undefined
  loadCPU: number | undefined
  say: (line: string) => void
  /** servers collects every long-lived server started, so a failure can kill them all. */
  servers: Set<ServerProcess>
}

export const bareMain = fileURLToPath(new URL('bare-server.js', import.meta.url))
const counter = new URL('counter.js', import.meta.url).href

// Headers node:http adds to every response by itself; the bare server gets them from node too.
const nodeHeaders = new Set(['date', 'connection', 'keep-alive', 'transfer-encoding'])

/**
 * bareArgs returns the bare server's command-line arguments: every header the service's /health
 * sent (less node's own) and its body, so both answer the same bytes.
 */
export function bareArgs(port: number, health: HealthResponse): string[] {
  const headers: Record<string, string> = {}
  for (const [name, value] of Object.entries(health.headers)) {
    if (!nodeHeaders.has(name) && typeof value === 'string') headers[name] = value
  }
  return [String(port), JSON.stringify(headers), health.body]
}

/** checkExit throws unless the server stopped cleanly: exit 0, nothing on stderr. */
export async function checkExit(name: string, server: ServerProcess): Promise<void> {
  const exit = await stopServer(server)
  if (exit.code !== 0 || server.stderr() !== '') {
    throw new Error(`${name} exited with code ${exit.code} signal ${exit.signal}; stderr:\n${server.stderr()}`)
  }
}

/** Target is a running server and its port. */
export interface Target {
  server: ServerProcess
  port: number
}

/**
 * load runs the load generator against target for seconds, and adds the CPU time the server got
 * meanwhile: on this shared machine other processes take turns on the server's CPU, and a share
 * well under 1 says a round was disturbed.
 */
export async function load(ctx: Context, { server, port }: Target, seconds: number, path = '/health'): Promise<Run> {
  const url = `http://127.0.0.1:${port}${path}`
  const before = readCPUSeconds(server.pid)
  const result = await runLoad({
    tool: ctx.tool,
    url,
    connections: ctx.settings.connections,
    seconds,
    cpu: ctx.loadCPU,
    wrkScript: ctx.wrkScript,
  })
  const cpu = readCPUSeconds(server.pid) - before
  // Per second the tool says it loaded the server: its start-up (autocannon's is 0.2 s of node)
  // leaves the server idle, and its run may outlast the nominal seconds.
  return { ...result, cpuShare: cpu / result.seconds, perCPUSecond: result.requests / cpu }
}

/**
 * CountedService is a service process started with counter.ts preloaded, with the requests the
 * bench knows were answered (load tools' totals, probes) and how many more may have reached it
 * unanswered: a load tool leaves up to one request per connection unanswered when its time is up.
 */
export interface CountedService extends Target {
  name: string
  logFile: string
  countFile: string
  answered: number
  unanswered: number
}

/** startService starts the service with counter.ts preloaded and env added, and waits for its first 200. */
export async function startService(
  ctx: Context,
  name: string,
  env: Record<string, string> = {},
): Promise<CountedService> {
  const port = await findFreePort()
  const logFile = join(ctx.dir, `${name}.log`)
  const countFile = join(ctx.dir, `${name}.count`)
  const options: ServerOptions = {
    script: ctx.settings.service,
    nodeArgs: ['--import', counter],
    env: { PORT: String(port), LOG_LEVEL: 'info', BENCH_COUNT_FILE: countFile, ...env },
    stdoutFile: logFile,
    cpu: ctx.serverCPU,
  }
  const server = startServer(options)
  ctx.servers.add(server)
  await waitForOK(server, `http://127.0.0.1:${port}/health`)
  return { name, server, port, logFile, countFile, answered: 1, unanswered: 0 }
}

/** loadService runs the load tool against the service's path and counts what it answered. */
export async function loadService(ctx: Context, service: CountedService, seconds: number, path?: string): Promise<Run> {
  const run = await load(ctx, service, seconds, path)
  service.answered += run.requests
  service.unanswered += ctx.settings.connections
  return run
}

/**
 * stopService stops the service and compares the access-log lines in its stdout with the requests
 * node:http counted (counter.ts); it throws when they differ. The load tools' own totals only
 * bound the count: each run leaves up to one request per connection unanswered at its end.
 */
export async function stopService(ctx: Context, service: CountedService): Promise<LogCheck> {
  await checkExit(`service (${service.name})`, service.server)
  ctx.servers.delete(service.server)
  const received = Number(readFileSync(service.countFile, 'utf8'))
  const lines = await countLogLines(service.logFile)
  const { name, answered } = service
  ctx.say(
    `${name}: access-log lines ${lines.requests}; requests received ${received}; answered to the bench ${answered}`,
  )
  if (lines.invalid > 0)
    throw new Error(`${lines.invalid} log lines are not JSON: torn or interleaved writes (${service.logFile})`)
  if (lines.requests !== received) {
    throw new Error(
      `the service received ${received} requests but wrote ${lines.requests} access-log lines (${service.logFile})`,
    )
  }
  // If the counter missed requests (say a future node stops publishing the channel), both counts
  // could agree on too little; the bench's own total catches that.
  const { unanswered } = service
  if (received < answered || received > answered + unanswered) {
    throw new Error(
      `the counter says ${received} requests, but the bench had ${answered} answered (+ up to ${unanswered} in flight)`,
    )
  }
  rmSync(service.logFile) // up to gigabytes, in RAM: kept only when a check failed
  return { name, lines: lines.requests, received, answered }
}

/** checkSameResponse throws unless the bare server answers with the service's header names and body length. */
function checkSameResponse(service: HealthResponse, bare: HealthResponse): void {
  const names = (res: HealthResponse) => Object.keys(res.headers).sort().join(', ')
  if (names(service) !== names(bare))
    throw new Error(`header names differ: service ${names(service)}; bare ${names(bare)}`)
  if (Math.abs(service.body.length - bare.body.length) > 16) throw new Error('the bare body is not the service body')
}

function format(n: number): string {
  return n >= 100 ? n.toFixed(0) : n.toFixed(1)
}

/**
 * measureRounds starts one service with the default configuration, one with the toggle's variable
 * set (--toggle: an add-on on) and one bare server, warms them up, runs interleaved rounds, reads
 * their memory, then stops them and checks both services' access-log counts.
 */
export async function measureRounds(ctx: Context, health: HealthResponse) {
  const service = await startService(ctx, 'rounds')
  const toggled = await startService(ctx, 'toggled', ctx.settings.toggle.env)
  const changed = await startupDiffers(service, toggled)
  if (!changed) {
    ctx.say(
      `warning: ${ctx.settings.toggle.label} changed nothing in the service's start-up log: is its add-on in cmd/server/main.ts?`,
    )
  }
  const barePort = await findFreePort()
  const bare = startServer({
    script: bareMain,
    args: bareArgs(barePort, health),
    nodeArgs: ['--import', counter],
    cpu: ctx.serverCPU,
  })
  ctx.servers.add(bare)
  const bareHealth = await waitForOK(bare, `http://127.0.0.1:${barePort}/health`)
  checkSameResponse(await readURL(`http://127.0.0.1:${service.port}/health`), bareHealth)
  service.answered++
  const rss = () => ({
    service: readRSS(service.server.pid),
    bare: readRSS(bare.pid),
    toggled: readRSS(toggled.server.pid),
  })
  const rssIdle = rss()
  const onBare = (seconds: number) => load(ctx, { server: bare, port: barePort }, seconds)
  const onService = (seconds: number) => loadService(ctx, service, seconds)
  const onToggled = (seconds: number) => loadService(ctx, toggled, seconds)

  const { warmupSeconds, seconds } = ctx.settings
  ctx.say(`warm-up: ${warmupSeconds} s each`)
  await onService(warmupSeconds)
  await onToggled(warmupSeconds)
  await onBare(warmupSeconds)
  const rounds: Measurements['rounds'] = []
  for (let i = 1; i <= ctx.settings.rounds; i++) {
    // Who goes first alternates (service, toggled, bare, then bare, toggled, service, ...) so a
    // drift in the machine's speed within a round does not always favour the same side of a pair.
    const round =
      i % 2 === 1
        ? { service: await onService(seconds), toggled: await onToggled(seconds), bare: await onBare(seconds) }
        : { bare: await onBare(seconds), toggled: await onToggled(seconds), service: await onService(seconds) }
    rounds.push(round)
    ctx.say(
      `round ${i}: service ${format(round.service.rps)} req/s, bare ${format(round.bare.rps)} req/s, ratio ${(round.service.rps / round.bare.rps).toFixed(3)}; ${ctx.settings.toggle.label} ${format(round.toggled.rps)} req/s`,
    )
  }
  const rssAfterLoad = rss()

  await checkExit('bare server', bare)
  ctx.servers.delete(bare)
  const logChecks = [await stopService(ctx, service), await stopService(ctx, toggled)]
  return { rounds, rssIdle, rssAfterLoad, logChecks, toggle: { label: ctx.settings.toggle.label, changed } }
}

/**
 * startupDiffers tells whether two services logged different messages up to their listening
 * line: a variable no add-on reads changes nothing, and the comparison would then measure nothing.
 */
async function startupDiffers(a: CountedService, b: CountedService): Promise<boolean> {
  const messages = async (service: CountedService) => {
    const lines = await readLogLines(service.logFile)
    const end = lines.findIndex((line) => line.msg === 'listening')
    return lines
      .slice(0, end)
      .map((line) => line.msg)
      .join('\n')
  }
  return (await messages(a)) !== (await messages(b))
}

/** readHeapMiB returns heapUsed from the service's /debug/vars, or undefined when nothing answers there. */
async function readHeapMiB(url: string): Promise<{ heap: number | undefined; answered: boolean }> {
  try {
    const res = await readURL(url)
    const vars = res.status === 200 ? (JSON.parse(res.body) as { memory?: { heapUsed?: number } }) : {}
    const used = vars.memory?.heapUsed
    return { heap: used === undefined ? undefined : used / 2 ** 20, answered: true }
  } catch {
    return { heap: undefined, answered: false }
  }
}

/**
 * measureSoak starts a fresh service with its debug listener on (DEBUG_ADDR), so that the heap can
 * be read from /debug/vars, warms it up, then loads it for the soak's length while sampling RSS
 * (from /proc) and heap used (from /debug/vars) every second. The rounds run on a service with the
 * default configuration; this one is separate so that the debug listener cannot touch them.
 */
export async function measureSoak(ctx: Context): Promise<{ soak: Measurements['soak']; logCheck: LogCheck }> {
  const debugPort = await findFreePort()
  const service = await startService(ctx, 'soak', { DEBUG_ADDR: `127.0.0.1:${debugPort}` })
  const vars = `http://127.0.0.1:${debugPort}/debug/vars`
  const sample = async () => {
    const { heap, answered } = await readHeapMiB(vars)
    if (answered) service.answered++
    return { rss: readRSS(service.server.pid), heap }
  }
  ctx.say(
    `soak: ${ctx.settings.warmupSeconds} s warm-up, then ${ctx.settings.soakSeconds} s, memory sampled every second`,
  )
  await loadService(ctx, service, ctx.settings.warmupSeconds)
  const run = loadService(ctx, service, ctx.settings.soakSeconds)
  let done = false
  run.then(
    () => (done = true),
    () => (done = true),
  )
  const samples = [await sample()]
  while (!done) {
    await Promise.race([run, sleep(1000)]) // a failed load run rejects here
    samples.push(await sample())
  }
  const result = await run
  const logCheck = await stopService(ctx, service)
  const heap = samples.map((s) => s.heap)
  ctx.say(`soak RSS, MiB, every second: ${samples.map((s) => s.rss.toFixed(0)).join(' ')}`)
  ctx.say(`soak heap used, MiB, every second: ${heap.map((h) => (h === undefined ? '-' : h.toFixed(0))).join(' ')}`)
  return {
    soak: {
      rss: samples.map((s) => s.rss),
      heap: heap.every((h) => h !== undefined) ? heap : undefined,
      rps: result.rps,
    },
    logCheck,
  }
}
