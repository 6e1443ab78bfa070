import type { IncomingMessage } from 'node:http'
import type { BuildInfo } from './build-info.ts'
import type { Config } from './config.ts'
import { handleHealth, handleReady } from './health.ts'
import type { Lifecycle } from './lifecycle.ts'
import type { Logger } from './log.ts'
import { handleOpenAPI } from './openapi.ts'
import type { TrackedResponse } from './response.ts'

/**
 * Handler answers one request. Anything it throws or rejects with becomes a logged 500, so expected
 * outcomes (not found, invalid input) should be responses, not exceptions.
 */
export type Handler = (req: IncomingMessage, res: TrackedResponse) => void | Promise<void>

/** Method is an HTTP method a route can answer; GET routes answer HEAD too. */
export type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE'

/** Routes maps each exact path (no query string) to the handler for each of its methods. */
export type Routes = Record<string, Partial<Record<Method, Handler>>>

/**
 * RouteDeps is everything handlers may need. A service adds its own stores and clients here, opened
 * in run() with their cleanup registered through lifecycle.onShutdown.
 */
export interface RouteDeps {
  build: BuildInfo
  config: Config
  spec: Buffer
  startedAt: Date
  lifecycle: Lifecycle
  log: Logger
}

/**
 * newRoutes is the one place that lists every route the service answers; openapi.yaml documents the
 * same list, and the tests fail when the two drift apart.
 */
export function newRoutes(deps: RouteDeps): Routes {
  return {
    '/health': { GET: handleHealth(deps.build, deps.startedAt) },
    '/ready': { GET: handleReady(() => deps.lifecycle.draining) },
    '/openapi.yaml': { GET: handleOpenAPI(deps.spec) },
  }
}
