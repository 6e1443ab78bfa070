import { AsyncLocalStorage } from 'node:async_hooks'
import type { EventEmitter } from 'node:events'
import type { AddressInfo } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import type { AddOn, AddOnContext, AddOnParts } from './addon.ts'
import { type BuildInfo, buildDir as defaultBuildDir, readBuild } from './build-info.ts'
import { checkConfig, type Config, coreVars, type Env, parseConfig, redactConfig, type Vars } from './config.ts'
import { newLogLimiter, newWarn } from './client-error.ts'
import { connectionBudget } from './connections.ts'
import { newLifecycle } from './lifecycle.ts'
import { describeListenError, listen } from './listen.ts'
import { type Logger, type LogOutput, newLogger } from './log.ts'
import type { TrackedResponse } from './response.ts'
import type { Routes } from './router.ts'
import { type RouteDeps, newRoutes } from './routes.ts'
import { type HTTPServer, newServer } from './server.ts'

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

type Stop = { kind: 'signal'; signal: string } | { kind: 'error'; err: Error }

const signalNumbers: Record<string, number> = { SIGINT: 2, SIGTERM: 15 }

/**
 * run starts the service and serves until a stop signal, then drains and returns the exit code:
 * 0 after a clean shutdown, 1 when the service failed (listen error, start-up error, fatal error,
 * drain past SHUTDOWN_TIMEOUT), 2 for invalid configuration, 128 + the signal number when a second
 * signal cut the shutdown short. Everything that can fail is checked before the port opens. It
 * throws only for bugs, and it removes its listeners from events before it returns.
 */
export async function run(input: RunInput): Promise<number> {
  const stop = listenForStop(input.events)
  const listeners: HTTPServer[] = [] // the add-ons' own: up through the drain, so a stuck drain can be inspected
  try {
    const setup = configure(input)
    if (!setup.ok) return setup.code
    stop.log = setup.log
    const started = await start(input, setup, listeners)
    if (!started.ok) return started.code
    return await shutdown(await stop.first, stop, started.http, started.lifecycle, setup)
  } finally {
    await Promise.all(listeners.map((server) => server.destroy())) // they never delay the exit
    stop.dispose()
  }
}

type Setup = Exclude<ReturnType<typeof configure>, { ok: false }>

/** configure reads the build's facts and spec and every variable, and creates the logger. */
function configure({ env, stdout, addOns = [], buildDir = defaultBuildDir }: RunInput) {
  let built: { build: BuildInfo; spec: Buffer }
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
  const configs = parsed.map((p) => p.config)
  const problems = [...core.problems, ...checkConfig(core.config, env), ...parsed.flatMap((p) => p.problems)]
  if (problems.length > 0) {
    newLogger(stdout, 'info', base).fatal({ problems }, 'invalid configuration')
    return { ok: false, code: exitCodes.config } as const
  }
  // Every line logged while a request is handled carries its ids, read from the request context.
  const context = new AsyncLocalStorage<TrackedResponse>()
  const log = newLogger(stdout, core.config.logLevel, base, context)
  stdout.onDropped = (dropped) => log.warn({ dropped }, 'log lines dropped: stdout did not keep up')
  // At most 10 lines a second about misbehaving clients, whichever listener they reach.
  const limiter = newLogLimiter(10, 1000)
  return { ok: true, ...built, config: core.config, configs, context, log, limiter, startedAt: new Date() } as const
}

/**
 * start opens the dependencies, the add-ons' and the routes', then the public port, last. On a
 * failure it logs one line and closes what it had opened.
 */
