// The service's periodic jobs, all in one place, as internal/routes.ts lists the routes. Each runs
// in every process started with JOBS=on; JOB_<NAME>_SCHEDULE overrides its schedule or switches it
// off (README.md in this folder).
import type { Logger } from 'pino'
import { newHeapWatch } from './heap-watch.ts'

/** jobList is every periodic job of the service. */
export const jobList: readonly Job[] = [{ name: 'heap-watch', schedule: '1m', run: newHeapWatch(0.8) }]

/** Job is one periodic task of the service, declared in jobList (README.md in this folder). */
export interface Job {
  /** name is unique kebab-case; it names the job in logs, metrics, /ready and JOB_<NAME>_SCHEDULE. */
  readonly name: string
  /** schedule is JOB_<NAME>_SCHEDULE's default: a duration (`30s`), a cron expression or `off`. */
  readonly schedule: string
  /** jitter spreads an interval's runs over ± this fraction of it (default 0.1); cron runs are exact. */
  readonly jitter?: number
  /** mustSucceedWithin, a duration, fails /ready while the last success, or the start, is older. */
  readonly mustSucceedWithin?: string
  /** run does one run and settles when it is done; signal aborts when shutdown begins. */
  readonly run: (signal: AbortSignal, log: Logger) => unknown
}
