// bench measures what the template costs over bare node:http (issue 5; BENCHMARKS.md has the
// results and how to read them). It runs the built service the way production does (access log
// on, stdout to a file) next to bare-server.ts, which answers the same /health bytes, and reports
// throughput and latency as same-round ratios, spawn-to-first-200, memory after load and over a
// soak. It fails whatever the mode when the service's access-log lines differ from the requests
// it received: speed may not come from dropping logs.
//
//   npm run bench                 full run, a few minutes; exit 2 when a target is missed
//   npm run bench -- --smoke      a few seconds, no targets: checks that everything runs (CI)
//   npm run bench -- --service x.js   measure another server in the service's place (experiments)
//   other options: --rounds N --seconds N --soak N --spawns N --connections N --tool wrk|autocannon
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { availableParallelism, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { type Tool, canPin, chooseTool, runLoad, writeWrkScript } from './bench-load.ts'
import { type Measurements, type Run, type Settings, printReport } from './bench-report.ts'
import {
  type HealthResponse,
  type ServerOptions,
  type ServerProcess,
  countLogLines,
  findFreePort,
  readCPUSeconds,
  readRSS,
  readURL,
  startServer,
  stopServer,
  waitForOK,
} from './bench-servers.ts'

const serviceMain = fileURLToPath(new URL('../cmd/server/main.js', import.meta.url))
const bareMain = fileURLToPath(new URL('bare-server.js', import.meta.url))
const counter = new URL('bench-counter.js', import.meta.url).href

// Headers node:http adds to every response by itself; the bare server gets them from node too.
const nodeHeaders = new Set(['date', 'connection', 'keep-alive', 'transfer-encoding'])

function say(line: string): void {
  process.stdout.write(`${line}\n`)
}

function parseSettings(argv: string[]): Settings {
  const { values } = parseArgs({
    args: argv,
    options: {
      smoke: { type: 'boolean', default: false },
      rounds: { type: 'string' },
      seconds: { type: 'string' },
      soak: { type: 'string' },
      spawns: { type: 'string' },
      connections: { type: 'string' },
      tool: { type: 'string' },
      service: { type: 'string' },
    },
  })
  const smoke = values.smoke
  const number = (name: string, value: string | undefined, full: number, short: number) => {
    const n = value === undefined ? (smoke ? short : full) : Number(value)
    if (!Number.isInteger(n) || n < 1) throw new Error(`Expected --${name} to be a positive integer, got \`${value}\``)
    return n
  }
  if (values.tool !== undefined && values.tool !== 'wrk' && values.tool !== 'autocannon') {
    throw new Error(`Expected --tool to be wrk or autocannon, got \`${values.tool}\``)
  }
  return {
    smoke,
    rounds: number('rounds', values.rounds, 7, 2),
    seconds: number('seconds', values.seconds, 5, 1),
    warmupSeconds: smoke ? 1 : 5,
    soakSeconds: number('soak', values.soak, 60, 3),
    spawns: number('spawns', values.spawns, 10, 3),
    connections: number('connections', values.connections, 50, 50),
    tool: values.tool as Tool | undefined,
    service: values.service === undefined ? serviceMain : resolve(values.service),
    argv,
  }
}

/** Context is what every measurement needs. */
interface Context {
  settings: Settings
  tool: Tool
  dir: string
  wrkScript: string
  serverCPU: number | undefined
  loadCPU: number | undefined
}

/** checkExit throws unless the server stopped cleanly: exit 0, nothing on stderr. */
async function checkExit(name: string, server: ServerProcess): Promise<void> {
  const exit = await stopServer(server)
  if (exit.code !== 0 || server.stderr() !== '') {
    throw new Error(`${name} exited with code ${exit.code} signal ${exit.signal}; stderr:\n${server.stderr()}`)
  }
}

/** timeSpawn starts a server and returns the milliseconds from spawn to its first 200, then stops it. */
async function timeSpawn(name: string, options: ServerOptions, url: string): Promise<{ ms: number; response: HealthResponse }> {
  const started = performance.now()
  const server = startServer(options)
  try {
    const response = await waitForOK(server, url)
    return { ms: performance.now() - started, response }
  } finally {
    await checkExit(name, server)
  }
}

/**
 * timeNodeStart returns the milliseconds `node -e 0` takes from spawn to exit: the floor under any
 * spawn time. Like the servers it gets PATH alone: an inherited NODE_EXTRA_CA_CERTS, for one, makes
 * node read a CA bundle at start-up (+30 ms on this machine).
 */
function timeNodeStart(cpu: number | undefined): number {
  const args = ['-e', '0']
  const options = { env: { PATH: process.env.PATH ?? '' } }
  const started = performance.now()
  const result =
    cpu === undefined ? spawnSync(process.execPath, args, options) : spawnSync('taskset', ['-c', String(cpu), process.execPath, ...args], options)
  if (result.status !== 0) throw new Error('node -e 0 failed')
  return performance.now() - started
}

/**
 * bareArgs returns the bare server's command-line arguments: the service's /health headers
 * (less node's own) and body, so both answer the same bytes.
 */
function bareArgs(port: number, health: HealthResponse): string[] {
  const headers: Record<string, string> = {}
  for (const [name, value] of Object.entries(health.headers)) {
    if (!nodeHeaders.has(name) && typeof value === 'string') headers[name] = value
  }
  return [String(port), JSON.stringify(headers), health.body]
}

/** measureSpawn times spawn to first 200 for the service and the bare server, alternating. */
async function measureSpawn(ctx: Context) {
  const port = await findFreePort()
  const url = `http://127.0.0.1:${port}/health`
  const serviceOptions: ServerOptions = {
    script: ctx.settings.service,
    env: { PORT: String(port), LOG_LEVEL: 'info' },
    stdoutFile: join(ctx.dir, 'spawn.log'),
    cpu: ctx.serverCPU,
  }
  // One untimed start of each fills the page cache and gives the body the bare server copies.
  const { response: health } = await timeSpawn('service', serviceOptions, url)
  const bareOptions: ServerOptions = { script: bareMain, args: bareArgs(port, health), cpu: ctx.serverCPU }
  await timeSpawn('bare server', bareOptions, url)
  const service: number[] = []
  const bare: number[] = []
  const node: number[] = []
  for (let i = 0; i < ctx.settings.spawns; i++) {
    service.push((await timeSpawn('service', serviceOptions, url)).ms)
    const lines = await countLogLines(serviceOptions.stdoutFile ?? '')
    if (lines.requests !== 1) throw new Error(`service logged ${lines.requests} access lines for 1 request`)
    bare.push((await timeSpawn('bare server', bareOptions, url)).ms)
    node.push(timeNodeStart(ctx.serverCPU))
  }
  say(`spawn to first 200 (ms): service ${service.map(format).join(' ')}; bare ${bare.map(format).join(' ')}`)
  return { health, spawn: { service, bare, node } }
}

/** Target is a running server and its port. */
interface Target {
  server: ServerProcess
  port: number
}

/**
 * load runs the load generator against target for seconds, and adds the CPU time the server got
 * meanwhile: on this shared machine other processes take turns on the server's CPU, and a share
 * well under 1 says a round was disturbed.
 */
async function load(ctx: Context, { server, port }: Target, seconds: number): Promise<Run> {
  const url = `http://127.0.0.1:${port}/health`
  const before = readCPUSeconds(server.pid)
  const result = await runLoad({ tool: ctx.tool, url, connections: ctx.settings.connections, seconds, cpu: ctx.loadCPU, wrkScript: ctx.wrkScript })
  const cpu = readCPUSeconds(server.pid) - before
  return { ...result, cpuShare: cpu / seconds, perCPUSecond: result.requests / cpu }
}

/** soak loads the service for the soak's length while sampling its RSS every second. */
async function soak(ctx: Context, target: Target): Promise<{ result: Run; rss: number[] }> {
  const { server } = target
  const rss = [readRSS(server.pid)]
  const timer = setInterval(() => rss.push(readRSS(server.pid)), 1000)
  try {
    const result = await load(ctx, target, ctx.settings.soakSeconds)
    rss.push(readRSS(server.pid))
    return { result, rss }
  } finally {
    clearInterval(timer)
  }
}

/**
 * measureLoad starts one service and one bare server, warms both up, runs interleaved rounds,
 * reads memory, soaks the service, stops both and checks the access-log count.
 */
async function measureLoad(ctx: Context, health: HealthResponse, servers: Set<ServerProcess>) {
  const [servicePort, barePort] = [await findFreePort(), await findFreePort()]
  const serviceLog = join(ctx.dir, 'service.log')
  const serviceCount = join(ctx.dir, 'service.count')
  const service = startServer({
    script: ctx.settings.service,
    nodeArgs: ['--import', counter],
    env: { PORT: String(servicePort), LOG_LEVEL: 'info', BENCH_COUNT_FILE: serviceCount },
    stdoutFile: serviceLog,
    cpu: ctx.serverCPU,
  })
  servers.add(service)
  const bare = startServer({ script: bareMain, args: bareArgs(barePort, health), nodeArgs: ['--import', counter], cpu: ctx.serverCPU })
  servers.add(bare)
  await waitForOK(service, `http://127.0.0.1:${servicePort}/health`)
  const bareHealth = await waitForOK(bare, `http://127.0.0.1:${barePort}/health`)
  checkSameHeaders(await readURL(`http://127.0.0.1:${servicePort}/health`), bareHealth)
  const rssIdle = { service: readRSS(service.pid), bare: readRSS(bare.pid) }
  const onBare = (seconds: number) => load(ctx, { server: bare, port: barePort }, seconds)

  // The service's load-tool requests, for the sanity check on the counter: 2 probes so far.
  let served = 2
  let runs = 0
  const onService = async (seconds: number) => {
    const result = await load(ctx, { server: service, port: servicePort }, seconds)
    served += result.requests
    runs++
    return result
  }
  say(`warm-up: ${ctx.settings.warmupSeconds} s each`)
  await onService(ctx.settings.warmupSeconds)
  await onBare(ctx.settings.warmupSeconds)

  const rounds: Measurements['rounds'] = []
  for (let i = 1; i <= ctx.settings.rounds; i++) {
    // Who goes first alternates (service, bare, bare, service, ...) so a drift in the machine's
    // speed within a round does not always favour the same side.
    const seconds = ctx.settings.seconds
    const round =
      i % 2 === 1
        ? { service: await onService(seconds), bare: await onBare(seconds) }
        : { bare: await onBare(seconds), service: await onService(seconds) }
    rounds.push(round)
    say(`round ${i}: service ${format(round.service.rps)} req/s, bare ${format(round.bare.rps)} req/s, ratio ${(round.service.rps / round.bare.rps).toFixed(3)}`)
  }
  const rssAfterLoad = { service: readRSS(service.pid), bare: readRSS(bare.pid) }

  say(`soak: ${ctx.settings.soakSeconds} s on the service`)
  const soaked = await soak(ctx, { server: service, port: servicePort })
  served += soaked.result.requests
  runs++

  await checkExit('service', service)
  await checkExit('bare server', bare)
  const logCount = await checkLogCount(serviceLog, serviceCount, served, runs * ctx.settings.connections)
  return { rounds, rssIdle, rssAfterLoad, soak: { rss: soaked.rss, rps: soaked.result.rps }, logCount }
}

/** checkSameHeaders throws unless the bare server answers with the service's header names and body length. */
function checkSameHeaders(service: HealthResponse, bare: HealthResponse): void {
  const names = (res: HealthResponse) => Object.keys(res.headers).sort().join(', ')
  if (names(service) !== names(bare)) throw new Error(`header names differ: service ${names(service)}; bare ${names(bare)}`)
  if (Math.abs(service.body.length - bare.body.length) > 16) throw new Error('the bare body is not the service body')
}

/**
 * checkLogCount compares the access-log lines in the service's stdout with the requests node:http
 * counted (bench-counter.ts), and throws when they differ. The load tools' own totals only bound
 * the count: each run leaves up to one request per connection unanswered at its end.
 */
async function checkLogCount(logFile: string, countFile: string, answered: number, unanswered: number) {
  const received = Number(readFileSync(countFile, 'utf8'))
  const lines = await countLogLines(logFile)
  say(`access-log lines: ${lines.requests}; requests received: ${received}; answered to the load tool: ${answered}`)
  if (lines.invalid > 0) throw new Error(`${lines.invalid} log lines are not JSON: torn or interleaved writes`)
  if (lines.requests !== received) {
    throw new Error(`the service received ${received} requests but wrote ${lines.requests} access-log lines (log: ${logFile})`)
  }
  // If the counter missed requests (say a future node stops publishing the channel), both counts
  // could agree on too little; the load tool's total catches that.
  if (received < answered || received > answered + unanswered) {
    throw new Error(`the counter says ${received} requests, but the load tool had ${answered} answered (+ up to ${unanswered} in flight)`)
  }
  return { lines: lines.requests, received, answered }
}

function format(n: number): string {
  return n >= 100 ? n.toFixed(0) : n.toFixed(1)
}

function readMachine(tool: Tool, pinned: boolean) {
  const model = /^model name\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown'
  const build = JSON.parse(readFileSync(new URL('../build-info.json', import.meta.url), 'utf8')) as { commit: string | null; dirty: boolean | null }
  const toolVersion = tool === 'wrk' ? (spawnSync('wrk', ['-v'], { encoding: 'utf8' }).stdout.split('\n')[0] ?? 'wrk') : 'autocannon'
  return {
    cpu: `${model}, ${availableParallelism()} cores`,
    node: process.version,
    date: new Date().toISOString(),
    commit: `${build.commit ?? 'unknown'}${build.dirty === true ? ' (dirty)' : ''}`,
    tool: toolVersion,
    pinned,
  }
}

async function main(): Promise<number> {
  let settings: Settings
  try {
    settings = parseSettings(process.argv.slice(2))
  } catch (err) {
    say(`bench: ${err instanceof Error ? err.message : String(err)}`)
    return 1
  }
  const tool = settings.tool ?? chooseTool(!settings.smoke, say)
  const pinned = availableParallelism() >= 2 && canPin()
  const dir = mkdtempSync(join(tmpdir(), 'kickstart-bench-'))
  const ctx: Context = {
    settings,
    tool,
    dir,
    wrkScript: writeWrkScript(dir),
    serverCPU: pinned ? 0 : undefined,
    loadCPU: pinned ? 1 : undefined,
  }
  const machine = readMachine(tool, pinned)
  say(`bench${settings.smoke ? ' (smoke)' : ''}: ${tool}, ${pinned ? 'servers on CPU 0, load on CPU 1' : 'not pinned'}, ${settings.rounds} rounds of ${settings.seconds} s`)
  const servers = new Set<ServerProcess>()
  try {
    const { health, spawn } = await measureSpawn(ctx)
    const loaded = await measureLoad(ctx, health, servers)
    const passed = printReport({ machine, settings, spawn, ...loaded }, say)
    rmSync(dir, { recursive: true, force: true })
    return settings.smoke || passed ? 0 : 2
  } catch (err) {
    for (const server of servers) server.child.kill('SIGKILL')
    say(`FAIL: ${err instanceof Error ? err.message : String(err)}`)
    say(`files kept in ${dir}`)
    return 1
  }
}

process.exitCode = await main()
