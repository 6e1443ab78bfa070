import { AsyncLocalStorage } from 'node:async_hooks'
import { type EventEmitter, once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import type { AddOn, AddOnContext, AddOnParts } from './addon.ts'
import { buildDir, readBuild } from './build-info.ts'
import { type Address, checkConfig, coreVars, type Env, parseConfig, redactConfig } from './config.ts'
import { connectionBudget } from './connections.ts'
import { newLifecycle } from './lifecycle.ts'
import { type Logger, type LogOutput, newLogger, newWarnings } from './log.ts'
import type { TrackedResponse } from './response.ts'
import type { Routes } from './router.ts'
import { type RouteDeps, newRoutes } from './routes.ts'
import { type Listener, newServer, type RequestHooks } from './server.ts'

/** RunInput is what run() takes from the process; tests hand in their own. */
export interface RunInput {
  env: Env
  stdout: LogOutput // receives the JSON log lines
  /** events delivers SIGTERM and SIGINT (a second one stops at once), uncaughtException and unhandledRejection. */
  events: Pick<EventEmitter, 'on' | 'off'>
  addOns?: readonly AddOn<any>[] // the ones switched on (cmd/server/main.ts)
  routes?: (deps: RouteDeps) => Routes | Promise<Routes> // the route table (routes.ts); tests add to it
}

/** Exit codes run() returns (README.md); a second signal gives 128 + its number. */
export const exitCodes = { ok: 0, failed: 1, config: 2 } as const

/** run is the service's life: configure, start, serve until a stop, drain; it returns the exit code. */
export async function run(input: RunInput): Promise<number> {
  const stop = watchStop(input.events)
  const listeners: Listener[] = [] // the add-ons' own, open through the drain to inspect a stuck one
  try {
    const setup = configure(input)
    if (typeof setup === 'number') return setup
    stop.log = setup.log
    const http = await start(input, setup, listeners)
    if (typeof http === 'number') return http
    const { signal, err } = await stop.first
    if (err !== undefined) setup.log.fatal({ err }, 'shutdown started after an uncaught error')
    else setup.log.info({ signal }, 'shutdown started')
    const code = await Promise.race([drain(setup, http, stop.forced), stop.second])
    if (stop.forced.aborted) return await http.destroy().then(() => stop.second) // cut every connection
    return stop.failed && code === exitCodes.ok ? exitCodes.failed : code
  } finally {
    await Promise.all(listeners.map((listener) => listener.destroy()))
    stop.dispose()
  }
}

type Setup = Exclude<ReturnType<typeof configure>, number>

/** configure reads the build's facts and spec and every variable, and creates the logger. */
function configure({ env, stdout, addOns = [] }: RunInput) {
  let built: ReturnType<typeof readBuild>
  try {
    built = readBuild(buildDir)
  } catch (err) {
    const log = newLogger(stdout, 'info', { service: 'unknown', version: null })
    log.fatal({ reason: String(err) }, 'cannot start: build output is missing; run npm run build (or npm run stamp)')
    return exitCodes.failed
  }
  const base = { service: built.build.service, version: built.build.version }
  const core = parseConfig(env, coreVars)
  const parsed = addOns.map((addOn) => parseConfig(env, addOn.vars))
  const problems = [...core.problems, ...checkConfig(core.config, env), ...parsed.flatMap((p) => p.problems)]
  if (problems.length > 0) {
    newLogger(stdout, 'info', base).fatal({ problems }, 'invalid configuration')
    return exitCodes.config
  }
  const context = new AsyncLocalStorage<TrackedResponse>() // the request a log line is written for
  const log = newLogger(stdout, core.config.logLevel, base, context)
  stdout.onDropped = (dropped) => log.warn({ dropped }, 'log lines dropped: stdout did not keep up')
  const redacted = addOns.map((addOn, i) => [addOn.name, redactConfig(parsed[i]!.config, addOn.vars)])
  const configs = Object.fromEntries([['core', redactConfig(core.config, coreVars)], ...redacted])
  return {
    ...built,
    config: core.config,
    addOnConfigs: parsed.map((p) => p.config),
    effectiveConfig: () => configs,
    output: stdout,
    context,
    log,
    warnings: newWarnings(),
    startedAt: new Date(),
    lifecycle: newLifecycle(),
  }
}

/** newListener returns a node:http server handled as the service's are: ids, logs, 4xx and 500 answers. */
function newListener(setup: Setup, log: Logger, routes: Routes, hooks?: RequestHooks[]) {
  const { output, config, context, warnings } = setup
  return newServer({ log, output, config, context, routes, hooks, warn: warnings.for(log) })
}

/**
 * start opens the routes' dependencies, then the add-ons, then the public port (shutdown hooks run in
 * reverse). When something cannot start, it closes what did and returns the exit code.
 */
async function start({ addOns = [], routes = newRoutes }: RunInput, setup: Setup, listeners: Listener[]) {
  const { build, spec, config, log, startedAt, lifecycle } = setup
  const failed = async (fields: object, message: string) => {
    log.fatal(fields, message)
    lifecycle.beginDrain()
    await lifecycle.runHooks(log, performance.now() + config.shutdownTimeoutMs)
    return exitCodes.failed
  }
  let http: Listener | undefined
  const ctx = addOnContext(setup, listeners, () => http)
  const parts: AddOnParts[] = []
  let starting = '' // '' for the routes' dependencies
  try {
    parts.push({ routes: await routes({ build, config, spec, startedAt, lifecycle, log }) })
    for (const [i, addOn] of addOns.entries()) {
      starting = addOn.name
      parts.push((await addOn.start({ ...ctx, config: setup.addOnConfigs[i] as never })) ?? {})
    }
  } catch (err) {
    const message = `cannot start${starting && ` ${starting}`}: ${err instanceof Error ? err.message : String(err)}`
    return failed({ addOn: starting || undefined, err }, message)
  }
  const table: Routes = Object.assign({}, ...parts.map((part) => part.routes))
  const hooks = parts.flatMap((part) => part.hooks ?? [])
  http = newListener(setup, log, table, hooks)
  http.server.maxConnections = config.maxConnections ?? connectionBudget()
  try {
    const { address, port } = await listen(http, config, 'PORT, HOST')
    log.info({ address, port, commit: build.commit, maxConnections: http.server.maxConnections }, 'listening')
  } catch (err) {
    return failed({ port: config.port, host: config.host }, (err as Error).message)
  }
  return http
}

/** addOnContext returns what add-ons see of the service; http() is the public listener once it exists. */
function addOnContext(setup: Setup, listeners: Listener[], http: () => Listener | undefined) {
  const { config, log, build, startedAt, lifecycle, effectiveConfig } = setup
  const ctx: Omit<AddOnContext<unknown>, 'config'> = {
    core: config,
    log,
    build,
    startedAt,
    lifecycle,
    effectiveConfig,
    server: {
      get inflight() {
        return http()?.inflight ?? 0
      },
      get connections() {
        return http()?.connections ?? 0
      },
      requests: () => http()?.requests() ?? [],
    },
    serve: async (name, addr, routes, variable, options) => {
      const logger = log.child({ listener: name }, options?.quiet ? { level: 'warn' } : undefined)
      const listener = newListener(setup, logger, routes)
      listeners.push(listener)
      const { address, port } = await listen(listener, addr, variable)
      log.info({ listener: name, address, port }, `${name} listening`)
      return { address, port }
    },
  }
  return ctx
}

/** listen opens listener on addr, read from the variables named, or rejects with one line saying why not. */
async function listen({ server }: Listener, { host, port }: Address, names: string): Promise<AddressInfo> {
  const listening = once(server, 'listening') // rejects on 'error', which a taken port emits
  server.listen({ port, host: host || undefined })
  await listening.catch((err: Error) => Promise.reject(new Error(`cannot listen (${names}): ${err.message}`)))
  return server.address() as AddressInfo
}

/**
 * drain: /ready turns 503 and connections announce their close; after SHUTDOWN_DELAY the listener
 * closes and requests in flight finish within SHUTDOWN_TIMEOUT; then the hooks run. forced ends it.
 */
async function drain({ config, log, lifecycle, warnings }: Setup, http: Listener, forced: AbortSignal) {
  lifecycle.beginDrain()
  http.drain()
  if (!(await sleep(config.shutdownDelayMs, true, { signal: forced }).catch(() => false))) return exitCodes.failed
  const started = performance.now()
  // The timer is unref'd: a connection still open holds the event loop, and the timer must not.
  const timedOut = sleep(config.shutdownTimeoutMs, false, { signal: forced, ref: false }).catch(() => false)
  const closed = await Promise.race([http.close().then(() => true), timedOut])
  if (forced.aborted) return exitCodes.failed // run() cuts the connections and returns the signal's code
  const dropped = warnings.dropped()
  if (dropped > 0) log.warn({ dropped }, 'lines about misbehaving clients left out of the log')
  if (!closed) {
    const inflight = [...http.requests()].slice(0, 20).map(({ req, path, requestId, startedAt }) => {
      return { method: req.method, path, requestId, ageMs: Math.round(performance.now() - startedAt) }
    })
    log.error({ connections: http.connections, inflight }, 'shutdown timed out: closing remaining connections')
    await http.destroy()
    return exitCodes.failed
  }
  const failed = await lifecycle.runHooks(log, started + config.shutdownTimeoutMs)
  if (failed.length > 0) log.error({ failed }, 'shutdown finished with failed hooks')
  else log.info({ durationMs: Math.round(performance.now() - started) }, 'shutdown complete')
  return failed.length > 0 ? exitCodes.failed : exitCodes.ok
}

/**
 * watchStop listens at once, so a stop during start-up is not lost: first resolves with the first
 * signal or error; a signal after it aborts forced and resolves second with its exit code.
 */
function watchStop(events: RunInput['events']) {
  const first = Promise.withResolvers<{ signal?: string; err?: Error }>()
  const second = Promise.withResolvers<number>()
  const forced = new AbortController()
  let stopping = false
  const onSignal = (signal: string) => {
    if (!stopping) return ((stopping = true), first.resolve({ signal }))
    stop.log?.error({ signal }, 'second signal: exiting at once')
    forced.abort()
    second.resolve(128 + (signal === 'SIGINT' ? 2 : 15))
  }
  const onError = (err: unknown) => {
    const error = err instanceof Error ? err : new Error(String(err))
    if (stopping) stop.log?.fatal({ err: error }, 'uncaught error during shutdown')
    stop.failed = stopping = true
    first.resolve({ err: error })
  }
  const on = { SIGTERM: onSignal, SIGINT: onSignal, uncaughtException: onError, unhandledRejection: onError }
  for (const [event, listener] of Object.entries(on)) events.on(event, listener)
  const dispose = () => Object.entries(on).forEach(([event, listener]) => events.off(event, listener))
  const stop = { log: undefined as Logger | undefined, failed: false, dispose, forced: forced.signal }
  return Object.assign(stop, { first: first.promise, second: second.promise })
}
