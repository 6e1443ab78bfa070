import { type EventLoopUtilization, type IntervalHistogram, monitorEventLoopDelay, performance } from 'node:perf_hooks'
import { getHeapStatistics } from 'node:v8'
import type { AddOnContext } from '../addon.ts'
import { sendJSON } from '../json.ts'
import type { Handler } from '../router.ts'

/** VarsDeps is what /debug/vars reports on. */
export interface VarsDeps extends Pick<
  AddOnContext<unknown>,
  'build' | 'startedAt' | 'server' | 'effectiveConfig' | 'lifecycle'
> {
  /** eventLoopDelay comes from startEventLoopDelay, called when the debug listener started. */
  eventLoopDelay: IntervalHistogram
}

const noStore = { 'cache-control': 'no-store' }

/**
 * handleVars answers with the process's runtime state as JSON, the role of Go's expvar: memory and
 * heap statistics, event-loop delay and utilisation, active resources, the main server's open
 * connections and requests in flight, uptime, versions, build info and the effective config, core
 * and add-ons, with secret values replaced by '[REDACTED]'.
 */
export function handleVars(deps: VarsDeps): Handler {
  const started = deps.startedAt.getTime()
  const fixed = {
    service: deps.build.service,
    version: deps.build.version,
    build: { commit: deps.build.commit, commitTime: deps.build.commitTime, dirty: deps.build.dirty },
    startedAt: deps.startedAt.toISOString(),
    pid: process.pid,
    node: process.version,
    v8: process.versions.v8,
    config: deps.effectiveConfig(),
  }
  const first = performance.eventLoopUtilization()
  let last = first
  return (_req, res) => {
    const now = performance.eventLoopUtilization()
    const body = {
      ...fixed,
      uptimeSeconds: (Date.now() - started) / 1000,
      memory: process.memoryUsage(),
      heap: camelCaseKeys(getHeapStatistics()),
      eventLoop: {
        delayMs: readDelay(deps.eventLoopDelay),
        utilization: {
          sinceStart: readUtilization(performance.eventLoopUtilization(now, first)),
          sinceLastCall: readUtilization(performance.eventLoopUtilization(now, last)),
        },
      },
      activeResources: countResources(process.getActiveResourcesInfo()),
      server: {
        connections: deps.server.connections,
        inflight: deps.server.inflight,
        draining: deps.lifecycle.stopping.aborted,
      },
    }
    last = now
    sendJSON(res, 200, body, noStore)
  }
}

const resolutionMs = 10

/**
 * startEventLoopDelay starts sampling how late the event loop runs a timer due every 10 ms. The
 * caller disables the histogram when done with it.
 */
export function startEventLoopDelay(): IntervalHistogram {
  const histogram = monitorEventLoopDelay({ resolution: resolutionMs })
  histogram.enable()
  return histogram
}

/**
 * readDelay reports the histogram in milliseconds; null until it has its first sample. Node records
 * the whole interval between two timer runs, so the resolution is taken off to leave the delay
 * (as @fastify/under-pressure does).
 */
function readDelay(histogram: IntervalHistogram) {
  const ms = (ns: number) =>
    histogram.count === 0 ? null : Math.max(0, Math.round((ns / 1e6 - resolutionMs) * 1000) / 1000)
  return {
    samples: histogram.count,
    min: ms(histogram.min),
    mean: ms(histogram.mean),
    p50: ms(histogram.percentile(50)),
    p90: ms(histogram.percentile(90)),
    p99: ms(histogram.percentile(99)),
    max: ms(histogram.max),
  }
}

function readUtilization({ utilization, active, idle }: EventLoopUtilization) {
  const round = (ms: number) => Math.round(ms * 1000) / 1000
  return { utilization: Math.round(utilization * 10_000) / 10_000, activeMs: round(active), idleMs: round(idle) }
}

function countResources(resources: string[]): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const type of resources) counts[type] = (counts[type] ?? 0) + 1
  return counts
}

// V8 names its statistics in snake_case; every other field here is camelCase.
function camelCaseKeys(stats: object): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(stats).map(([key, value]) => [key.replaceAll(/_(\w)/g, (_, c: string) => c.toUpperCase()), value]),
  )
}
