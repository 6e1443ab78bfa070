import { channel } from 'node:diagnostics_channel'
import { Cron } from 'croner'
import type { Logger } from 'pino'
import type { AddOn } from '../addon.ts'
import { parseDuration, positiveDuration, type Var, type Vars } from '../config.ts'
import { type Job, jobList } from './job-list.ts'

/** Schedule is a parsed JOB_<NAME>_SCHEDULE; null is off. */
export type Schedule = { kind: 'every'; ms: number } | { kind: 'cron'; expression: string } | null

/** Outcome is how a run ended, or `skipped` for a due run that found the previous one still going. */
export type Outcome = 'ok' | 'failed' | 'aborted' | 'abandoned' | 'skipped'

/**
 * jobChannel carries `{ job, outcome, durationSeconds }` for every finished or skipped run
 * (node:diagnostics_channel): the metrics add-on counts them, neither importing the other.
 */
export const jobChannel = channel('kickstart.job')

// Five fields, or six with seconds first; croner takes a string with a colon for a one-off date.
const cronOptions = { mode: '5-or-6-parts' } as const
// setTimeout fires at once past 2^31-1 ms: a later cron run is reached in steps.
const maxTimerMs = 2 ** 31 - 1

/** parseSchedule reads `off`, a duration above zero or a cron expression; anything else is undefined. */
export function parseSchedule(raw: string): Schedule | undefined {
  if (raw === 'off') return null
  const ms = positiveDuration.parse(raw)
  if (ms !== undefined) return { kind: 'every', ms }
  if (raw.includes(':')) return undefined
  try {
    new Cron(raw, cronOptions)
    return { kind: 'cron', expression: raw }
  } catch {
    return undefined
  }
}

/**
 * jobVars declares JOBS, the switch, and one JOB_<NAME>_SCHEDULE per job. It throws for a list a
 * developer got wrong: a name that is not unique kebab-case, a bad jitter or mustSucceedWithin.
 */
export function jobVars(jobs: readonly Job[]): Vars {
  const vars: Record<string, Var<unknown>> = {
    on: {
      name: 'JOBS',
      default: 'off',
      parse: (raw) => (raw === 'on' ? true : raw === 'off' ? false : undefined),
      expected: '`on` or `off`',
    },
  }
  for (const job of jobs) {
    const bad = !/^[a-z][a-z0-9]*(-[a-z0-9]+)*$/.test(job.name) || job.name in vars
    if (bad) throw new Error(`job name ${job.name} is not unique kebab-case (or is "on")`)
    if ((job.jitter ?? 0) < 0 || (job.jitter ?? 0) >= 1) throw new Error(`job ${job.name}: jitter must be in [0, 1)`)
    if (job.mustSucceedWithin !== undefined && positiveDuration.parse(job.mustSucceedWithin) === undefined) {
      throw new Error(`job ${job.name}: mustSucceedWithin must be a duration, like 10m`)
    }
    vars[job.name] = {
      name: `JOB_${job.name.toUpperCase().replaceAll('-', '_')}_SCHEDULE`,
      default: job.schedule,
      parse: parseSchedule,
      expected: 'off, a duration like 30s or 1h, or a cron expression like */5 * * * *',
    }
  }
  return vars
}

/** Clock is time and chance as the scheduler sees them; tests hand in their own. */
export interface Clock {
  now: () => number
  random: () => number
}

/** ScheduledJob is one job's state: its last success and the run in progress, if any. */
export interface ScheduledJob {
  readonly job: Job
  lastSuccess: number
  succeeded: boolean
  running: { readonly done: Promise<void>; abandon(): void } | undefined
}

/**
 * scheduleJobs arms the timer of each job that is not off and returns their states. A run that
 * comes due while the previous one goes is skipped. Each run gets stopping as its signal and ends
 * in one `job finished` line and one message on jobChannel; a throw or rejection never escapes it.
 * Once stopping aborts, every timer is cleared and no run starts. The timers are unref'd.
 */
export function scheduleJobs(
  jobs: readonly Job[],
  schedules: readonly Schedule[],
  stopping: AbortSignal,
  log: Logger,
  clock: Clock,
): ScheduledJob[] {
  return jobs.flatMap((job, i) => {
    const schedule = schedules[i]
    return schedule ? [scheduleJob(job, newDueAfter(schedule, job.jitter ?? 0.1, clock), stopping, log, clock)] : []
  })
}

