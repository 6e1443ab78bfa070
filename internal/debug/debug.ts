import type { AddOn, AddOnContext } from '../addon.ts'
import { address, type Vars } from '../config.ts'
import type { Routes } from '../router.ts'

/** debugVars declares the debug listener's one variable. */
export const debugVars = {
  debugAddr: {
    name: 'DEBUG_ADDR',
    default: '',
    ...address,
  },
} satisfies Vars

/**
 * debug is the debug listener, the Node counterpart of Go's pprof and expvar (README.md in this
 * folder): a second HTTP listener on DEBUG_ADDR, off unless set, never on the public port.
 */
export const addOn: AddOn<typeof debugVars> = {
  name: 'debug',
  vars: debugVars,
  start: async (ctx) => {
    const addr = ctx.config.debugAddr
    if (addr === null) return
    // Loaded only when asked for: the inspector and its kin cost start-up time otherwise.
    const { routes, close } = await newDebugRoutes(ctx)
    const listening = await ctx.serve('debug', addr, routes, 'DEBUG_ADDR').catch(async (err: unknown) => {
      await close()
      throw err
    })
    // After the drain, a profile still running is abandoned: the debug listener never delays the exit.
    ctx.lifecycle.onShutdown('debug listener', close)
    const { address, port } = listening
    if (!isLoopback(address)) {
      ctx.log.warn(
        { address, port },
        'debug listener is reachable from other machines: set DEBUG_ADDR to 127.0.0.1:<port>',
      )
    }
  },
}

/**
 * newDebugRoutes lists the debug listener's routes, which debug.openapi.yaml documents, and
 * returns close, which abandons a profile in progress and stops sampling the event loop.
 */
export async function newDebugRoutes(
  ctx: AddOnContext<unknown>,
): Promise<{ routes: Routes; close: () => Promise<void> }> {
  const { cleanLeftovers, handleCPUProfile, handleHeapProfile, newProfileLock } = await import('./profile.ts')
  const { handleVars, startEventLoopDelay } = await import('./vars.ts')
  await cleanLeftovers(ctx.log)
  const eventLoopDelay = startEventLoopDelay()
  const shutdown = new AbortController()
  const lock = newProfileLock()
  const profile = { log: ctx.log, service: ctx.build.service, lock, shutdown: shutdown.signal }
  return {
    routes: {
      '/debug/vars': { GET: handleVars({ ...ctx, eventLoopDelay }) },
      '/debug/pprof/profile': { GET: handleCPUProfile(profile) },
      '/debug/pprof/heap': { GET: handleHeapProfile(profile) },
    },
    close: async () => {
      shutdown.abort()
      eventLoopDelay.disable()
      await lock.settled()
    },
  }
}

function isLoopback(address: string): boolean {
  return address === '::1' || /^(?:::ffff:)?127\./.test(address)
}
