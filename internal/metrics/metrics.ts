import type { AddOn, AddOnContext } from '../addon.ts'
import type { BuildInfo } from '../build-info.ts'
import { addressExpected, parseAddress, type Vars } from '../config.ts'
import { describeListenError } from '../listen.ts'
import type { Handler, Routes } from '../router.ts'
import { contentType, formatFamily } from './exposition.ts'
import { newRequestMetrics, type RequestMetrics } from './requests.ts'
import { type RuntimeMetrics, startRuntimeMetrics } from './runtime.ts'

/** metricsVars declares the metrics listener's one variable. */
export const metricsVars = {
  metricsAddr: {
    name: 'METRICS_ADDR',
    default: '',
    parse: parseAddress,
    expected: addressExpected,
    doc: '`host:port` of the metrics listener (`GET /metrics`, Prometheus text format): `:9464` for all interfaces, which a scraper in the pod network needs, or `127.0.0.1:9464`; unset: off',
  },
} satisfies Vars

/**
 * metrics serves the service's RED metrics (rate, errors, duration of the public server's
 * requests, after OpenTelemetry's HTTP conventions) and the process's, for Prometheus to scrape
 * (README.md in this folder): a listener of its own on METRICS_ADDR, off unless set, never on the
 * public port.
 */
export const metrics: AddOn<typeof metricsVars> = {
  name: 'metrics',
  vars: metricsVars,
  start: async (ctx) => {
    const addr = ctx.config.metricsAddr
    if (addr === null) return
    const requests = newRequestMetrics()
    const runtime = await startRuntimeMetrics()
    await ctx.serve('metrics', addr, newMetricsRoutes(ctx, requests, runtime)).catch((err: unknown) => {
      runtime.stop()
      throw new Error(describeListenError(err, addr, 'METRICS_ADDR'))
    })
    // The listener stays up through the drain, so the drain shows in the last scrapes; the
    // sampling stops once it is over, just before the listener closes.
    ctx.lifecycle.onShutdown('metrics', () => runtime.stop())
    return { hooks: { done: requests.record } }
  },
}

/** newMetricsRoutes lists the metrics listener's one route, which metrics.openapi.yaml documents. */
export function newMetricsRoutes(
  ctx: Pick<AddOnContext<unknown>, 'build' | 'server'>,
  requests: RequestMetrics,
  runtime: RuntimeMetrics,
): Routes {
  return { '/metrics': { GET: handleMetrics(ctx, requests, runtime) } }
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
): Handler {
  const target = formatTarget(build)
  return async (_req, res) => {
    const body = requests.format(server.inflight) + (await runtime.format()) + target
    res.writeHead(200, {
      'content-type': contentType,
      'content-length': Buffer.byteLength(body),
      'cache-control': 'no-store',
    })
    res.end(body)
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
