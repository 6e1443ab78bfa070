// The service's entry point and composition root: it lists the add-ons the service runs with and
// hands the process's environment, stdout and events to run(), then exits with run()'s code. All
// logic lives in internal/.
import type { AddOn } from '../../internal/addon.ts'
import { newStdoutOutput } from '../../internal/log.ts'
import { run } from '../../internal/run.ts'

/**
 * addOns are the optional capabilities the service runs with, one line each: to remove one, delete
 * its line and its folder (README.md, Add-ons). Tests import this list; only running main starts.
 */
export const addOns: readonly AddOn<any>[] = [
  (await import('../../internal/debug/debug.ts')).debug, // DEBUG_ADDR: profiles and /debug/vars
  (await import('../../internal/items/items.ts')).items, // the worked example: /items in SQLite
  (await import('../../internal/metrics/metrics.ts')).metrics, // METRICS_ADDR: GET /metrics for Prometheus
  (await import('../../internal/shedding/shedding.ts')).shedding, // SHED_MAX_*: 503 with Retry-After past a limit, never the probes
]

if (import.meta.main) {
  const stdout = newStdoutOutput(1)
  const code = await run({ env: process.env, stdout, events: process, addOns })
  // Give stdout a bounded time to take the last lines, then exit rather than wait for the event
  // loop, which a hung request or hook may still hold after a forced stop.
  await stdout.flush(2000)
  process.exit(code)
}
