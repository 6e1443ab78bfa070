import type { TrackedResponse } from '../response.ts'
import {
  bucketOf,
  formatFamily,
  formatHeader,
  formatHistogram,
  type HistogramSeries,
  type Labels,
  newHistogramSeries,
} from './exposition.ts'

// OpenTelemetry's HTTP server metrics (stable semantic conventions), named as its Prometheus
// exporters name them: https://opentelemetry.io/docs/specs/semconv/http/http-metrics/
const duration = 'http_server_request_duration_seconds'
const active = 'http_server_active_requests'

/** boundaries are the semantic conventions' advised buckets for http.server.request.duration, in seconds. */
export const boundaries = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10] as const
const le = boundaries.map(String)

// RFC 9110's methods and PATCH: the "known" methods; any other is _OTHER, so a client cannot add
// series by inventing methods. The router serves only methods in this list (router.ts, Method).
const methods = ['CONNECT', 'DELETE', 'GET', 'HEAD', 'OPTIONS', 'PATCH', 'POST', 'PUT', 'TRACE', '_OTHER'] as const
const methodIds = new Map<string, number>(methods.map((method, id) => [method, id]))
const otherId = methods.length - 1

/**
 * RequestMetrics records the public server's requests and writes them, with the requests in
 * flight, in the text format.
 */
export interface RequestMetrics {
  /** record counts one response that finished or was aborted: the `done` request hook. */
  record: (res: TrackedResponse) => void
  /** format returns the duration histogram and the requests in flight, HELP and TYPE included. */
  format: (inflight: Iterable<TrackedResponse>) => string
}

/**
 * newRequestMetrics returns empty request metrics. A series is made the first time its labels
 * occur; after that, recording a request allocates nothing: three Map lookups (the method, the
 * route, then one number made of the status, method and abort), a bucket scan and two additions.
 */
export function newRequestMetrics(): RequestMetrics {
  const byRoute = new Map<string, Map<number, HistogramSeries>>()
  const seenMethods = new Set<number>()

  function record(res: TrackedResponse) {
    const seconds = (res.closedAt - res.startedAt) / 1000
    const aborted = res.aborted
    const status = res.sentStatus // as the access log reports it
    const method = methodIds.get(res.req.method ?? '') ?? otherId
    let series = byRoute.get(res.route)
    if (series === undefined) byRoute.set(res.route, (series = new Map()))
    // status < 1000 (node:http refuses others), method < 16: one small integer, no string built.
    const key = (status * 16 + method) * 2 + (aborted ? 1 : 0)
    let one = series.get(key)
    if (one === undefined) {
      series.set(key, (one = newHistogramSeries(labelsOf(res.route, method, status, aborted), boundaries)))
      seenMethods.add(method)
    }
    const bucket = bucketOf(boundaries, seconds)
    one.counts[bucket] = (one.counts[bucket] ?? 0) + 1
    one.sum += seconds
  }

  function format(inflight: Iterable<TrackedResponse>) {
    const counts = new Map<number, number>()
    for (const res of inflight) {
      const method = methodIds.get(res.req.method ?? '') ?? otherId
      counts.set(method, (counts.get(method) ?? 0) + 1)
      seenMethods.add(method)
    }
    // A method once seen stays, at 0 when idle, so its series does not vanish between requests.
    const activeEntries = [...seenMethods]
      .sort((a, b) => a - b)
      .map((method) => [activeLabels(method), counts.get(method) ?? 0] as const)
    const histogram = [...byRoute.values()].flatMap((series) => [...series.values()])
    return (
      (histogram.length === 0
        ? ''
        : formatHeader(duration, 'histogram', 'Duration of HTTP server requests.') +
          formatHistogram(duration, le, histogram)) +
      formatFamily(active, 'gauge', 'Number of active HTTP server requests.', activeEntries)
    )
  }

  return { record, format }
}

/**
 * labelsOf returns a series' labels: OpenTelemetry's attributes with dots made underscores. A
 * request that matched no route has no http_route (the conventions set it "if and only if it's
 * available"). error_type is "aborted" for a response cut short and the status for a 5xx, as the
 * conventions advise, and absent otherwise.
 */
function labelsOf(route: string, method: number, status: number, aborted: boolean): Labels {
  return {
    error_type: aborted ? 'aborted' : status >= 500 ? String(status) : undefined,
    http_request_method: methods[method],
    http_response_status_code: status,
    http_route: route === '' ? undefined : route,
    url_scheme: 'http',
  }
}

function activeLabels(method: number): Labels {
  return { http_request_method: methods[method], url_scheme: 'http' }
}