function scheduleJob(job: Job, dueAfter: DueAfter, stopping: AbortSignal, log: Logger, clock: Clock): ScheduledJob {
  const jobLog = log.child({ job: job.name })
  const state: ScheduledJob = { job, lastSuccess: clock.now(), succeeded: false, running: undefined }
  const counts = { skipped: 0, failures: 0 }
  let timer: NodeJS.Timeout | undefined
  const arm = (due: number | undefined) => {
    if (due === undefined) return // a cron expression with no time left
    timer = setTimeout(() => (clock.now() >= due ? fire() : arm(due)), Math.min(due - clock.now(), maxTimerMs))
    timer.unref() // the listener keeps the service alive; a job's timer must not delay its exit
  }
  const fire = () => {
    if (stopping.aborted) return
    arm(dueAfter(clock.now()))
    if (state.running !== undefined) return report(jobLog, job.name, 'skipped', 0, { skipped: ++counts.skipped })
    const startedAt = clock.now()
    let ended = false
    const end = (outcome: Outcome, fields = {}) => {
      if (ended) return // an abandoned run that settles later was reported already
      ended = true
      state.running = undefined
      if (outcome === 'ok') [state.lastSuccess, state.succeeded] = [clock.now(), true]
      report(jobLog, job.name, outcome, clock.now() - startedAt, fields)
    }
    const done = Promise.resolve()
      .then(() => job.run(stopping, jobLog))
      .then(
        () => end('ok'),
        (err: unknown) => (stopping.aborted ? end('aborted') : end('failed', { err, failures: ++counts.failures })),
      )
    state.running = { done, abandon: () => end('abandoned') }
  }
  stopping.addEventListener('abort', () => clearTimeout(timer), { once: true })
  arm(dueAfter(clock.now()))
  return state
}

/** DueAfter returns when a run is next due after now, or undefined when never again. */
type DueAfter = (now: number) => number | undefined

function newDueAfter(schedule: NonNullable<Schedule>, jitter: number, clock: Clock): DueAfter {
  if (schedule.kind === 'every') return (now) => now + schedule.ms * (1 - jitter + 2 * jitter * clock.random())
  const cron = new Cron(schedule.expression, cronOptions)
  return (now) => cron.nextRun(new Date(now))?.getTime()
}

const levels = { ok: 'info', aborted: 'info', skipped: 'warn', failed: 'error', abandoned: 'error' } as const

function report(log: Logger, job: string, outcome: Outcome, durationMs: number, fields: object) {
  if (outcome === 'skipped') log.warn({ outcome, ...fields }, 'job skipped: the previous run is still going')
  else log[levels[outcome]]({ outcome, durationMs, ...fields }, 'job finished')
  if (jobChannel.hasSubscribers) jobChannel.publish({ job, outcome, durationSeconds: durationMs / 1000 })
}

/**
 * newJobsAddOn returns the jobs add-on for jobs: with JOBS=on it schedules them, registers the
 * readiness check of those with mustSucceedWithin, and a shutdown hook that waits for the runs
 * in progress and reports those still going at the deadline as abandoned (exit 1).
 */
export function newJobsAddOn(jobs: readonly Job[], clock: Clock = { now: Date.now, random: Math.random }): AddOn {
  return {
    name: 'jobs',
    vars: jobVars(jobs),
    start: (ctx) => {
      if (ctx.config.on !== true) return
      const schedules = jobs.map((job) => ctx.config[job.name] as Schedule)
      // The hook stops the jobs too: when a later add-on fails to start, the hooks run without a shutdown.
      const halted = new AbortController()
      const stopping = AbortSignal.any([ctx.lifecycle.stopping, halted.signal])
      const states = scheduleJobs(jobs, schedules, stopping, ctx.log, clock)
      ctx.log.info({ jobs: Object.fromEntries(jobs.map((job, i) => [job.name, schedules[i]])) }, 'jobs on')
      for (const state of states) {
        const within = state.job.mustSucceedWithin
        if (within !== undefined)
          ctx.lifecycle.addCheck(`job ${state.job.name}`, () => checkRecent(state, within, clock))
      }
      ctx.lifecycle.onShutdown('jobs', async (signal) => {
        halted.abort()
        const running = states.flatMap((state) => state.running ?? [])
        signal.addEventListener('abort', () => running.forEach((run) => run.abandon()), { once: true })
        await Promise.all(running.map((run) => run.done))
      })
    },
  }
}

// The reason names no error message: a job's errors may carry a URL with a token, and /ready is public.
function checkRecent(state: ScheduledJob, within: string, clock: Clock) {
  const ageMs = clock.now() - state.lastSuccess
  if (ageMs <= (parseDuration(within) ?? 0)) return
  const age = `${Math.round(ageMs / 1000)}s`
  throw new Error(
    `${state.succeeded ? `last succeeded ${age} ago` : `no success in the ${age} since start`}, over ${within}`,
  )
}

/** addOn runs the jobs of job-list.ts (README.md in this folder); off unless JOBS=on. */
export const addOn = newJobsAddOn(jobList)
