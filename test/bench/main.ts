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
//   npm run bench -- --overload   three times the service's capacity, load shedding off and on
//   other options: --rounds N --seconds N --soak N --spawns N --connections N --tool wrk|autocannon
//   --toggle NAME=VALUE (the variable of the third service in the rounds: METRICS_ADDR=127.0.0.1:0)
//   with --overload: --factor N --shed NAME=VALUE[,NAME=VALUE] (repeatable) --clients N
import { spawnSync } from 'node:child_process'
import { readFileSync, rmSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { type Tool, canPin, chooseTool, writeWrkScript } from './load.ts'
import { measureOverload } from './overload.ts'
import { printOverloadReport } from './overload-report.ts'
import { type OverloadSettings, type Settings, printReport } from './report.ts'
import { type Context, bareArgs, bareMain, checkExit, measureRounds, measureSoak } from './runs.ts'
import {
  type HealthResponse,
  type ServerOptions,
  type ServerProcess,
  countLogLines,
  findFreePort,
  makeWorkDir,
  nodeOptions,
  startServer,
  waitForOK,
} from './servers.ts'

const serviceMain = fileURLToPath(new URL('../../cmd/server/main.js', import.meta.url))

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
      toggle: { type: 'string', default: defaultToggle },
      overload: { type: 'boolean', default: false },
      factor: { type: 'string' },
      shed: { type: 'string', multiple: true },
      clients: { type: 'string' },
    },
  })
  const { smoke, overload } = values
  if (smoke && overload) throw new Error('--smoke and --overload exclude each other: CI never runs the overload')
  // The overload's runs are longer and fewer: each is a fresh service driven past its limits.
  const number = (name: string, value: string | undefined, full: number, short: number, heavy = full) => {
    const n = value === undefined ? (smoke ? short : overload ? heavy : full) : Number(value)
    if (!Number.isInteger(n) || n < 1) throw new Error(`Expected --${name} to be a positive integer, got \`${value}\``)
    return n
  }
  if (values.tool !== undefined && values.tool !== 'wrk' && values.tool !== 'autocannon') {
    throw new Error(`Expected --tool to be wrk or autocannon, got \`${values.tool}\``)
  }
  return {
    smoke,
    rounds: number('rounds', values.rounds, 7, 2, 3),
    seconds: number('seconds', values.seconds, 5, 1, 20),
    warmupSeconds: smoke ? 1 : overload ? 3 : 5,
    soakSeconds: number('soak', values.soak, 60, 3),
    spawns: number('spawns', values.spawns, 10, 3),
    connections: number('connections', values.connections, 50, 50),
    tool: values.tool as Tool | undefined,
    service: values.service === undefined ? serviceMain : resolve(values.service),
    toggle: { label: values.toggle, env: parseEnv('toggle', values.toggle) },
    overload: overload
      ? {
          factor: parseFactor(values.factor),
          shed: (values.shed ?? [defaultShed]).map((shed) => parseEnv('shed', shed)),
          clients: number('clients', values.clients, 1000, 1000),
          timeoutMs: 5000,
        }
      : undefined,
    argv,
  }
}

// The add-on whose cost the rounds measure by default, and the shedding the overload turns on.
const defaultToggle = 'METRICS_ADDR=127.0.0.1:0'
const defaultShed = 'SHED_MAX_EVENT_LOOP_DELAY=50ms'

/** parseFactor reads --factor, a positive number: 3 by default, below 1 to check that nothing is shed. */
function parseFactor(value: string | undefined): number {
  const factor = Number(value ?? '3')
  if (!(factor > 0 && factor <= 100))
    throw new Error(`Expected --factor to be a number above 0 and at most 100, got \`${value}\``)
  return factor
}

/** parseEnv reads NAME=VALUE[,NAME=VALUE...] into an environment. */
function parseEnv(option: string, value: string): Record<string, string> {
  const env: Record<string, string> = {}
  for (const pair of value.split(',')) {
    const match = /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(pair)
    if (match === null) throw new Error(`Expected --${option} to be NAME=VALUE[,NAME=VALUE...], got \`${value}\``)
    env[match[1] ?? ''] = match[2] ?? ''
  }
  return env
}

