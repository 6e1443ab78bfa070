import { once } from 'node:events'
import type { Logger } from './log.ts'

/** ShutdownHook releases one resource (a database, a queue client); signal aborts at the deadline. */
export type ShutdownHook = (signal: AbortSignal) => unknown
/** ReadyCheck throws when a dependency cannot serve, with a message naming no secret; signal aborts at its timeout. */
export type ReadyCheck = (signal: AbortSignal) => unknown

/** Lifecycle is what the service's code sees of readiness and shutdown. */
export type Lifecycle = Pick<ReturnType<typeof newLifecycle>, 'stopping' | 'onShutdown' | 'addCheck'>

/** Readiness is the outcome of the checks. */
export type Readiness = { ok: true } | { ok: false; failing: { name: string; reason: string }[] }

// A check slower than a probe's default timeout (1 s) might as well fail; an outcome is reused for
// a second, so a storm of probes costs one round of checks.
const checkTimeoutMs = 800
const cacheMs = 1000

/** newLifecycle returns the Lifecycle, with the controls run() and /ready drive it by. */
export function newLifecycle() {
  const stopping = new AbortController()
  const hooks: { name: string; hook: ShutdownHook }[] = []
  const checks: { name: string; check: ReadyCheck }[] = []
  let cached = { at: -Infinity, outcome: Promise.resolve<Readiness>({ ok: true }) }
  return {
    /** stopping aborts when shutdown begins: /ready answers 503, and jobs and consumers wind down. */
    stopping: stopping.signal,
    /** onShutdown registers hook to run after serving stops: in reverse order, within SHUTDOWN_TIMEOUT, logged. */
    onShutdown: (name: string, hook: ShutdownHook) => void hooks.push({ name, hook }),
    /** addCheck registers a check /ready runs (README.md, Dependencies). */
    addCheck: (name: string, check: ReadyCheck) => void checks.push({ name, check }),
    beginDrain: () => stopping.abort(),
    /** readiness runs every check at once, or reuses an outcome younger than cacheMs. */
    readiness(): Promise<Readiness> {
      const now = performance.now()
      if (checks.length > 0 && now - cached.at >= cacheMs) cached = { at: now, outcome: runChecks(checks) }
      return cached.outcome
    },
    /** runHooks runs the hooks until deadline (performance.now()) and returns the names of those that failed. */
    async runHooks(log: Logger, deadline: number): Promise<string[]> {
      const failed: string[] = []
      for (const { name, hook } of hooks.toReversed()) {
        const started = performance.now()
        if (deadline <= started) {
          failed.push(name)
          continue
        }
        const { ok, timedOut, err } = await within(deadline - started, hook, `shutdown hook ${name} timed out`)
        const fields = { hook: name, durationMs: Math.round(performance.now() - started) }
        if (ok) log.info(fields, 'shutdown hook finished')
        else if (timedOut) log.error(fields, 'shutdown hook timed out')
        else log.error({ ...fields, err }, 'shutdown hook failed')
        if (!ok) failed.push(name)
        if (timedOut) deadline = 0 // a timer may fire a little early: the time is up all the same
      }
      return failed
    },
  }
}

async function runChecks(checks: { name: string; check: ReadyCheck }[]): Promise<Readiness> {
  const outcomes = await Promise.all(checks.map(({ check }) => within(checkTimeoutMs, check, 'timed out')))
  const failing = checks.flatMap(({ name }, i) => {
    const { ok, err } = outcomes[i]!
    return ok ? [] : [{ name, reason: err instanceof Error ? err.message : String(err) }]
  })
  return failing.length === 0 ? { ok: true } : { ok: false, failing }
}

/**
 * within runs fn with a signal that aborts after ms, and settles when fn does or at the timeout. Not
 * AbortSignal.timeout(): its timer is unref'd, so a hook waiting on nothing would end the process.
 */
async function within(ms: number, fn: (signal: AbortSignal) => unknown, timeoutMessage: string) {
  const controller = new AbortController()
  const timer = setTimeout(() => controller.abort(new Error(timeoutMessage)), Math.max(0, ms))
  const aborted = once(controller.signal, 'abort').then(() => Promise.reject(controller.signal.reason))
  try {
    await Promise.race([Promise.resolve().then(() => fn(controller.signal)), aborted])
    return { ok: true, timedOut: false, err: undefined as unknown }
  } catch (err) {
    return { ok: false, timedOut: controller.signal.aborted, err }
  } finally {
    clearTimeout(timer)
  }
}