async function start(input: RunInput, setup: Setup, listeners: HTTPServer[]) {
  const { config, log } = setup
  const { stdout, addOns = [] } = input
  const lifecycle = newLifecycle()
  const failed = async (fields: object, message: string) => {
    log.fatal(fields, message)
    await lifecycle.runHooks(log, performance.now() + config.shutdownTimeoutMs)
    return { ok: false, code: exitCodes.failed } as const
  }
  let http: HTTPServer | undefined
  const ctx = newAddOnContext(setup, lifecycle, () => http, listeners, stdout, addOns)
  const parts: AddOnParts[] = []
  for (const [i, addOn] of addOns.entries()) {
    try {
      parts.push((await addOn.start({ ...ctx, config: setup.configs[i] as never })) ?? {})
    } catch (err) {
      return failed({ addOn: addOn.name, err }, `cannot start ${addOn.name}: ${messageOf(err)}`)
    }
  }
  try {
    const deps = { build: setup.build, config, spec: setup.spec, startedAt: setup.startedAt, lifecycle, log }
    parts.push({ routes: await (input.routes ?? newRoutes)(deps) })
  } catch (err) {
    return failed({ err }, `cannot start: ${messageOf(err)}`)
  }
  const routes = Object.assign({}, ...parts.map((part) => part.routes)) as Routes
  const hooks = parts.flatMap((part) => part.hooks ?? [])
  http = newServer({ log, output: stdout, config, context: setup.context, routes, hooks, limiter: setup.limiter })
  http.server.maxConnections = config.maxConnections ?? connectionBudget()
  try {
    await listen(http.server, config)
  } catch (err) {
    return failed(
      { port: config.port, host: config.host, code: codeOf(err) },
      describeListenError(err, config, 'PORT, HOST'),
    )
  }
  const { address, port } = http.server.address() as AddressInfo
  log.info({ address, port, commit: setup.build.commit, maxConnections: http.server.maxConnections }, 'listening')
  return { ok: true, http, lifecycle } as const
}

/** newAddOnContext returns what add-ons see of the service; server() is the public server once it exists. */
function newAddOnContext(
  setup: Setup,
  lifecycle: ReturnType<typeof newLifecycle>,
  server: () => HTTPServer | undefined,
  listeners: HTTPServer[],
  output: LogOutput,
  addOns: readonly AddOn[],
): Omit<AddOnContext<unknown>, 'config'> {
  const { config, log, context } = setup
  return {
    core: config,
    log,
    build: setup.build,
    startedAt: setup.startedAt,
    lifecycle,
    server: {
      get inflight() {
        return server()?.inflight ?? { size: 0, [Symbol.iterator]: [][Symbol.iterator] }
      },
      get draining() {
        return server()?.draining ?? false
      },
      count: () => server()?.count() ?? Promise.resolve(0),
    },
    effectiveConfig: () => describeConfig(config, addOns, setup.configs),
    warnLimited: newWarn(log, setup.limiter),
    serve: async (name, addr, routes, variable) => {
      const logger = log.child({ listener: name })
      const http = newServer({ log: logger, output, config, context, routes, limiter: setup.limiter })
      listeners.push(http)
      await listen(http.server, addr).catch((err: unknown) => {
        throw new Error(describeListenError(err, addr, variable))
      })
      const { address, port } = http.server.address() as AddressInfo
      logger.info({ address, port }, `${name} listening`)
      return { address, port }
    },
  }
}

/** shutdown drains after the first stop, and returns the exit code; a second signal cuts it short. */
async function shutdown(
  first: Stop,
  stop: ReturnType<typeof listenForStop>,
  http: HTTPServer,
  lifecycle: ReturnType<typeof newLifecycle>,
  { config, log }: Setup,
): Promise<number> {
  if (first.kind === 'error') log.fatal({ err: first.err }, 'shutdown started after an uncaught error')
  else log.info({ signal: first.signal }, 'shutdown started')
  lifecycle.beginDrain()
  http.drain()
  const forced = new AbortController()
  const outcome = await Promise.race([drain(http, lifecycle, config, log, forced.signal), stop.second])
  if (outcome.kind === 'drained') return stop.failed && outcome.code === exitCodes.ok ? exitCodes.failed : outcome.code
  forced.abort()
  log.error({ signal: outcome.signal }, 'second signal: exiting at once')
  await http.destroy()
  return 128 + (signalNumbers[outcome.signal] ?? 0)
}

