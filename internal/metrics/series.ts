// Every series GET /metrics serves: the table in newRecorder lists them in the order they are
// written, each with its name, type, help and where its samples come from, a family recorded as
// things happen (by the `done` request hook in newRequestSeries, or by a diagnostics channel in
// subscribeChannels, where each label is set) or what is read at the scrape. Names and labels are
// OpenTelemetry's as its Prometheus exporters write them, or, for the process and Node.js, those of
// Prometheus' process collector and prom-client (README.md).
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { readdir, readFile } from 'node:fs/promises'
import {
  constants,
  monitorEventLoopDelay,
  type NodeGCPerformanceDetail,
  type PerformanceEntry,
  PerformanceObserver,
} from 'node:perf_hooks'
import { getHeapStatistics } from 'node:v8'
import type { AddOnContext } from '../addon.ts'
import type { TrackedResponse } from '../response.ts'
import { formatFamily, type Labels, newFamily, observe, type Series, type Source } from './exposition.ts'

/** durationBounds are OpenTelemetry's advised buckets for HTTP server and message processing durations, in seconds. */
export const durationBounds = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]
// A job may take milliseconds or an hour. prom-client's GC buckets: a minor GC takes about 1 ms.
const jobBounds = [0.01, 0.1, 1, 10, 60, 300, 900, 3600]
const gcBounds = [0.001, 0.01, 0.1, 1, 2, 5]
// monitorEventLoopDelay records the whole interval between two runs of its timer, due every 10 ms:
// the 10 ms are taken off to leave the delay, as /debug/vars does.
const resolutionMs = 10

/** Recorder holds every series: record is the `done` request hook; stop ends the subscriptions and sampling. */
export interface Recorder {
  record: (res: TrackedResponse) => void
  format: () => Promise<string>
  stop: () => void
}

/** newRecorder subscribes to the channels, starts sampling the event loop and GC, and returns the series. */
export async function newRecorder(ctx: Pick<AddOnContext<unknown>, 'server' | 'build'>): Promise<Recorder> {
  const http = newRequestSeries(ctx.server)
  const events = subscribeChannels()
  const runtime = await startRuntime()
  const { service, version, commit } = ctx.build
  const target = {
    service_name: service,
    service_version: version ?? undefined,
    vcs_ref_head_revision: commit ?? undefined,
  }
  async function format() {
    const { user, system } = process.cpuUsage()
    const heap = getHeapStatistics()
    const lag = runtime.readDelay()
    const table: [name: string, type: 'counter' | 'gauge' | 'histogram', help: string, samples: Source][] = [
      ['http_server_request_duration_seconds', 'histogram', 'Duration of HTTP server requests.', http.duration],
      ['http_server_active_requests', 'gauge', 'Number of active HTTP server requests.', http.countActive()],
      ['http_server_rejected_requests_total', 'counter', "HTTP requests Node's parser rejected.", events.rejected],
      ['http_server_shed_requests_total', 'counter', 'Requests answered 503 by load shedding.', events.shed],
      ['job_runs_total', 'counter', 'Runs of periodic jobs, skipped ones included.', events.jobRuns],
      ['job_run_duration_seconds', 'histogram', 'Duration of periodic job runs.', events.jobDuration],
      ['messaging_client_consumed_messages_total', 'counter', 'Messages delivered to the handler.', events.consumed],
      ['messaging_process_duration_seconds', 'histogram', 'Duration of processing operation.', events.processed],
      ['process_cpu_seconds_total', 'counter', 'Total user and system CPU time in seconds.', (user + system) / 1e6],
      ['process_resident_memory_bytes', 'gauge', 'Resident memory size in bytes.', process.memoryUsage.rss()],
      ['process_start_time_seconds', 'gauge', 'Process start time in Unix seconds.', performance.timeOrigin / 1000],
      ['process_open_fds', 'gauge', 'Number of open file descriptors.', await countOpenFds()],
      ['process_max_fds', 'gauge', 'Maximum number of open file descriptors.', runtime.maxFds],
      ['nodejs_heap_size_used_bytes', 'gauge', 'V8 heap in use in bytes.', heap.used_heap_size],
      ['nodejs_heap_size_limit_bytes', 'gauge', 'Size the V8 heap may grow to in bytes.', heap.heap_size_limit],
      ['nodejs_eventloop_lag_p99_seconds', 'gauge', 'The 99th percentile of the event loop delay.', lag?.p99],
      ['nodejs_eventloop_lag_max_seconds', 'gauge', 'The maximum event loop delay.', lag?.max],
      ['nodejs_eventloop_time_seconds_total', 'counter', 'Time the event loop spent by state.', runtime.loopTime()],
      ['nodejs_gc_duration_seconds', 'histogram', 'Garbage collection duration by kind.', runtime.gc],
      ['target_info', 'gauge', 'Target metadata', [[target, 1]]],
    ]
    return table.map(([name, type, help, samples]) => formatFamily(name, type, help, samples)).join('')
  }
  function stop() {
    events.stop()
    runtime.stop()
  }
  return { record: http.record, format, stop }
}

