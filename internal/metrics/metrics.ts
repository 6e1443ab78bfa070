import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import type { AddOn, AddOnContext } from '../addon.ts'
import type { BuildInfo } from '../build-info.ts'
import { address, type Vars } from '../config.ts'
import type { Handler, Routes } from '../router.ts'
import { contentType, formatFamily } from './exposition.ts'
import { newRequestMetrics, type RequestMetrics } from './requests.ts'
import { type RuntimeMetrics, startRuntimeMetrics } from './runtime.ts'

/** metricsVars declares the metrics listener's one variable. */
export const metricsVars = {
  metricsAddr: {
    name: 'METRICS_ADDR',
    default: '',
    ...address,
    doc: '`host:port` of the metrics listener (`GET /metrics`, Prometheus text format): `:9464` for all interfaces, which a scraper in the pod network needs, or `127.0.0.1:9464`; unset: off',
  },
} satisfies Vars

/**
 * metrics serves the service's RED metrics (rate, errors, duration of the public server's
 * requests, after OpenTelemetry's HTTP conventions) and the process's, for Prometheus to scrape
 * (README.md in this folder): a listener of its own on METRICS_ADDR, off unless set, never on the
 * public port.
 */
export const addOn: AddOn<typeof metricsVars> = {
  name: 'metrics',
  vars: metricsVars,
  start: async (ctx) => {
    const addr = ctx.config.metricsAddr
    if (addr === null) return
    const requests = newRequestMetrics()
    const runtime = await startRuntimeMetrics()
    // Requests the shedding add-on refused, if it runs: it tells of each on a diagnostics channel.
    const shed = newShedCounter()
    const routes = newMetricsRoutes(ctx, requests, runtime, shed)
    await ctx.serve('metrics', addr, routes, 'METRICS_ADDR').catch((err: unknown) => {
      runtime.stop()
      shed.stop()
      throw err
    })
    // The listener stays up through the drain, so the drain shows in the last scrapes; the
    // sampling stops once it is over, just before the listener closes.
    ctx.lifecycle.onShutdown('metrics', () => {
      runtime.stop()
      shed.stop()
    })
    return { hooks: { done: requests.record } }
  },
}

/** newMetricsRoutes lists the metrics listener's one route, which metrics.openapi.yaml documents. */
export function newMetricsRoutes(
  ctx: Pick<AddOnContext<unknown>, 'build' | 'server'>,
  requests: RequestMetrics,
  runtime: RuntimeMetrics,
  shed: ShedCounter = newShedCounter(),
): Routes {
  return { '/metrics': { GET: handleMetrics(ctx, requests, runtime, shed) } }
}

/**
 * handleMetrics answers with every series in the Prometheus text format: the request metrics,
 * with the public server's requests in flight counted now, the process and runtime metrics, and
 * target_info.
 */
function handleMetrics(
  { build, server }: Pick<AddOnContext<unknown>, 'build' | 'server'>,
  requests: RequestMetrics,
  runtime: RuntimeMetrics,
  shed: ShedCounter,
): Handler {
  const target = formatTarget(build)
  return async (_req, res) => {
    const body = requests.format(server.requests()) + shed.format() + (await runtime.format()) + target
    res.writeHead(200, {
      'content-type': contentType,
      'content-length': Buffer.byteLength(body),
      'cache-control': 'no-store',
    })
    res.end(body)
  }
}

/** ShedCounter counts the requests shed, by reason, and writes them as a counter. */
interface ShedCounter {
  format: () => string
  stop: () => void
}

/**
 * newShedCounter subscribes to the `kickstart.shed` diagnostics channel, on which the shedding
 * add-on tells of each request it refuses (`{ reason }`), so that neither add-on imports the
 * other; with no shedding, nothing is ever counted and no series is written.
 */
function newShedCounter(): ShedCounter {
  const counts = new Map<string, number>()
  const onShed = (message: unknown) => {
    const reason = String((message as { reason?: unknown }).reason)
    counts.set(reason, (counts.get(reason) ?? 0) + 1)
  }
  subscribe('kickstart.shed', onShed)
  return {
    format: () =>
      formatFamily(
        'http_server_shed_requests_total',
        'counter',
        'Requests answered 503 by load shedding, by reason',
        [...counts].map(([reason, count]) => [{ reason }, count] as const),
      ),
    stop: () => void unsubscribe('kickstart.shed', onShed),
  }
}

/**
 * formatTarget returns target_info, the series OpenTelemetry's Prometheus exporters make of the
 * service's resource attributes: its name, version and commit (vcs.ref.head.revision), the
 * unknown ones left out. Join it to any series on instance and job to label it with the version.
 */
function formatTarget(build: BuildInfo): string {
  const labels = {
    service_name: build.service,
    service_version: build.version ?? undefined,
    vcs_ref_head_revision: build.commit ?? undefined,
  }
  return formatFamily('target_info', 'gauge', 'Target metadata', [[labels, 1]])
}
