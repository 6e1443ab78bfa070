import { readdir, readFile } from 'node:fs/promises'
import {
  constants,
  type IntervalHistogram,
  monitorEventLoopDelay,
  type NodeGCPerformanceDetail,
  performance,
  type PerformanceEntry,
  PerformanceObserver,
} from 'node:perf_hooks'
import { getHeapStatistics } from 'node:v8'
import {
  bucketOf,
  formatFamily,
  formatHeader,
  formatHistogram,
  type HistogramSeries,
  newHistogramSeries,
} from './exposition.ts'

// The names are those of Prometheus' process collector and of prom-client's default metrics, the
// de-facto standard for Node.js (README.md in this folder says which are ours).

// prom-client's buckets for nodejs_gc_duration_seconds: a minor GC takes about a millisecond.
const gcBoundaries = [0.001, 0.01, 0.1, 1, 2, 5] as const
const gcLe = gcBoundaries.map(String)
const gcKinds = new Map<number, string>([
  [constants.NODE_PERFORMANCE_GC_MAJOR, 'major'],
  [constants.NODE_PERFORMANCE_GC_MINOR, 'minor'],
  [constants.NODE_PERFORMANCE_GC_INCREMENTAL, 'incremental'],
  [constants.NODE_PERFORMANCE_GC_WEAKCB, 'weakcb'],
])

// monitorEventLoopDelay's timer runs every resolutionMs and records the whole interval between two
// runs; the resolution is taken off to leave the delay, as /debug/vars does (internal/debug).
const resolutionMs = 10

/** RuntimeMetrics are the process's and Node's own metrics; stop ends their sampling. */
export interface RuntimeMetrics {
  /** format reads the process and runtime, and returns their families in the text format. */
  format: () => Promise<string>
  stop: () => void
}

/**
 * startRuntimeMetrics starts sampling the event-loop delay and observing garbage collections, and
 * returns what reads them with the rest of the process's state at each scrape.
 */
export async function startRuntimeMetrics(): Promise<RuntimeMetrics> {
  const linux = process.platform === 'linux'
  const maxFds = linux ? await readMaxFds() : undefined
  const delay = monitorEventLoopDelay({ resolution: resolutionMs })
  delay.enable()
  const gc = observeGC()
  const version = formatVersion()
  return {
    async format() {
      const openFds = linux ? await countOpenFds() : undefined
      const cpu = process.cpuUsage()
      const memory = process.memoryUsage()
      const families: [name: string, type: 'counter' | 'gauge', help: string, value: number | undefined][] = [
        ['process_cpu_user_seconds_total', 'counter', 'Total user CPU time spent in seconds.', cpu.user / 1e6],
        ['process_cpu_system_seconds_total', 'counter', 'Total system CPU time spent in seconds.', cpu.system / 1e6],
        [
          'process_cpu_seconds_total',
          'counter',
          'Total user and system CPU time spent in seconds.',
          (cpu.user + cpu.system) / 1e6,
        ],
        ['process_resident_memory_bytes', 'gauge', 'Resident memory size in bytes.', memory.rss],
        [
          'process_start_time_seconds',
          'gauge',
          'Start time of the process since unix epoch in seconds.',
          Math.round(performance.timeOrigin) / 1000,
        ],
        ['process_open_fds', 'gauge', 'Number of open file descriptors.', openFds],
        ['process_max_fds', 'gauge', 'Maximum number of open file descriptors.', maxFds],
        ['nodejs_heap_size_used_bytes', 'gauge', 'Process heap size used from Node.js in bytes.', memory.heapUsed],
        ['nodejs_heap_size_total_bytes', 'gauge', 'Process heap size from Node.js in bytes.', memory.heapTotal],
        [
          'nodejs_heap_size_limit_bytes',
          'gauge',
          'Size the V8 heap may grow to in bytes.',
          getHeapStatistics().heap_size_limit,
        ],
        ['nodejs_external_memory_bytes', 'gauge', 'Node.js external memory size in bytes.', memory.external],
      ]
      return (
        families
          .map(([name, type, help, value]) => formatFamily(name, type, help, value === undefined ? [] : [[{}, value]]))
          .join('') +
        formatDelay(delay) +
        formatEventLoopTime() +
        gc.format() +
        version
      )
    },
    stop() {
      delay.disable()
      gc.stop()
    },
  }
}

