// The service's entry point and composition root: it lists the add-ons the service can run with and
// hands the process's environment, stdout and events to run(), then exits with run()'s code. All
// logic lives in internal/.
import { type AddOnEntry, loadAddOns } from '../../internal/addon.ts'
import { newStdoutOutput } from '../../internal/log.ts'
import { run } from '../../internal/run.ts'

/**
 * addOns are the optional capabilities, one line each: loaded only when one of the variables in
 * `on` is set (none listed: always). To remove one, delete its line and its folder (README.md,
 * Add-ons). Tests import this list; only running main starts the service.
 */
export const addOns: readonly AddOnEntry[] = [
  { on: ['DEBUG_ADDR'], load: () => import('../../internal/debug/debug.ts') },
  { on: [], load: () => import('../../internal/items/items.ts') },
  { on: ['JOBS'], load: () => import('../../internal/jobs/jobs.ts') },
  { on: ['METRICS_ADDR'], load: () => import('../../internal/metrics/metrics.ts') },
  { on: ['AMQP_URL'], load: () => import('../../internal/queue/queue.ts') },
  { on: ['SHED_MAX_INFLIGHT', 'SHED_MAX_EVENT_LOOP_DELAY'], load: () => import('../../internal/shedding/shedding.ts') },
]

if (import.meta.main === undefined) {
  // import.meta.main came with Node 22.18 and 24.2; on an older Node nothing below would run.
  process.stderr.write(`kickstart-node runs on Node 22.18+, 24 or 26 (package.json engines), not ${process.version}\n`)
  process.exit(1)
}
if (import.meta.main) {
  const stdout = newStdoutOutput(1)
  const code = await run({ env: process.env, stdout, events: process, addOns: await loadAddOns(addOns, process.env) })
  // Give stdout a bounded time to take the last lines, then exit rather than wait for the event
  // loop, which a hung request or hook may still hold after a forced stop.
  await stdout.flush(2000)
  process.exit(code)
}
