import { AsyncLocalStorage } from 'node:async_hooks'
import type { EventEmitter } from 'node:events'
import type { AddressInfo } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import type { AddOn, AddOnContext, AddOnParts } from './addon.ts'
import { buildDir as defaultBuildDir, readBuild } from './build-info.ts'
import { checkConfig, coreVars, type Env, parseConfig, redactConfig, type Vars } from './config.ts'
import { connectionBudget } from './connections.ts'
import { newLifecycle } from './lifecycle.ts'
import { describeListenError, listen } from './listen.ts'
import { type Logger, type LogOutput, newLogger, newWarnings } from './log.ts'
import type { TrackedResponse } from './response.ts'
import type { Routes } from './router.ts'
import { type RouteDeps, newRoutes } from './routes.ts'
import { type Listener, newServer } from './server.ts'

/** RunInput is everything run() takes from the process, so tests can hand in their own. */
export interface RunInput {
  /** env holds the configuration variables, as process.env does. */
  env: Env
  /** stdout receives the JSON log lines. */
  stdout: LogOutput
  /**
   * events delivers 'SIGTERM' and 'SIGINT' (stop gracefully; a second one stops at once) and
   * 'uncaughtException' and 'unhandledRejection' (log as fatal, stop gracefully, exit 1). main
   * passes process; tests pass an EventEmitter and emit what they need.
   */
  events: Pick<EventEmitter, 'on' | 'off'>
  /** addOns are the optional capabilities the service runs with (cmd/server/main.ts lists them). */
  addOns?: readonly AddOn<any>[]
  /** routes builds the service's route table; tests use it to add routes. */
  routes?: (deps: RouteDeps) => Routes | Promise<Routes>
  /** buildDir holds build-info.json and openapi.yaml; dist/ unless a test says otherwise. */
  buildDir?: URL
}

/** Exit codes run() returns; README.md documents them. */
export const exitCodes = { ok: 0, failed: 1, config: 2 } as const

/**
 * run is the service's life: configure, start (dependencies, then the port), serve until a stop
 * signal, drain, return the exit code: 0 after a clean shutdown; 1 when the service failed (listen
 * error, start-up error, fatal error, drain past SHUTDOWN_TIMEOUT); 2 for invalid configuration;
 * 128 + the signal number when a second signal cut the shutdown short. It throws only for bugs,
 * and removes its listeners from events before it returns.
 */
export async function run(input: RunInput): Promise<number> {
  const stop = listenForStop(input.events)
  const listeners: Listener[] = [] // the add-ons' own: up through the drain, so a stuck one can be inspected
  try {
    const setup = configure(input)
    if (!setup.ok) return setup.code
    stop.log = setup.log
    const started = await start(input, setup, listeners)
    if (!started.ok) return started.code
    const first = await stop.first
    if (first.kind === 'error') setup.log.fatal({ err: first.err }, 'shutdown started after an uncaught error')
    else setup.log.info({ signal: first.signal }, 'shutdown started')
    // A second signal cuts the drain short: its timers stop, and every connection is cut.
    const forced = new AbortController()
    const cut = stop.second.then(async (code) => {
      forced.abort()
      await started.http.destroy()
      return code
    })
    const code = await Promise.race([drain(setup, started, forced.signal), cut])
    return stop.failed && code === exitCodes.ok ? exitCodes.failed : code
  } finally {
    await Promise.all(listeners.map((listener) => listener.destroy())) // they never delay the exit
    stop.dispose()
  }
}

type Setup = Exclude<ReturnType<typeof configure>, { ok: false }>
type Started = Extract<Awaited<ReturnType<typeof start>>, { ok: true }>