/**
 * formatEventLoopTime returns the time the event loop spent active and idle since it started,
 * OpenTelemetry's nodejs.eventloop.time: the rate of the active part is the loop's utilisation.
 */
function formatEventLoopTime(): string {
  const { active, idle } = performance.eventLoopUtilization()
  return formatFamily(
    'nodejs_eventloop_time_seconds_total',
    'counter',
    'Cumulative duration of the event loop by state.',
    [
      [{ nodejs_eventloop_state: 'active' }, active / 1000],
      [{ nodejs_eventloop_state: 'idle' }, idle / 1000],
    ],
  )
}

/**
 * formatDelay returns the event-loop delay since the previous scrape, as prom-client does: its
 * minimum, maximum, mean, standard deviation and 50th, 90th and 99th percentiles, in seconds. It
 * returns nothing when no timer ran since (two scrapes within 10 ms), and starts a new window.
 */
function formatDelay(delay: IntervalHistogram): string {
  if (delay.count === 0) return ''
  const seconds = (ns: number) => Math.max(0, ns / 1e9 - resolutionMs / 1000)
  const stats = [
    ['min', 'The minimum recorded event loop delay.', seconds(delay.min)],
    ['max', 'The maximum recorded event loop delay.', seconds(delay.max)],
    ['mean', 'The mean of the recorded event loop delays.', seconds(delay.mean)],
    // The spread needs no correction: taking a constant off every sample leaves it unchanged.
    ['stddev', 'The standard deviation of the recorded event loop delays.', delay.stddev / 1e9],
    ['p50', 'The 50th percentile of the recorded event loop delays.', seconds(delay.percentile(50))],
    ['p90', 'The 90th percentile of the recorded event loop delays.', seconds(delay.percentile(90))],
    ['p99', 'The 99th percentile of the recorded event loop delays.', seconds(delay.percentile(99))],
  ] as const
  delay.reset()
  return stats
    .map(([stat, help, value]) => formatFamily(`nodejs_eventloop_lag_${stat}_seconds`, 'gauge', help, [[{}, value]]))
    .join('')
}

/** observeGC counts garbage collections by kind in a histogram of their durations. */
function observeGC() {
  const byKind = new Map<string, HistogramSeries>()
  const observer = new PerformanceObserver((list) => {
    // Every entry: the observer is called once for all the collections since its previous call.
    for (const entry of list.getEntries()) {
      // Node's types leave out the detail of a 'gc' entry, which Node documents.
      const { detail } = entry as PerformanceEntry & { detail?: NodeGCPerformanceDetail }
      const kind = gcKinds.get(detail?.kind ?? -1) ?? 'other'
      let series = byKind.get(kind)
      if (series === undefined) byKind.set(kind, (series = newHistogramSeries({ kind }, gcBoundaries)))
      const seconds = entry.duration / 1000
      const bucket = bucketOf(gcBoundaries, seconds)
      series.counts[bucket] = (series.counts[bucket] ?? 0) + 1
      series.sum += seconds
    }
  })
  observer.observe({ entryTypes: ['gc'] })
  return {
    format: () =>
      byKind.size === 0
        ? ''
        : formatHeader(
            'nodejs_gc_duration_seconds',
            'histogram',
            'Garbage collection duration by kind, one of major, minor, incremental or weakcb.',
          ) + formatHistogram('nodejs_gc_duration_seconds', gcLe, byKind.values()),
    stop: () => observer.disconnect(),
  }
}

/** formatVersion returns nodejs_version_info, prom-client's series of the Node.js version. */
function formatVersion(): string {
  const [major, minor, patch] = process.versions.node.split('.').map(Number)
  return formatFamily('nodejs_version_info', 'gauge', 'Node.js version info.', [
    [{ version: process.version, major, minor, patch }, 1],
  ])
}

/** countOpenFds counts the entries of /proc/self/fd, less the one reading the directory opens. */
async function countOpenFds(): Promise<number | undefined> {
  try {
    return (await readdir('/proc/self/fd')).length - 1
  } catch {
    return undefined
  }
}

/** readMaxFds reads the soft limit on open files from /proc/self/limits; undefined when unlimited or unreadable. */
async function readMaxFds(): Promise<number | undefined> {
  try {
    const limits = await readFile('/proc/self/limits', 'utf8')
    const soft = /^Max open files\s+(\d+)/m.exec(limits)?.[1]
    return soft === undefined ? undefined : Number(soft)
  } catch {
    return undefined
  }
}
