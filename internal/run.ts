import { AsyncLocalStorage } from 'node:async_hooks'
import { once } from 'node:events'
import type { EventEmitter } from 'node:events'
import type { AddressInfo } from 'node:net'
import type { DestinationStream } from 'pino'
import { type BuildInfo, readBuildInfo } from './build-info.ts'
import { type Config, type Env, parseConfig } from './config.ts'
import type { DebugRouteDeps, DebugServer } from './debug.ts'
import { newLifecycle } from './lifecycle.ts'
import { type Logger, newLogger } from './log.ts'
import { readSpec } from './openapi.ts'
import type { TrackedResponse } from './response.ts'
import { type RouteDeps, type Routes, newRoutes } from './routes.ts'
import { type HTTPServer, newServer } from './server.ts'

/** RunInput is everything run() takes from the process, so tests can hand in their own. */
export interface RunInput {
  /** env holds the configuration variables, as process.env does. */
  env: Env
  /** stdout receives the JSON log lines. */
  stdout: DestinationStream
  /**
   * events delivers 'SIGTERM' and 'SIGINT' (stop gracefully; a second one stops at once) and
   * 'uncaughtException' and 'unhandledRejection' (log as fatal, stop gracefully, exit 1). main
   * passes process; tests pass an EventEmitter and emit what they need.
   */
  events: Pick<EventEmitter, 'on' | 'off'>
  /** routes builds the route table; tests use it to add routes the service does not have. */
  routes?: (deps: RouteDeps) => Routes
  /** debugRoutes builds the debug listener's route table (DEBUG_ADDR); tests use it to see the routes. */
  debugRoutes?: (deps: DebugRouteDeps) => Routes
}

/** Exit codes run() returns; README.md documents them. */
export const exitCodes = { ok: 0, failed: 1, config: 2 } as const

const signalNumbers: Record<string, number> = { SIGINT: 2, SIGTERM: 15 }

/**
 * run starts the service and serves until a stop signal, then drains and returns the exit code:
 * 0 after a clean shutdown, 1 when the service failed (listen error, fatal error, drain past
 * SHUTDOWN_TIMEOUT), 2 for invalid configuration, 128 + the signal number when a second signal
 * cut the shutdown short. Everything that can fail is checked before the port opens. It throws
 * only for bugs, and it removes its listeners from events before it returns.
 */
export async function run({ env, stdout, events, routes = newRoutes, debugRoutes }: RunInput): Promise<number> {
  const startedAt = new Date()
  const stop = listenForStop(events)
  try {
    let build: BuildInfo
    let spec: Buffer
    try {
      build = readBuildInfo()
      spec = readSpec()
    } catch (err) {
      const log = newLogger(stdout, 'info', { service: 'unknown', version: null })
      log.fatal({ reason: String(err) }, 'cannot start: build output is incomplete; run npm run build')
      return exitCodes.failed
    }

    const parsed = parseConfig(env)
    if (!parsed.ok) {
      newLogger(stdout, 'info', build).fatal({ problems: parsed.problems }, 'invalid configuration')
      return exitCodes.config
    }
    const config = parsed.config
    const context = new AsyncLocalStorage<TrackedResponse>()
    const log = newLogger(stdout, config.logLevel, build, context)
    stop.log = log

    const lifecycle = newLifecycle()
    const deps = { build, config, spec, startedAt, lifecycle, log }
    const http = newServer({ log, config, context, routes: routes(deps) })
    try {
      await listen(http, config)
    } catch (err) {
      log.fatal({ port: config.port, host: config.host, code: codeOf(err) }, describeListenError(err, config))
      return exitCodes.failed
    }
    let debug: DebugServer | undefined
    if (config.debugAddr !== null) {
      const addr = config.debugAddr
      const isDraining = () => lifecycle.draining
      // Loaded only when asked for: the profiler and its imports cost start-up time otherwise.
      const { startDebug, describeDebugListenError } = await import('./debug.ts')
      try {
        debug = await startDebug({
          addr,
          config,
          build,
          startedAt,
          log,
          context,
          main: http,
          isDraining,
          routes: debugRoutes,
        })
      } catch (err) {
        log.fatal({ debugAddr: addr, code: codeOf(err) }, describeDebugListenError(err, addr))
        http.destroy()
        return exitCodes.failed
      }
    }
    const address = http.server.address() as AddressInfo
    log.info({ address: address.address, port: address.port, commit: build.commit }, 'listening')

    const reason = await stop.first
    if (reason instanceof Error) log.fatal({ err: reason }, 'shutdown started after an uncaught error')
    else log.info({ signal: reason }, 'shutdown started')
    lifecycle.beginDrain()
    http.drain()
    const forced = new AbortController()
    const code = await Promise.race([drain(http, lifecycle, config, log, forced.signal), stop.second])
    // The debug listener stays up through the drain, so a stuck drain can still be inspected, and
    // closes at once after it, abandoning any profile: it never delays the exit.
    await debug?.close()
    if (typeof code === 'string') {
      forced.abort()
      log.error({ signal: code }, 'second signal: exiting at once')
      http.destroy()
      return 128 + (signalNumbers[code] ?? 0)
    }
    return stop.failed && code === exitCodes.ok ? exitCodes.failed : code
  } finally {
    stop.dispose()
  }
}

