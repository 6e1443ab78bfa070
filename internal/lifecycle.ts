import type { Logger } from './log.ts'

/**
 * ShutdownHook releases one resource (a database pool, a queue client). It gets a signal that
 * aborts when the shutdown deadline passes; a hook still running then is abandoned and reported.
 */
export type ShutdownHook = (signal: AbortSignal) => unknown

/** Lifecycle is what the service's own code sees of start-up and shutdown. */
export interface Lifecycle {
  /** draining is true from the moment shutdown begins: /ready answers 503 from then on. */
  readonly draining: boolean
  /**
   * onShutdown registers hook to run once the server has stopped serving. Hooks run one at a time,
   * in reverse order of registration (close what you opened last first), each bounded by the time
   * left before SHUTDOWN_TIMEOUT, each logged with its duration.
   */
  onShutdown(name: string, hook: ShutdownHook): void
}

/** HookResult says whether every hook finished in time and without error, and which did not. */
export interface HookResult {
  ok: boolean
  unfinished: string[]
}

/** newLifecycle returns a Lifecycle and the controls run() uses to drive it. */
export function newLifecycle(): Lifecycle & {
  beginDrain(): void
  runHooks(log: Logger, deadline: number): Promise<HookResult>
} {
  let draining = false
  const hooks: { name: string; hook: ShutdownHook }[] = []
  return {
    get draining() {
      return draining
    },
    onShutdown(name, hook) {
      hooks.push({ name, hook })
    },
    beginDrain() {
      draining = true
    },
    /** runHooks runs the hooks in reverse order until deadline, a performance.now() timestamp. */
    async runHooks(log, deadline) {
      const result: HookResult = { ok: true, unfinished: [] }
      let expired = false
      for (const { name, hook } of hooks.toReversed()) {
        const remaining = deadline - performance.now()
        // Once one hook has used up the time, the rest do not start: a timer may fire a fraction
        // of a millisecond early, and a hook must not run in that sliver.
        if (expired || remaining <= 0) {
          result.ok = false
          result.unfinished.push(name)
          continue
        }
        const started = performance.now()
        // Not AbortSignal.timeout(): its timer is unref'd, so a hook waiting on nothing would let
        // the process exit mid-shutdown instead of being reported.
        const controller = new AbortController()
        const timeout = controller.signal
        const timer = setTimeout(() => controller.abort(new Error(`shutdown hook ${name} timed out`)), remaining)
        try {
          await Promise.race([Promise.resolve().then(() => hook(timeout)), rejectOnAbort(timeout)])
          log.info({ hook: name, durationMs: elapsed(started) }, 'shutdown hook finished')
        } catch (err) {
          result.ok = false
          if (timeout.aborted) {
            expired = true
            result.unfinished.push(name)
            log.error({ hook: name, durationMs: elapsed(started) }, 'shutdown hook timed out')
          } else {
            log.error({ hook: name, durationMs: elapsed(started), err }, 'shutdown hook failed')
          }
        } finally {
          clearTimeout(timer)
        }
      }
      return result
    },
  }
}

function rejectOnAbort(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason), { once: true }))
}

function elapsed(started: number): number {
  return Math.round(performance.now() - started)
}