// RFC 9110's methods and PATCH, every one a route can answer; any other is _OTHER, so a client
// cannot add series by inventing methods.
const methods = ['CONNECT', 'DELETE', 'GET', 'HEAD', 'OPTIONS', 'PATCH', 'POST', 'PUT', 'TRACE', '_OTHER'] as const
const methodIds = new Map<string, number>(methods.map((method, id) => [method, id]))
const other = methods.length - 1

/**
 * newRequestSeries returns the public server's request durations, recorded by record, the `done`
 * request hook, and countActive, which counts its requests in flight by method at the scrape.
 */
function newRequestSeries(server: AddOnContext<unknown>['server']) {
  const duration = newFamily(durationBounds)
  const byRoute = new Map<string, Map<number, Series>>()
  const seen = new Set<number>() // the methods seen: their active requests stay, at 0 when idle
  // After a series' first request: two Map lookups for it, one for the method, a bucket scan, no allocation.
  function record(res: TrackedResponse) {
    const method = methodIds.get(res.req.method ?? '') ?? other
    const status = res.sentStatus // the access log's: 499 for an answer the client never got
    const aborted = res.aborted
    let routeSeries = byRoute.get(res.route)
    if (routeSeries === undefined) byRoute.set(res.route, (routeSeries = new Map()))
    const key = (status * 16 + method) * 2 + (aborted ? 1 : 0) // status < 1000, method < 16
    let series = routeSeries.get(key)
    if (series === undefined) {
      const labels = {
        error_type: aborted ? 'aborted' : status >= 500 ? status : undefined,
        http_request_method: methods[method],
        http_response_status_code: status,
        http_route: res.route === '' ? undefined : res.route, // none matched: no label
        url_scheme: 'http', // TLS ends in front of the service
      }
      routeSeries.set(key, (series = duration.series(labels)))
      seen.add(method)
    }
    observe(series, (res.closedAt - res.startedAt) / 1000)
  }
  function countActive(): [Labels, number][] {
    const counts = methods.map(() => 0)
    for (const res of server.requests()) {
      const method = methodIds.get(res.req.method ?? '') ?? other
      counts[method] = (counts[method] ?? 0) + 1
      seen.add(method)
    }
    const labels = (method: string) => ({ http_request_method: method, url_scheme: 'http' })
    return methods.flatMap((method, i) => (seen.has(i) ? [[labels(method), counts[i] ?? 0]] : []))
  }
  return { duration, record, countActive }
}

/**
 * subscribeChannels counts what the core and the add-ons tell on their diagnostics channels, by
 * name so that no add-on imports another: client-error.ts, shedding/shedding.ts, jobs/jobs.ts, and
 * the queue add-on's (its shape still provisional). A family stays empty, and unwritten, until its
 * first message.
 */