/** drain runs the shutdown sequence after the signal and returns the exit code. */
async function drain(
  http: HTTPServer,
  lifecycle: ReturnType<typeof newLifecycle>,
  config: Config,
  log: Logger,
  forced: AbortSignal,
): Promise<{ kind: 'drained'; code: number }> {
  const drained = (code: number) => ({ kind: 'drained', code }) as const
  // A second signal (forced) cuts the delay short; the timer rejects then, and that is all it means.
  if (config.shutdownDelayMs > 0) await sleep(config.shutdownDelayMs, undefined, { signal: forced }).catch(() => {})
  if (forced.aborted) return drained(exitCodes.failed)
  const started = performance.now()
  const deadline = started + config.shutdownTimeoutMs
  const timeout = new AbortController()
  forced.addEventListener('abort', () => timeout.abort(), { once: true })
  const closed = await Promise.race([
    http.close().then(() => true),
    sleep(config.shutdownTimeoutMs, false, { signal: timeout.signal }).catch(() => false),
  ])
  timeout.abort() // the timer must not hold the event loop once the drain is done
  if (!closed) {
    const inflight = [...http.inflight].slice(0, 20).map((res) => ({
      method: res.req.method,
      path: res.path,
      requestId: res.requestId,
      ageMs: Math.round(performance.now() - res.startedAt),
    }))
    log.error({ connections: await http.count(), inflight }, 'shutdown timed out: closing remaining connections')
    await http.destroy()
    return drained(exitCodes.failed)
  }
  const failed = await lifecycle.runHooks(log, deadline)
  if (failed.length > 0) {
    log.error({ failed }, 'shutdown finished with failed hooks')
    return drained(exitCodes.failed)
  }
  log.info({ durationMs: Math.round(performance.now() - started) }, 'shutdown complete')
  return drained(exitCodes.ok)
}

/**
 * listenForStop subscribes to events at once, before anything can fail, so a signal during
 * start-up is not lost. first resolves with the first stop, a signal or a fatal error; second with
 * a signal that arrives after it. Fatal errors during the shutdown are logged as they come.
 */
function listenForStop(events: RunInput['events']) {
  let resolveFirst: (stop: Stop) => void = () => {}
  let resolveSecond: (stop: { kind: 'signal'; signal: string }) => void = () => {}
  let stopping = false
  const stop = {
    log: undefined as Logger | undefined,
    failed: false,
    first: new Promise<Stop>((resolve) => (resolveFirst = resolve)),
    second: new Promise<{ kind: 'signal'; signal: string }>((resolve) => (resolveSecond = resolve)),
    dispose() {
      events.off('SIGTERM', onSignal)
      events.off('SIGINT', onSignal)
      events.off('uncaughtException', onError)
      events.off('unhandledRejection', onError)
    },
  }
  function onSignal(signal: string) {
    if (stopping) return resolveSecond({ kind: 'signal', signal })
    stopping = true
    resolveFirst({ kind: 'signal', signal })
  }
  function onError(err: unknown) {
    const error = err instanceof Error ? err : new Error(String(err))
    stop.failed = true
    if (stopping) stop.log?.fatal({ err: error }, 'uncaught error during shutdown')
    stopping = true
    resolveFirst({ kind: 'error', err: error })
  }
  events.on('SIGTERM', onSignal)
  events.on('SIGINT', onSignal)
  events.on('uncaughtException', onError)
  events.on('unhandledRejection', onError)
  return stop
}

/** describeConfig returns every variable's value by owner, core first, secrets redacted. */
function describeConfig(config: Config, addOns: readonly AddOn[], configs: object[]) {
  const described: Record<string, Record<string, unknown>> = { core: redactConfig(config, coreVars) }
  for (const [i, addOn] of addOns.entries()) {
    described[addOn.name] = redactConfig(configs[i] as Record<string, unknown>, addOn.vars as Vars)
  }
  return described
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

function codeOf(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code
}