/** configure reads the build's facts and spec and every variable, and creates the logger. */
function configure({ env, stdout, addOns = [], buildDir = defaultBuildDir }: RunInput) {
  let built: ReturnType<typeof readBuild>
  try {
    built = readBuild(buildDir)
  } catch (err) {
    const log = newLogger(stdout, 'info', { service: 'unknown', version: null })
    log.fatal({ reason: String(err) }, 'cannot start: build output is missing; run npm run build (or npm run stamp)')
    return { ok: false, code: exitCodes.failed } as const
  }
  const base = { service: built.build.service, version: built.build.version }
  const core = parseConfig(env, coreVars)
  const parsed = addOns.map((addOn) => parseConfig(env, addOn.vars))
  const problems = [...core.problems, ...checkConfig(core.config, env), ...parsed.flatMap((p) => p.problems)]
  if (problems.length > 0) {
    newLogger(stdout, 'info', base).fatal({ problems }, 'invalid configuration')
    return { ok: false, code: exitCodes.config } as const
  }
  // Every line logged while a request is handled carries its ids, read from the request context.
  const context = new AsyncLocalStorage<TrackedResponse>()
  const log = newLogger(stdout, core.config.logLevel, base, context)
  stdout.onDropped = (dropped) => log.warn({ dropped }, 'log lines dropped: stdout did not keep up')
  const configs = Object.fromEntries([
    ['core', redactConfig(core.config, coreVars)],
    ...addOns.map((addOn, i) => [addOn.name, redactConfig(parsed[i]?.config ?? {}, addOn.vars as Vars)]),
  ])
  return {
    ok: true,
    ...built,
    config: core.config,
    addOnConfigs: parsed.map((p) => p.config),
    effectiveConfig: () => configs as Record<string, Record<string, unknown>>,
    context,
    log,
    warnings: newWarnings(),
    startedAt: new Date(),
  } as const
}

/**
 * start opens the routes' dependencies, then the add-ons (whose work stops before the dependencies
 * close: hooks run in reverse), then the public port, last.
 */
async function start({ stdout, addOns = [], routes = newRoutes }: RunInput, setup: Setup, listeners: Listener[]) {
  const { config, log } = setup
  const lifecycle = newLifecycle()
  const failed = async (fields: object, message: string) => {
    log.fatal(fields, message)
    lifecycle.beginDrain()
    await lifecycle.runHooks(log, performance.now() + config.shutdownTimeoutMs) // close what was opened
    return { ok: false, code: exitCodes.failed } as const
  }
  let http: Listener | undefined
  const parts: AddOnParts[] = []
  try {
    const deps = { build: setup.build, config, spec: setup.spec, startedAt: setup.startedAt, lifecycle, log }
    parts.push({ routes: await routes(deps) })
  } catch (err) {
    return failed({ err }, `cannot start: ${messageOf(err)}`)
  }
  const ctx = newAddOnContext(setup, lifecycle, () => http, listeners, stdout)
  for (const [i, addOn] of addOns.entries()) {
    try {
      parts.push((await addOn.start({ ...ctx, config: setup.addOnConfigs[i] as never })) ?? {})
    } catch (err) {
      return failed({ addOn: addOn.name, err }, `cannot start ${addOn.name}: ${messageOf(err)}`)
    }
  }
  const table = Object.assign({}, ...parts.map((part) => part.routes)) as Routes
  const hooks = parts.flatMap((part) => part.hooks ?? [])
  const { context, warnings } = setup
  http = newServer({ log, output: stdout, config, context, routes: table, hooks, warn: warnings.for(log) })
  http.server.maxConnections = config.maxConnections ?? connectionBudget()
  try {
    await listen(http.server, config)
  } catch (err) {
    const fields = { port: config.port, host: config.host, code: (err as NodeJS.ErrnoException).code }
    return failed(fields, describeListenError(err, config, 'PORT, HOST'))
  }
  const { address, port } = http.server.address() as AddressInfo
  log.info({ address, port, commit: setup.build.commit, maxConnections: http.server.maxConnections }, 'listening')
  return { ok: true, http, lifecycle } as const
}