function subscribeChannels() {
  const rejected = newFamily()
  const shed = newFamily()
  const jobRuns = newFamily()
  const jobDuration = newFamily(jobBounds)
  const consumed = newFamily()
  const processed = newFamily(durationBounds)
  const channels: Record<string, (message: unknown) => void> = {
    'kickstart.http.rejected': (message) => {
      rejected.add({ http_response_status_code: (message as { status: number }).status }, 1)
    },
    'kickstart.shed': (message) => shed.add({ reason: (message as { reason: string }).reason }, 1),
    'kickstart.job': (message) => {
      const { job, outcome, durationSeconds } = message as { job: string; outcome: string; durationSeconds: number }
      jobRuns.add({ job, outcome }, 1)
      if (outcome !== 'skipped') jobDuration.add({ job, outcome }, durationSeconds)
    },
    'kickstart.queue': (message) => {
      const { queue, outcome, durationSeconds } = message as { queue: string; outcome: string; durationSeconds: number }
      const labels = {
        error_type: outcome === 'acked' ? undefined : outcome, // retried, dead-lettered...
        messaging_destination_name: queue,
        messaging_operation_name: 'process',
        messaging_system: 'rabbitmq',
      }
      consumed.add(labels, 1)
      processed.add(labels, durationSeconds)
    },
  }
  for (const [name, onMessage] of Object.entries(channels)) subscribe(name, onMessage)
  const stop = () => Object.entries(channels).forEach(([name, onMessage]) => unsubscribe(name, onMessage))
  return { rejected, shed, jobRuns, jobDuration, consumed, processed, stop }
}

const gcKinds = new Map([
  [constants.NODE_PERFORMANCE_GC_MAJOR, 'major'],
  [constants.NODE_PERFORMANCE_GC_MINOR, 'minor'],
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL, 'incremental'],
  [constants.NODE_PERFORMANCE_GC_WEAKCB, 'weakcb'],
])

/**
 * startRuntime observes garbage collections, by kind, and samples the event-loop delay, which
 * readDelay reads (none when no timer ran since its previous call) and starts anew.
 */
async function startRuntime() {
  const gc = newFamily(gcBounds)
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      // Node's types leave out the detail of a 'gc' entry, which Node documents.
      const { detail } = entry as PerformanceEntry & { detail?: NodeGCPerformanceDetail }
      gc.add({ kind: gcKinds.get(detail?.kind ?? -1) ?? 'other' }, entry.duration / 1000)
    }
  })
  observer.observe({ entryTypes: ['gc'] })
  const delay = monitorEventLoopDelay({ resolution: resolutionMs })
  delay.enable()
  const seconds = (ns: number) => Math.max(0, ns / 1e9 - resolutionMs / 1000)
  return {
    gc,
    maxFds: await readMaxFds(),
    readDelay() {
      const lag = delay.count === 0 ? undefined : { p99: seconds(delay.percentile(99)), max: seconds(delay.max) }
      delay.reset()
      return lag
    },
    loopTime(): [Labels, number][] {
      const { active, idle } = performance.eventLoopUtilization()
      return [
        [{ nodejs_eventloop_state: 'active' }, active / 1000],
        [{ nodejs_eventloop_state: 'idle' }, idle / 1000],
      ]
    },
    stop() {
      observer.disconnect()
      delay.disable()
    },
  }
}

/** countOpenFds counts the entries of /proc/self/fd, less the one reading it opens; undefined off Linux. */
function countOpenFds(): Promise<number | undefined> {
  return readdir('/proc/self/fd').then(
    (fds) => fds.length - 1,
    () => undefined,
  )
}

/** readMaxFds reads the soft limit on open files; undefined when unlimited or off Linux. */
async function readMaxFds(): Promise<number | undefined> {
  const soft = /^Max open files\s+(\d+)/m.exec(await readFile('/proc/self/limits', 'utf8').catch(() => ''))?.[1]
  return soft === undefined ? undefined : Number(soft)
}
