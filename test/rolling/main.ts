// npm run test:rolling: a rolling restart behind a real load balancer, with zero failed requests.
// Three instances of the built service run behind haproxy, which checks GET /ready actively.
// Under steady keep-alive load, each instance in turn gets SIGTERM, must exit 0, and is replaced
// on the same port by a new one that haproxy must see UP before the next goes, as a Kubernetes
// rollout does it. Then every request must have been answered 200, and the client's count,
// haproxy's count of requests forwarded and the access-log lines of all six instances must agree.
//
// The rule it proves: SHUTDOWN_DELAY must cover the balancer's detection time. The delay is derived
// below from haproxy's check settings; --delay overrides it to see what a shorter one costs.
//
//   npm run test:rolling                  build, then the test (about 20 s)
//   node test/rolling/main.ts --delay=0s  the same rollout with another delay (an experiment: fails)
//   other options: --retries N (haproxy retries elsewhere), --no-checks (passive balancer only),
//   --rate N (requests/s), --connections N, --keep (keep the temp dir with every log)
import { existsSync, readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { parseDuration } from '../../internal/config.ts'
import { type Balancer, type Checks, detectionMs, findHaproxy, readVersion, startBalancer } from './haproxy.ts'
import { type Instance, type Slot, readInstanceLog, startInstance, waitForReady } from './instance.ts'
import { startLoad } from './load.ts'
import { type Restart, type Run, printReport } from './report.ts'
import { type Workspace, newWorkspace, within } from './workspace.ts'

const serverScript = fileURLToPath(new URL('../../dist/cmd/server/main.js', import.meta.url))

// haproxy's active checks. Short enough for a quick test, long enough that a check slowed down by
// a busy machine does not time out.
const checks: Checks = { interMs: 500, fall: 2, rise: 2, timeoutMs: 1000 }
// The rule under test: after SIGTERM the service keeps serving until haproxy has stopped sending.
const shutdownDelayMs = detectionMs(checks)
const shutdownTimeout = '10s'
// Requests each instance must have received through haproxy before the next step: the warm-up,
// and proof that traffic reached every new instance before the next old one goes.
const servedBeforeNext = 400
const idPrefix = 'load'

/** Settings are the test's options. */
export interface Settings {
  delay: string
  delayMs: number
  checks: Checks | null
  retries: number
  rate: number
  connections: number
  keep: boolean
}

function parseSettings(argv: string[]): Settings {
  const { values } = parseArgs({
    args: argv,
    options: {
      delay: { type: 'string', default: `${shutdownDelayMs}ms` },
      retries: { type: 'string', default: '0' },
      'no-checks': { type: 'boolean', default: false },
      rate: { type: 'string', default: '800' },
      connections: { type: 'string', default: '8' },
      keep: { type: 'boolean', default: false },
    },
  })
  const delayMs = parseDuration(values.delay)
  if (delayMs === undefined)
    throw new Error(`Expected --delay to be a duration like 0s or 1500ms, got \`${values.delay}\``)
  const count = (name: string, value: string, min: number) => {
    const n = Number(value)
    if (!Number.isInteger(n) || n < min)
      throw new Error(`Expected --${name} to be an integer from ${min}, got \`${value}\``)
    return n
  }
  return {
    delay: values.delay,
    delayMs,
    checks: values['no-checks'] ? null : checks,
    retries: count('retries', values.retries, 0),
    rate: count('rate', values.rate, 1),
    connections: count('connections', values.connections, 1),
    keep: values.keep,
  }
}

function say(line: string): void {
  process.stdout.write(`rolling: ${line}\n`)
}

async function main(): Promise<number> {
  const settings = parseSettings(process.argv.slice(2))
  if (!existsSync(serverScript)) throw new Error(`${serverScript} is missing: run npm run build first`)
  const binary = findHaproxy()
  const workspace = newWorkspace(settings.keep)
  try {
    const run = await rollOut(workspace, binary, settings)
    return printReport(run, settings, say)
  } catch (err) {
    printBalancerLog(join(workspace.dir, 'haproxy.log'))
    throw err
  } finally {
    workspace.dispose()
  }
}

/** rollOut starts everything, restarts each instance in turn under load, stops everything, and returns what it saw. */
async function rollOut(workspace: Workspace, binary: string, settings: Settings): Promise<Run> {
  const [port = 0, ...ports] = await findFreePorts(4)
  const slots: Slot[] = ports.map((port, i) => ({ name: `s${i + 1}`, port }))
  const env = { SHUTDOWN_DELAY: settings.delay, SHUTDOWN_TIMEOUT: shutdownTimeout }
  const current = slots.map((slot) => startInstance(workspace, serverScript, slot, 0, env))
  const instances = [...current] // every instance started, old and new, for their logs
  // Listening before haproxy starts, so its first checks pass rather than mark them DOWN.
  await Promise.all(current.map((instance) => waitForReady(instance, 15_000)))
  const balancer = await startBalancer(workspace, {
    binary,
    port,
    servers: slots,
    checks: settings.checks,
    retries: settings.retries,
  })
  say(`haproxy ${readVersion(binary)} on port ${port}; instances on ports ${ports.join(', ')}`)
  await Promise.all(current.map((instance) => waitForServing(balancer, instance, settings)))

  const load = startLoad({ port, path: '/health', connections: settings.connections, rate: settings.rate, idPrefix })
  await Promise.all(slots.map((slot) => balancer.waitForForwarded(slot.name, servedBeforeNext, 15_000)))
  const restarts: Restart[] = []
  for (const [i, old] of current.entries()) {
    const restart = await restartInstance(workspace, balancer, old, env, settings)
    say(describeRestart(restart))
    restarts.push(restart)
    instances.push(restart.next)
    current[i] = restart.next
  }
  const result = await load.stop()
  const stats = await balancer.stats()
  await balancer.stop()
  await Promise.all(current.map((instance) => stopInstance(instance, settings)))
  return { slots, instances, restarts, load: result, stats, haproxyLog: balancer.logFile, idPrefix }
}

/**
 * restartInstance does what Kubernetes does to one pod in a rollout: SIGTERM, wait for the exit,
 * start the replacement (here on the same port), and wait until the balancer sends it traffic.
 */
async function restartInstance(
  workspace: Workspace,
  balancer: Balancer,
  old: Instance,
  env: Record<string, string>,
  settings: Settings,
): Promise<Restart> {
  const name = old.slot.name
  const signalledAt = Date.now()
  old.child.process.kill('SIGTERM')
  const exited = old.child.exited.then((exit) => ({ exit, exitedAt: Date.now() }))
  const [downAt, { exit, exitedAt }] = await Promise.all([
    settings.checks === null ? undefined : balancer.waitForStatus(name, 'DOWN', detectionMs(settings.checks) + 10_000),
    within(exited, exitTimeoutMs(settings), `${old.label} to exit after SIGTERM`),
  ])
  // The log is complete once the process has exited.
  const stoppedAt = readInstanceLog(old.logFile, idPrefix).events.get('stopped accepting connections')
  const next = startInstance(workspace, serverScript, old.slot, old.generation + 1, env)
  const upAt = await waitForServing(balancer, next, settings)
  const forwarded = (await balancer.stats()).find((server) => server.name === name)?.forwarded ?? 0
  await balancer.waitForForwarded(name, forwarded + servedBeforeNext, 15_000)
  return { old, next, signalledAt, downAt, stoppedAt, exitedAt, exit, upAt }
}

/** waitForServing resolves with the time the balancer counts the instance in: UP, or ready when there are no checks. */
function waitForServing(balancer: Balancer, instance: Instance, settings: Settings): Promise<number> {
  // A new instance answers within a second; rise checks follow. The bound is for failures only.
  const timeoutMs = 15_000
  if (settings.checks === null) return waitForReady(instance, timeoutMs)
  return balancer.waitForStatus(instance.slot.name, 'UP', timeoutMs)
}

/** stopInstance sends SIGTERM and waits for the exit, as the end of the test. */
async function stopInstance(instance: Instance, settings: Settings): Promise<void> {
  instance.child.process.kill('SIGTERM')
  await within(instance.child.exited, exitTimeoutMs(settings), `${instance.label} to exit after SIGTERM`)
}

function exitTimeoutMs(settings: Settings): number {
  return settings.delayMs + (parseDuration(shutdownTimeout) ?? 0) + 5_000
}

function describeRestart(restart: Restart): string {
  const { old, next, signalledAt, downAt, stoppedAt, exitedAt, exit, upAt } = restart
  const after = (at: number | undefined) => (at === undefined ? 'never' : `+${at - signalledAt} ms`)
  const down = downAt === undefined ? '' : `haproxy DOWN ${after(downAt)}, `
  return (
    `${old.label}: SIGTERM, ${down}stopped accepting ${after(stoppedAt)}, exit ${exit.code ?? exit.signal} ` +
    `${after(exitedAt)}; ${next.label} ${downAt === undefined ? 'ready' : 'UP'} ${upAt - next.startedAt} ms after its start`
  )
}

/** printBalancerLog shows the end of haproxy's log (check results, failed requests) when the test broke off. */
function printBalancerLog(file: string): void {
  if (!existsSync(file)) return
  const lines = readFileSync(file, 'utf8').trimEnd().split('\n').slice(-20)
  process.stderr.write(`rolling: the end of haproxy's log:\n${lines.map((line) => `  ${line}\n`).join('')}`)
}

/** findFreePorts asks the kernel for count free loopback ports, all held at once so they differ. */
async function findFreePorts(count: number): Promise<number[]> {
  const servers = Array.from({ length: count }, () => createServer())
  const ports = await Promise.all(
    servers.map(
      (server) =>
        new Promise<number>((resolve, reject) => {
          server.once('error', reject)
          server.listen(0, '127.0.0.1', () => {
            const address = server.address()
            resolve(typeof address === 'object' && address !== null ? address.port : 0)
          })
        }),
    ),
  )
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))))
  return ports
}

try {
  process.exitCode = await main()
} catch (err) {
  process.stderr.write(`rolling: FAIL: ${err instanceof Error ? err.message : String(err)}\n`)
  process.exitCode = 1
}
// Exit now: after a failure the load's loops may still be running; the workspace is disposed.
process.exit()