/** timeSpawn starts a server and returns the milliseconds from spawn to its first 200, then stops it. */
async function timeSpawn(
  name: string,
  options: ServerOptions,
  url: string,
): Promise<{ ms: number; response: HealthResponse }> {
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
  const options = { env: { PATH: process.env.PATH ?? '', ...nodeOptions() } }
  const started = performance.now()
  const result =
    cpu === undefined
      ? spawnSync(process.execPath, args, options)
      : spawnSync('taskset', ['-c', String(cpu), process.execPath, ...args], options)
  if (result.status !== 0) throw new Error('node -e 0 failed')
  return performance.now() - started
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
  say(
    `spawn to first 200 (ms): service ${service.map((ms) => ms.toFixed(1)).join(' ')}; bare ${bare.map((ms) => ms.toFixed(1)).join(' ')}`,
  )
  return { health, spawn: { service, bare, node } }
}

function readMachine(tool: Tool, pinned: boolean) {
  const model = /^model name\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? 'unknown'
  const build = JSON.parse(readFileSync(new URL('../../build-info.json', import.meta.url), 'utf8')) as {
    commit: string | null
    dirty: boolean | null
  }
  const toolVersion =
    tool === 'wrk' ? (spawnSync('wrk', ['-v'], { encoding: 'utf8' }).stdout.split('\n')[0] ?? 'wrk') : 'autocannon'
  return {
    cpu: `${model}, ${availableParallelism()} cores`,
    node: process.version,
    date: new Date().toISOString(),
    commit: `${build.commit ?? 'unknown'}${build.dirty === true ? ' (dirty)' : ''}`,
    tool: toolVersion,
    pinned,
  }
}

/** runOverloadMode measures the overload and prints its report; the access-log checks throw on a mismatch. */
async function runOverloadMode(ctx: Context, overload: OverloadSettings, machine: ReturnType<typeof readMachine>) {
  const m = await measureOverload(ctx, overload)
  const { settings } = ctx
  printOverloadReport(
    m,
    {
      machine: `${machine.cpu}; Node ${machine.node}; ${machine.date}; commit ${machine.commit}; measured: ${relative(process.cwd(), settings.service)}`,
      load: `open-loop.ts for the overload, ${machine.tool} for the capacity; ${machine.pinned ? 'server on CPU 0, load generator on CPU 1 (taskset)' : 'not pinned'}`,
      command: `npm run bench -- ${settings.argv.join(' ')}`,
      factor: overload.factor,
      seconds: settings.seconds,
      clients: overload.clients,
      timeoutMs: overload.timeoutMs,
    },
    say,
  )
  const lines = m.logChecks.reduce((sum, check) => sum + check.lines, 0)
  say(`\naccess-log lines = requests received in all ${m.logChecks.length} service processes (${lines} lines)`)
}

async function main(): Promise<number> {
  let settings: Settings
  try {
    settings = parseSettings(process.argv.slice(2))
  } catch (err) {
    say(`bench: ${err instanceof Error ? err.message : String(err)}`)
    return 1
  }
  const tool = settings.tool ?? chooseTool()
  const pinned = availableParallelism() >= 2 && canPin()
  const dir = makeWorkDir()
  const servers = new Set<ServerProcess>()
  const ctx: Context = {
    settings,
    tool,
    dir,
    wrkScript: writeWrkScript(dir),
    serverCPU: pinned ? 0 : undefined,
    loadCPU: pinned ? 1 : undefined,
    say,
    servers,
  }
  const machine = readMachine(tool, pinned)
  say(
    `bench${settings.smoke ? ' (smoke)' : ''}: ${tool}, ${pinned ? 'servers on CPU 0, load on CPU 1' : 'not pinned'}, ${settings.rounds} rounds of ${settings.seconds} s`,
  )
  try {
    if (settings.overload !== undefined) {
      await runOverloadMode(ctx, settings.overload, machine)
      rmSync(dir, { recursive: true, force: true })
      return 0
    }
    const { health, spawn } = await measureSpawn(ctx)
    const rounds = await measureRounds(ctx, health)
    const soaked = await measureSoak(ctx)
    const logChecks = [...rounds.logChecks, soaked.logCheck]
    const passed = printReport({ machine, settings, spawn, ...rounds, soak: soaked.soak, logChecks }, say)
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
