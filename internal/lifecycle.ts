import type { Logger } from './log.ts'

/**
 * ShutdownHook releases one resource (a database, a queue client). Its signal aborts when the
 * shutdown deadline passes; a hook still running then is abandoned and reported.
 */
export type ShutdownHook = (signal: AbortSignal) => unknown

/**
 * ReadyCheck tells whether a dependency can serve: it resolves when it can and throws or rejects,
 * with a message that names no secret, when it cannot. signal aborts at the check's timeout.
 */
export type ReadyCheck = (signal: AbortSignal) => unknown

/** Lifecycle is what the service's own code sees of start-up, readiness and shutdown. */
export interface Lifecycle {
  /**
   * stopping aborts the moment shutdown begins: /ready answers 503 from then on, and work that is
   * not a request (jobs, queue consumers) takes nothing new and winds down.
   */
  readonly stopping: AbortSignal
  /**
   * onShutdown registers hook to run once the server has stopped serving: one at a time, in
   * reverse order of registration, each within what is left of SHUTDOWN_TIMEOUT, each logged.
   */
  onShutdown(name: string, hook: ShutdownHook): void
  /** addCheck registers a readiness check that /ready runs (README.md, Dependencies). */
  addCheck(name: string, check: ReadyCheck): void
}

/** Readiness is the outcome of the checks: the failing ones with why, or none. */
export type Readiness = { ok: true } | { ok: false; failing: { name: string; reason: string }[] }

// A check slower than a readiness probe's default timeout (1 s) might as well fail; an outcome
// is reused for a second, so a storm of probes costs one round of checks.
const checkTimeoutMs = 800
const cacheMs = 1000

/** newLifecycle returns a Lifecycle and the controls run() and /ready drive it with. */
export function newLifecycle() {
  const stopping = new AbortController()
  const hooks: { name: string; hook: ShutdownHook }[] = []
  const checks: { name: string; check: ReadyCheck }[] = []
  let cached = { at: -Infinity, outcome: Promise.resolve<Readiness>({ ok: true }) }
  return {
    stopping: stopping.signal,
    onShutdown: (name: string, hook: ShutdownHook) => void hooks.push({ name, hook }),
    addCheck: (name: string, check: ReadyCheck) => void checks.push({ name, check }),
    beginDrain: () => stopping.abort(),
    /** readiness runs every check at once, each within checkTimeoutMs, or reuses the last outcome. */
    readiness(): Promise<Readiness> {
      const now = performance.now()
      if (checks.length > 0 && now - cached.at >= cacheMs) cached = { at: now, outcome: runChecks(checks) }
      return cached.outcome
    },
    /**
     * runHooks runs the hooks in reverse order until deadline, a performance.now() time, and returns
     * the names of those that failed, timed out or never started for lack of time.
     */
    async runHooks(log: Logger, deadline: number): Promise<string[]> {
      const failed: string[] = []
      let expired = false
      for (const { name, hook } of hooks.toReversed()) {
        // Once the time is up, the rest do not start (a timer may fire a little early: expired).
        if (expired || deadline <= performance.now()) {
          failed.push(name)
          continue
        }
        const started = performance.now()
        const outcome = await within(deadline - started, hook, `shutdown hook ${name} timed out`)
        const fields = { hook: name, durationMs: Math.round(performance.now() - started) }
        if (outcome.ok) log.info(fields, 'shutdown hook finished')
        else if (outcome.timedOut) log.error(fields, 'shutdown hook timed out')
        else log.error({ ...fields, err: outcome.err }, 'shutdown hook failed')
        if (!outcome.ok) failed.push(name)
        expired = !outcome.ok && outcome.timedOut
      }
      return failed
    },
  }
}

async function runChecks(checks: { name: string; check: ReadyCheck }[]): Promise<Readiness> {
  const outcomes = await Promise.all(checks.map(({ check }) => within(checkTimeoutMs, check, 'timed out')))
  const failing = checks.flatMap(({ name }, i) => {
    const outcome = outcomes[i]
    if (outcome === undefined || outcome.ok) return []
    return [{ name, reason: outcome.err instanceof Error ? outcome.err.message : String(outcome.err) }]
  })
  return failing.length === 0 ? { ok: true } : { ok: false, failing }
}

type Outcome = { ok: true } | { ok: false; timedOut: boolean; err: unknown }

/**
 * within runs fn with a signal that aborts after ms, and settles when fn does or at the timeout,
 * whichever comes first. Not AbortSignal.timeout(): its timer is unref'd, so a hook waiting on
 * nothing would let the process exit mid-shutdown instead of being reported.
 */
async function within(ms: number, fn: (signal: AbortSignal) => unknown, timeoutMessage: string): Promise<Outcome> {
  const controller = new AbortController()
  const timer = setTimeout(() => controller.abort(new Error(timeoutMessage)), Math.max(0, ms))
  const aborted = new Promise<never>((_, reject) =>
    controller.signal.addEventListener('abort', () => reject(controller.signal.reason), { once: true }),
  )
  try {
    await Promise.race([Promise.resolve().then(() => fn(controller.signal)), aborted])
    return { ok: true }
  } catch (err) {
    return { ok: false, timedOut: controller.signal.aborted, err }
  } finally {
    clearTimeout(timer)
  }
}