/** newAddOnContext returns what add-ons see of the service; server() is the public server once it exists. */
function newAddOnContext(
  setup: Setup,
  lifecycle: ReturnType<typeof newLifecycle>,
  server: () => Listener | undefined,
  listeners: Listener[],
  output: LogOutput,
): Omit<AddOnContext<unknown>, 'config'> {
  const { config, log, context, warnings } = setup
  return {
    core: config,
    log,
    build: setup.build,
    startedAt: setup.startedAt,
    lifecycle,
    server: {
      get inflight() {
        return server()?.inflight ?? 0
      },
      get connections() {
        return server()?.connections ?? 0
      },
      requests: () => server()?.requests() ?? [][Symbol.iterator](),
    },
    effectiveConfig: setup.effectiveConfig,
    serve: async (name, addr, routes, variable, options) => {
      const logger = log.child({ listener: name }, options?.quiet ? { level: 'warn' } : undefined)
      const http = newServer({ log: logger, output, config, context, routes, warn: warnings.for(logger) })
      listeners.push(http)
      await listen(http.server, addr).catch((err: unknown) => {
        throw new Error(describeListenError(err, addr, variable))
      })
      const { address, port } = http.server.address() as AddressInfo
      log.info({ listener: name, address, port }, `${name} listening`)
      return { address, port }
    },
  }
}

/**
 * drain is the shutdown after the first stop: /ready turns 503 and connections announce their
 * close; after SHUTDOWN_DELAY the listener closes and requests in flight finish; then the hooks
 * run. It resolves with the exit code, 1 when it ran past SHUTDOWN_TIMEOUT or a hook failed.
 */
async function drain({ config, log, warnings }: Setup, { http, lifecycle }: Started, forced: AbortSignal) {
  lifecycle.beginDrain()
  http.drain()
  await sleep(config.shutdownDelayMs, undefined, { signal: forced }).catch(() => {})
  if (forced.aborted) return exitCodes.failed
  const started = performance.now()
  const timeout = new AbortController()
  const closed = await Promise.race([
    http.close().then(() => true),
    sleep(config.shutdownTimeoutMs, false, { signal: AbortSignal.any([timeout.signal, forced]) }).catch(() => false),
  ])
  timeout.abort() // the timer must not hold the event loop once the drain is done
  if (forced.aborted) return exitCodes.failed
  const dropped = warnings.dropped()
  if (dropped > 0) log.warn({ dropped }, 'lines about misbehaving clients left out of the log')
  if (!closed) {
    const inflight = [...http.requests()].slice(0, 20).map((res) => ({
      method: res.req.method,
      path: res.path,
      requestId: res.requestId,
      ageMs: Math.round(performance.now() - res.startedAt),
    }))
    log.error({ connections: http.connections, inflight }, 'shutdown timed out: closing remaining connections')
    await http.destroy()
    return exitCodes.failed
  }
  const failed = await lifecycle.runHooks(log, started + config.shutdownTimeoutMs)
  if (failed.length > 0) {
    log.error({ failed }, 'shutdown finished with failed hooks')
    return exitCodes.failed
  }
  log.info({ durationMs: Math.round(performance.now() - started) }, 'shutdown complete')
  return exitCodes.ok
}

/**
 * listenForStop subscribes to events at once, before anything can fail, so a signal during start-up
 * is not lost. first resolves with the first stop, a signal or a fatal error; second, with the exit
 * code of a signal after it. Fatal errors during the shutdown are logged as they come.
 */
function listenForStop(events: RunInput['events']) {
  const first = Promise.withResolvers<{ kind: 'signal'; signal: string } | { kind: 'error'; err: Error }>()
  const second = Promise.withResolvers<number>()
  const stop = {
    log: undefined as Logger | undefined,
    failed: false,
    first: first.promise,
    second: second.promise,
    dispose,
  }
  let stopping = false
  function onSignal(signal: string) {
    if (!stopping) return ((stopping = true), first.resolve({ kind: 'signal', signal }))
    stop.log?.error({ signal }, 'second signal: exiting at once')
    second.resolve(128 + (signal === 'SIGINT' ? 2 : 15))
  }
  function onError(err: unknown) {
    const error = err instanceof Error ? err : new Error(String(err))
    if (stopping) stop.log?.fatal({ err: error }, 'uncaught error during shutdown')
    stop.failed = stopping = true
    first.resolve({ kind: 'error', err: error })
  }
  function dispose() {
    for (const signal of signals) events.off(signal, onSignal)
    for (const event of errors) events.off(event, onError)
  }
  for (const signal of signals) events.on(signal, onSignal)
  for (const event of errors) events.on(event, onError)
  return stop
}

const signals = ['SIGTERM', 'SIGINT'] as const
const errors = ['uncaughtException', 'unhandledRejection'] as const

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}
