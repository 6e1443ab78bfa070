import type { AsyncLocalStorage } from 'node:async_hooks'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import type { IntervalHistogram } from 'node:perf_hooks'
import type { BuildInfo } from './build-info.ts'
import type { Address, Config } from './config.ts'
import type { Logger } from './log.ts'
import type { TrackedResponse } from './response.ts'
import { handleCPUProfile, handleHeapProfile, newProfileLock, type ProfileLock } from './profile.ts'
import type { Routes } from './routes.ts'
import { type HTTPServer, newServer } from './server.ts'
import { handleVars, startEventLoopDelay } from './vars.ts'

/** DebugRouteDeps is everything the debug handlers may need. */
export interface DebugRouteDeps {
  config: Config
  build: BuildInfo
  startedAt: Date
  log: Logger
  /** main is the public server, which /debug/vars reports on. */
  main: HTTPServer
  isDraining: () => boolean
  /** eventLoopDelay is enabled while the debug listener runs. */
  eventLoopDelay: IntervalHistogram
  /** profiles lets one profile run at a time. */
  profiles: ProfileLock
  /** shutdown aborts when the debug listener closes. */
  shutdown: AbortSignal
}

/**
 * newDebugRoutes is the one place that lists the debug listener's routes, served on DEBUG_ADDR only,
 * never on the public port. openapi.yaml documents them under the tag `debug`, and the tests fail
 * when the two drift apart.
 */
export function newDebugRoutes(deps: DebugRouteDeps): Routes {
  const profile = { log: deps.log, service: deps.build.service, lock: deps.profiles, shutdown: deps.shutdown }
  return {
    '/debug/vars': { GET: handleVars(deps) },
    '/debug/pprof/profile': { GET: handleCPUProfile(profile) },
    '/debug/pprof/heap': { GET: handleHeapProfile(profile) },
  }
}

/** DebugDeps is what startDebug needs from run(). */
export interface DebugDeps extends Omit<DebugRouteDeps, 'eventLoopDelay' | 'profiles' | 'shutdown'> {
  addr: Address
  /** context is the request context the logger reads, shared with the main server. */
  context: AsyncLocalStorage<TrackedResponse>
  /** routes builds the route table; tests use it to see the routes served. */
  routes?: (deps: DebugRouteDeps) => Routes
}

/** DebugServer is the running debug listener. */
export interface DebugServer {
  readonly http: HTTPServer
  /**
   * close cuts every connection at once and abandons a profile in progress: the debug listener
   * never delays the exit. It resolves once the listener and the inspector session are released.
   */
  close(): Promise<void>
}

/**
 * startDebug opens the debug listener on addr, a second HTTP server with its own route table, and
 * resolves once it listens and has logged `debug listening`, plus a warning when the address is
 * reachable from other machines. It rejects with the listen error, having closed what it opened.
 */
export async function startDebug({ addr, context, routes = newDebugRoutes, ...deps }: DebugDeps): Promise<DebugServer> {
  const log = deps.log.child({ listener: 'debug' })
  const eventLoopDelay = startEventLoopDelay()
  const shutdown = new AbortController()
  const profiles = newProfileLock()
  const routeDeps = { ...deps, log, eventLoopDelay, profiles, shutdown: shutdown.signal }
  const http = newServer({ log, config: deps.config, context, routes: routes(routeDeps) })
  async function close() {
    const closed = once(http.server, 'close')
    // A cut response writes its access-log line on 'close', which may come after the server's own
    // 'close': wait for both, or a process exiting right after run() returns loses the line.
    const responses = [...http.inflight].map((res) => new Promise((resolve) => res.once('close', resolve)))
    shutdown.abort()
    http.destroy()
    eventLoopDelay.disable()
    await Promise.all([closed, profiles.settled(), ...responses])
  }

  try {
    const listening = once(http.server, 'listening')
    http.server.listen({ port: addr.port, host: addr.host || undefined })
    await listening
  } catch (err) {
    await close()
    throw err
  }
  const { address, port } = http.server.address() as AddressInfo
  log.info({ address, port }, 'debug listening')
  if (!isLoopback(address)) {
    log.warn({ address, port }, 'debug listener is reachable from other machines: set DEBUG_ADDR to 127.0.0.1:<port>')
  }
  return { http, close }
}

function isLoopback(address: string): boolean {
  return address === '::1' || /^(?:::ffff:)?127\./.test(address)
}

/** describeDebugListenError says in one line why the debug listener could not listen on addr. */
export function describeDebugListenError(err: unknown, { host, port }: Address): string {
  switch ((err as NodeJS.ErrnoException | undefined)?.code) {
    case 'EADDRINUSE':
      return `cannot listen: DEBUG_ADDR port ${port} is already in use`
    case 'EACCES':
      return `cannot listen: no permission to use DEBUG_ADDR port ${port}`
    case 'EADDRNOTAVAIL':
      return `cannot listen: DEBUG_ADDR host ${host} is not an address of this machine`
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `cannot listen: DEBUG_ADDR host ${host} does not resolve`
    default:
      return `cannot listen on DEBUG_ADDR port ${port}: ${err instanceof Error ? err.message : String(err)}`
  }
}