/** drain runs the shutdown sequence after the signal and returns the exit code. */
async function drain(
  http: HTTPServer,
  lifecycle: ReturnType<typeof newLifecycle>,
  config: Config,
  log: Logger,
  forced: AbortSignal,
): Promise<number> {
  if (config.shutdownDelayMs > 0) await delay(config.shutdownDelayMs, forced)
  if (forced.aborted) return exitCodes.failed
  const started = performance.now()
  const deadline = started + config.shutdownTimeoutMs

  let timer: NodeJS.Timeout | undefined
  const timedOut = new Promise<false>((resolve) => {
    timer = setTimeout(resolve, config.shutdownTimeoutMs, false)
  })
  const closed = await Promise.race([http.close().then(() => true), timedOut])
  clearTimeout(timer)
  if (!closed) {
    const connections = await http.connections()
    log.error(
      {
        connections,
        inflight: [...http.inflight].slice(0, 20).map((res) => ({
          method: res.req.method,
          url: res.req.url,
          requestId: res.requestId,
          ageMs: Math.round(performance.now() - res.startedAt),
        })),
      },
      'shutdown timed out: closing remaining connections',
    )
    http.destroy()
    return exitCodes.failed
  }

  const hooks = await lifecycle.runHooks(log, deadline)
  if (!hooks.ok) {
    log.error({ unfinished: hooks.unfinished }, 'shutdown finished with failed hooks')
    return exitCodes.failed
  }
  log.info({ durationMs: Math.round(performance.now() - started) }, 'shutdown complete')
  return exitCodes.ok
}

/**
 * listenForStop subscribes to events at once, before anything can fail, so a signal during
 * start-up is not lost. first resolves with the first signal name or fatal error; second resolves
 * with the name of a signal that arrives after it. Fatal errors are logged as they come.
 */
function listenForStop(events: RunInput['events']) {
  let resolveFirst: (reason: string | Error) => void = () => {}
  let resolveSecond: (signal: string) => void = () => {}
  let stopping = false
  const stop = {
    log: undefined as Logger | undefined,
    failed: false,
    first: new Promise<string | Error>((resolve) => (resolveFirst = resolve)),
    second: new Promise<string>((resolve) => (resolveSecond = resolve)),
    dispose() {
      events.off('SIGTERM', onSignal)
      events.off('SIGINT', onSignal)
      events.off('uncaughtException', onError)
      events.off('unhandledRejection', onError)
    },
  }
  function onSignal(signal: string) {
    if (stopping) return resolveSecond(signal)
    stopping = true
    resolveFirst(signal)
  }
  function onError(err: unknown) {
    const error = err instanceof Error ? err : new Error(String(err))
    stop.failed = true
    if (stopping) stop.log?.fatal({ err: error }, 'uncaught error during shutdown')
    stopping = true
    resolveFirst(error)
  }
  events.on('SIGTERM', onSignal)
  events.on('SIGINT', onSignal)
  events.on('uncaughtException', onError)
  events.on('unhandledRejection', onError)
  return stop
}

async function listen(http: HTTPServer, config: Config): Promise<void> {
  const listening = once(http.server, 'listening')
  http.server.listen({ port: config.port, host: config.host || undefined })
  await listening
}

function codeOf(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code
}

function describeListenError(err: unknown, { port, host }: Config): string {
  switch (codeOf(err)) {
    case 'EADDRINUSE':
      return `cannot listen: port ${port} is already in use`
    case 'EACCES':
      return `cannot listen: no permission to use port ${port}`
    case 'EADDRNOTAVAIL':
      return `cannot listen: HOST ${host} is not an address of this machine`
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `cannot listen: HOST ${host} does not resolve`
    default:
      return `cannot listen on port ${port}: ${err instanceof Error ? err.message : String(err)}`
  }
}

/** delay resolves after ms, or as soon as signal aborts. */
function delay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms)
    signal.addEventListener('abort', () => resolve(clearTimeout(timer)), { once: true })
  })
}
