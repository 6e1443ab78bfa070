import type { BuildInfo } from './build-info.ts'
import type { Config } from './config.ts'
import { handleHealth, handleOpenAPI, handleReady } from './health.ts'
import type { Lifecycle, Readiness } from './lifecycle.ts'
import type { Logger } from './log.ts'
import type { Operations } from './api-types.ts'
import { type Routes, typedRoutes } from './router.ts'

/** RouteDeps is everything the service's handlers may need. */
export interface RouteDeps {
  build: BuildInfo
  config: Config
  spec: Buffer
  startedAt: Date
  lifecycle: Lifecycle & { readiness(): Promise<Readiness> }
  log: Logger
}

/**
 * newRoutes is the one place that lists the service's routes (add-ons bring their own), by
 * openapi.yaml's templates. It runs once, before the port opens: open dependencies here.
 */
export async function newRoutes(deps: RouteDeps): Promise<Routes> {
  // Open dependencies here, each with its cleanup and, if it can fail, its readiness check:
  //   const db = await openDatabase(deps.config.databaseUrl)
  //   deps.lifecycle.onShutdown('database', () => db.close())
  //   deps.lifecycle.addCheck('database', (signal) => db.ping({ signal }))
  return typedRoutes<Operations>()({
    '/health': { GET: handleHealth(deps.build, deps.startedAt) },
    '/ready': { GET: handleReady(deps.lifecycle) },
    '/openapi.yaml': { GET: handleOpenAPI(deps.spec) },
  })
}
