// bench:instr counts the user-space instructions one `GET /health` costs, under valgrind's
// callgrind: unlike throughput on this shared machine, the count does not drift with what else
// runs (BENCHMARKS.md, "Instructions per request"). Each row runs its server twice, serving N1 and
// then N2 keep-alive requests after one readiness request; (summary2 - summary1) / (N2 - N1) is the
// cost of one request in steady state, start-up and shutdown cancelled out.
//
//   npm run bench:instr                      the table: bare and service rows, about 15 minutes
//   npm run bench:instr -- --ci              the CI rows; exit 2 when a ratio to bare is above its ceiling
//   npm run bench:instr -- --ablation        what each feature costs: one knock-out per row (knockouts.ts)
//   npm run bench:instr -- --check-patches   only check that every knock-out still applies (no valgrind)
//   options: --node VERSION (the Dockerfile's NODE_VERSION) --n1 N (3000) --n2 N (13000) --jobs N (2)
//   --repeat N (1) --only ID[,ID...] --connections N (ablation rows: 1) --node-options FLAGS
//   --node-args='FLAGS' (defaultNodeArgs below; '' for none)
//   --idle-seconds N (30) --keep (the callgrind outputs) --max-ratio-1 X --max-ratio-16 X --max-ratio-metrics X (instr-rows.ts: ceilings)
import { spawnSync } from 'node:child_process'
import { readFileSync, rmSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { type Counted, NotListening, countInstructions, valgrindVersion } from './callgrind.ts'
import {
  type Count,
  checkCeilings,
  formatAblation,
  formatRepeatability,
  formatTable,
  formatTimeDriven,
  perRequest,
} from './instr-report.ts'
import { type Row, ablationRows, ceilings, rows } from './instr-rows.ts'
import { applyKnockout, copyBuild, knockouts } from './knockouts.ts'
import { bareArgs, bareMain } from './runs.ts'
import {
  type HealthResponse,
  type ServerProcess,
  findFreePort,
  makeWorkDir,
  startServer,
  stopServer,
  waitForOK,
} from './servers.ts'

const root = fileURLToPath(new URL('../../../', import.meta.url))
const serviceScript = join('cmd', 'server', 'main.js') // inside a dist directory

// Flags every server's node gets, for a count that does not move with the machine's load
// (BENCHMARKS.md, "Instructions per request"):
// - V8 rehashes its start-up snapshot for a random hash seed, at a cost that varies with the seed:
//   4 to 24 million instructions per start here, under 20 thousand apart with a fixed seed.
// - V8 sizes the young generation from the allocation rate per millisecond of wall time. Under
//   callgrind a request takes milliseconds, so V8 sees a nearly idle process and keeps the young
//   generation small, the smaller the busier the machine: 57 scavenges against 16 for the same
//   4,000 requests, 32 million instructions apart. Fixed at the image's 16 MiB per semi-space
//   (Dockerfile), the count is what production pays. The one mark-compact after start-up comes
//   within the first 3,000 requests, so N1 starts the count after it.
const defaultNodeArgs = '--hash-seed=1 --min-semi-space-size=16 --max-semi-space-size=16'

type Mode = 'table' | 'ci' | 'ablation' | 'check-patches'

/** InstrSettings are the command-line options, defaults filled in. */
interface InstrSettings {
  mode: Mode
  nodeVersion: string
  n1: number
  n2: number
  jobs: number
  repeat: number
  only: string[] | undefined
  connections: number
  nodeOptions: string | undefined
  /** nodeArgs go to every server's node before its script (--node-args; defaultNodeArgs). */
  nodeArgs: string[]
  ceilings: Record<string, { ratio: number; option: string }>
  /** keep leaves the callgrind outputs in the work directory, for callgrind_annotate. */
  keep: boolean
  /** idleSeconds is how long the idle run of a row with timers (Row.idle) stays idle; 0 skips it. */
  idleSeconds: number
}

function say(line = ''): void {
  process.stdout.write(`${line}\n`)
}

function parseSettings(argv: string[]): InstrSettings {
  const ceilingOptions = Object.fromEntries(
    Object.values(ceilings).map(({ option }) => [option, { type: 'string' as const }]),
  )
  const { values } = parseArgs({
    args: argv,
    options: {
      ci: { type: 'boolean', default: false },
      ablation: { type: 'boolean', default: false },
      'check-patches': { type: 'boolean', default: false },
      node: { type: 'string' },
      n1: { type: 'string', default: '3000' },
      n2: { type: 'string', default: '13000' },
      jobs: { type: 'string', default: String(Math.min(2, availableParallelism())) },
      repeat: { type: 'string', default: '1' },
      only: { type: 'string' },
      connections: { type: 'string', default: '1' },
      'node-options': { type: 'string' },
      'node-args': { type: 'string', default: defaultNodeArgs },
      keep: { type: 'boolean', default: false },
      'idle-seconds': { type: 'string', default: '30' },
      ...ceilingOptions,
    },
  })
  const modes = (['ci', 'ablation', 'check-patches'] as const).filter((mode) => values[mode])
  if (modes.length > 1) throw new Error(`--${modes.join(' and --')} exclude each other`)
  const count = (name: string, value: string, min: number) => {
    const n = Number(value)
    if (!Number.isInteger(n) || n < min)
      throw new Error(`Expected --${name} to be an integer of at least ${min}, got \`${value}\``)
    return n
  }
  const n1 = count('n1', values.n1, 1)
  const n2 = count('n2', values.n2, 1)
  if (n2 <= n1) throw new Error(`Expected --n2 to be above --n1, got ${n2} and ${n1}`)
  const nodeVersion = values.node ?? readDockerNodeVersion()
  if (!/^\d+\.\d+\.\d+$/.test(nodeVersion))
    throw new Error(`Expected --node to be a release like 24.22.3, got \`${nodeVersion}\``)
  const options = values as Record<string, string | boolean | undefined>
  return {
    mode: modes[0] ?? 'table',
    nodeVersion,
    n1,
    n2,
    jobs: count('jobs', values.jobs, 1),
    repeat: count('repeat', values.repeat, 1),
    only: values.only?.split(','),
    connections: count('connections', values.connections, 1),
    nodeOptions: values['node-options'],
    nodeArgs: values['node-args'].split(' ').filter((arg) => arg !== ''),
    keep: values.keep,
    idleSeconds: count('idle-seconds', values['idle-seconds'], 0),
    ceilings: Object.fromEntries(
      Object.entries(ceilings).map(([id, ceiling]) => {
        const value = options[ceiling.option]
        if (typeof value !== 'string') return [id, ceiling]
        const ratio = Number(value)
        if (!(ratio > 0)) throw new Error(`Expected --${ceiling.option} to be a positive number, got \`${value}\``)
        return [id, { ...ceiling, ratio }]
      }),
    ),
  }
}

/** readDockerNodeVersion returns the Dockerfile's `ARG NODE_VERSION`: the release production runs. */
function readDockerNodeVersion(): string {
  const version = /^ARG NODE_VERSION=(\S+)$/m.exec(readFileSync(join(root, 'Dockerfile'), 'utf8'))?.[1]
  if (version === undefined) throw new Error('no ARG NODE_VERSION in the Dockerfile: give --node VERSION')
  return version
}

/** fetchNode returns the path of Node version's binary, fetched once by test/fetch-node.sh. */
function fetchNode(version: string): string {
  const result = spawnSync('bash', [join(root, 'test', 'fetch-node.sh'), version], { encoding: 'utf8' })
  if (result.status !== 0) throw new Error(`test/fetch-node.sh ${version} failed: ${result.stderr}`)
  return result.stdout.trim()
}

/** nodeOptionsEnv returns NODE_OPTIONS as --node-options sets it for every server, or nothing. */
function nodeOptionsEnv(settings: InstrSettings): Record<string, string> {
  return settings.nodeOptions === undefined ? {} : { NODE_OPTIONS: settings.nodeOptions }
}

/** commandLine returns the command that counts the same rows again, every default spelled out. */
function commandLine(settings: InstrSettings): string {
  const args = [
    ...(settings.mode === 'table' ? [] : [`--${settings.mode}`]),
    `--node ${settings.nodeVersion}`,
    `--n1 ${settings.n1}`,
    `--n2 ${settings.n2}`,
    ...(settings.mode === 'ablation' ? [`--connections ${settings.connections}`] : []),
    ...(settings.repeat > 1 ? [`--repeat ${settings.repeat}`] : []),
    ...(settings.mode === 'ci' ? [] : [`--idle-seconds ${settings.idleSeconds}`]),
    ...(settings.only === undefined ? [] : [`--only ${settings.only.join(',')}`]),
    ...(settings.nodeOptions === undefined ? [] : [`--node-options '${settings.nodeOptions}'`]),
    // = and quotes: the value starts with a dash, which parseArgs would read as the next option.
    `--node-args='${settings.nodeArgs.join(' ')}'`,
  ]
  return `npm run bench:instr -- ${args.join(' ')}`
}

/** selectRows returns the mode's rows, narrowed by --only; it throws for an id no row has. */
function selectRows(settings: InstrSettings): Row[] {
  const all = settings.mode === 'ablation' ? ablationRows(settings.connections) : [...rows]
  const chosen = settings.mode === 'ci' ? all.filter((row) => row.ci) : all
  if (settings.only === undefined) return chosen
  for (const id of settings.only) {
    if (!chosen.some((row) => row.id === id)) {
      throw new Error(`no row ${id}; the rows are ${chosen.map((row) => row.id).join(', ')}`)
    }
  }
  return chosen.filter((row) => settings.only?.includes(row.id))
}

/**
 * prepareBuilds copies dist/ for the rows that run from a copy and for each knock-out among rows,
 * patches the knock-outs' copies, and returns each row's dist directory by row id. A patch that no longer applies
 * throws here, before anything is counted.
 */
function prepareBuilds(rowsToCount: Row[], dir: string): Map<string, string> {
  const dists = new Map<string, string>()
  let unpatched: string | undefined
  for (const row of rowsToCount) {
    if (row.knockout !== undefined) {
      const dist = copyBuild(root, join(dir, `knockout-${row.knockout.name}`))
      applyKnockout(dist, row.knockout)
      dists.set(row.id, dist)
    } else if (row.copy === true) {
      unpatched ??= copyBuild(root, join(dir, 'unpatched'))
      dists.set(row.id, unpatched)
    } else {
      dists.set(row.id, join(root, 'dist'))
    }
  }
  return dists
}

/** readServiceHealth starts the built service on node, outside valgrind, and returns its /health answer: the bare server sends the same. */
async function readServiceHealth(node: string, env: Record<string, string>): Promise<HealthResponse> {
  const port = await findFreePort()
  const server = startServer({
    node,
    script: join(root, 'dist', serviceScript),
    env: { ...env, PORT: String(port) },
    inheritNodeOptions: false,
  })
  let health: HealthResponse
  try {
    health = await waitForOK(server, `http://127.0.0.1:${port}/health`)
  } catch (err) {
    server.child.kill('SIGKILL')
    throw err
  }
  const exit = await stopServer(server)
  if (exit.code !== 0) throw new Error(`the service exited with code ${exit.code}: ${server.stderr()}`)
  return health
}

/** runEach runs tasks, width at a time, and returns their results in order; after a failure it starts no more. */
async function runEach<T>(tasks: (() => Promise<T>)[], width: number): Promise<T[]> {
  const results: T[] = []
  let next = 0
  let failed = false
  const worker = async () => {
    while (!failed && next < tasks.length) {
      const i = next++
      try {
        results[i] = await (tasks[i] as () => Promise<T>)()
      } catch (err) {
        failed = true
        throw err
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(width, tasks.length) }, worker))
  return results
}

interface Plan {
  settings: InstrSettings
  node: string
  dir: string
  dists: Map<string, string>
  health: HealthResponse | undefined
  servers: Set<ServerProcess>
}

/** RunKind is one of a row's runs: N1 requests, N2 requests, or N1 requests and then idle seconds. */
type RunKind = 'n1' | 'n2' | 'idle'

/** countRow runs row's server once, as kind says, and returns what callgrind counted. */
async function countRow(plan: Plan, row: Row, repetition: number, kind: RunKind): Promise<Counted> {
  const { settings } = plan
  const requests = kind === 'n2' ? settings.n2 : settings.n1
  const idleMs = kind === 'idle' ? settings.idleSeconds * 1000 : 0
  const label = `${row.id.replace(/\W/g, '-')}.${repetition}.${kind}`
  for (let attempt = 1; ; attempt++) {
    const port = await findFreePort()
    const env = nodeOptionsEnv(settings)
    const options =
      row.server === 'bare'
        ? { script: bareMain, args: bareArgs(port, plan.health as HealthResponse), env }
        : { script: join(plan.dists.get(row.id) ?? '', serviceScript), env: { ...env, PORT: String(port), ...row.env } }
    try {
      const counted = await countInstructions({
        label,
        options: { ...options, node: plan.node, nodeArgs: settings.nodeArgs, inheritNodeOptions: false },
        port,
        requests,
        connections: row.connections,
        idleMs,
        stdout: row.stdout,
        accessLog: row.accessLog,
        dir: plan.dir,
        servers: plan.servers,
      })
      const what = `${requests} requests${idleMs > 0 ? `, then ${settings.idleSeconds} s idle` : ''}`
      say(
        `${row.id}${settings.repeat > 1 ? ` #${repetition}` : ''}, ${what}: ${counted.instructions} instructions (${counted.seconds.toFixed(0)} s)`,
      )
      return counted
    } catch (err) {
      // Another process may take the port while the server starts under valgrind: try a new one.
      if (!(err instanceof NotListening) || attempt === 3) throw err
      say(`${label}: exited before it listened on port ${port}, taken by another process? Again on a new port.`)
    }
  }
}

/**
 * countAll counts every row settings.repeat times, plus an idle run for the rows that keep timers
 * (row.idle) unless --ci or --idle-seconds 0; the longest runs first, so the last job is a short one.
 */
async function countAll(plan: Plan, rowsToCount: Row[]): Promise<Count[]> {
  const { n1, n2, repeat, jobs, idleSeconds, mode } = plan.settings
  const kindsOf = (row: Row): RunKind[] =>
    row.idle === true && idleSeconds > 0 && mode !== 'ci' ? ['n2', 'n1', 'idle'] : ['n2', 'n1']
  const runs = rowsToCount.flatMap((row) =>
    Array.from({ length: repeat }, (_, i) => kindsOf(row).map((kind) => ({ row, repetition: i + 1, kind }))).flat(),
  )
  const length = (kind: RunKind) => (kind === 'n2' ? n2 : kind === 'idle' ? n1 + idleSeconds * 100 : n1)
  runs.sort((a, b) => length(b.kind) - length(a.kind))
  const counted = await runEach(
    runs.map((run) => () => countRow(plan, run.row, run.repetition, run.kind)),
    jobs,
  )
  const find = (row: Row, repetition: number, kind: RunKind) =>
    counted[runs.findIndex((run) => run.row === row && run.repetition === repetition && run.kind === kind)]
  return rowsToCount.flatMap((row) =>
    Array.from({ length: repeat }, (_, i) => {
      const first = find(row, i + 1, 'n1') ?? { instructions: NaN, seconds: NaN }
      const second = find(row, i + 1, 'n2') ?? { instructions: NaN, seconds: NaN }
      const idle = find(row, i + 1, 'idle')
      const summaries = { n1: first.instructions, n2: second.instructions }
      return {
        row,
        repetition: i + 1,
        summaries,
        seconds: { n1: first.seconds, n2: second.seconds },
        perRequest: perRequest(summaries, n1, n2),
        perIdleSecond:
          idle === undefined ? undefined : (idle.instructions - first.instructions) / (idle.seconds - first.seconds),
      }
    }),
  )
}

function checkPatches(): void {
  const dir = makeWorkDir('kickstart-instr-')
  try {
    for (const knockout of knockouts) applyKnockout(copyBuild(root, join(dir, knockout.name)), knockout)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
  say(`all ${knockouts.length} knock-outs apply to dist/ (test/bench/knockouts.ts)`)
}

function report(plan: Plan, counts: Count[], valgrind: string): number {
  const { settings } = plan
  const build = JSON.parse(readFileSync(join(root, 'dist', 'build-info.json'), 'utf8')) as {
    commit: string | null
    dirty: boolean | null
  }
  say()
  say(
    `Instructions per GET /health (callgrind summaries; N1 = ${settings.n1}, N2 = ${settings.n2}; Node v${settings.nodeVersion}; ${valgrind}; commit ${build.commit?.slice(0, 7) ?? 'unknown'}${build.dirty === true ? ' (dirty)' : ''}${settings.nodeOptions === undefined ? '' : `; NODE_OPTIONS=${settings.nodeOptions}`}; node ${settings.nodeArgs.join(' ') || '(no flags)'})`,
  )
  say()
  const table =
    settings.mode === 'ablation'
      ? formatAblation(counts, settings.n1, settings.n2)
      : formatTable(counts, settings.n1, settings.n2)
  for (const line of table) say(line)
  const timeDriven = formatTimeDriven(counts, settings.n1, settings.n2)
  if (timeDriven.length > 0) {
    say()
    for (const line of timeDriven) say(line)
  }
  say()
  say(`reproduce: ${commandLine(settings)}`)
  const repeatability = formatRepeatability(counts)
  if (repeatability.length > 0) say(`\nrepeatability:\n${repeatability.join('\n')}`)
  if (settings.mode === 'ablation') return 0
  const { failures, checked } = checkCeilings(counts, settings.ceilings)
  for (const line of checked) say(`within its ceiling: ${line}`)
  for (const line of failures) say(`FAIL: above its ceiling: ${line}`)
  return failures.length > 0 ? 2 : 0
}

async function main(): Promise<number> {
  let settings: InstrSettings
  let rowsToCount: Row[]
  try {
    settings = parseSettings(process.argv.slice(2))
    rowsToCount = selectRows(settings)
  } catch (err) {
    say(`bench:instr: ${(err as Error).message}`)
    return 1
  }
  // --ci checks the knock-outs too, in milliseconds: a change to the core that breaks one fails CI
  // at once, not at the next --ablation.
  if (settings.mode === 'check-patches' || settings.mode === 'ci') {
    try {
      checkPatches()
    } catch (err) {
      say(`FAIL: ${(err as Error).message}`)
      return 1
    }
    if (settings.mode === 'check-patches') return 0
  }
  const valgrind = valgrindVersion()
  if (valgrind === undefined) {
    say('valgrind is not installed: apt-get install valgrind (Debian)')
    return 1
  }
  const dir = makeWorkDir('kickstart-instr-')
  const servers = new Set<ServerProcess>()
  try {
    const node = fetchNode(settings.nodeVersion)
    const dists = prepareBuilds(rowsToCount, dir)
    const env = nodeOptionsEnv(settings)
    const health = rowsToCount.some((row) => row.server === 'bare') ? await readServiceHealth(node, env) : undefined
    const plan: Plan = { settings, node, dir, dists, health, servers }
    say(
      `bench:instr: ${rowsToCount.length} rows × ${settings.repeat} × 2 runs under callgrind, ${settings.jobs} at a time; Node v${settings.nodeVersion}`,
    )
    const counts = await countAll(plan, rowsToCount)
    if (settings.keep) say(`callgrind outputs kept in ${dir} (read one with callgrind_annotate FILE)`)
    else rmSync(dir, { recursive: true, force: true })
    return report(plan, counts, valgrind)
  } catch (err) {
    for (const server of servers) server.child.kill('SIGKILL')
    say(`FAIL: ${(err as Error).message}`)
    say(`files kept in ${dir}`)
    return 1
  }
}

process.exitCode = await main()
