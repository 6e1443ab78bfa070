// The service's periodic jobs, all in one place, as internal/routes.ts lists the routes. Each runs
// in every process started with JOBS=on; JOB_<NAME>_SCHEDULE overrides its schedule or switches it
// off (README.md in this folder).
import { newHeapWatch } from './heap-watch.ts'
import type { Job } from './jobs.ts'

/** jobList is every periodic job of the service. */
export const jobList: readonly Job[] = [{ name: 'heap-watch', schedule: '1m', run: newHeapWatch(0.8) }]
