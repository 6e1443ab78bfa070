// The metrics as real clients read them: promtool's checker, and a Prometheus server that scrapes
// the service every second and answers the PromQL a dashboard runs.
import assert from 'node:assert/strict'
import { before, describe, it } from 'node:test'
import { pkg, withRoutes } from '../../test/service.ts'
import { formatFamily } from './exposition.ts'
import {
  checkMetrics,
  findPrometheus,
  makeGarbage,
  startMetricsService,
  startPrometheus,
  type Tools,
  waitUntil,
} from './harness.ts'

// Installing Debian's package, when it is missing, takes most of this.
const timeout = 240_000

describe('the metrics, read by Prometheus itself', { timeout }, () => {
  let tools: Tools | { skip: string } = { skip: 'not looked for yet' }
  before(() => {
    tools = findPrometheus()
  })

  it('pass promtool check metrics, every kind of series included', async (t) => {
    if ('skip' in tools) return t.skip(tools.skip)
    const service = await startMetricsService(
      t,
      {},
      withRoutes({
        '/fail': {
          GET: () => {
            throw new Error('planned')
          },
        },
      }),
    )
    for (const [path, method] of [
      ['/health', 'GET'],
      ['/health', 'HEAD'],
      ['/health', 'POST'],
      ['/health', 'PROPFIND'],
      ['/nothing/here', 'GET'],
      ['/fail', 'GET'],
    ] as const) {
      await (await fetch(`${service.url}${path}`, { method })).arrayBuffer()
    }
    // Enough garbage for a few minor collections, so the GC histogram has series too.
    await waitUntil(async () => {
      makeGarbage()
      return (await service.scrape()).some((s) => s.name === 'nodejs_gc_duration_seconds_count')
    }, 'a garbage collection')

    // No request can put a quote or a backslash in a label (the router refuses such templates):
    // a family of the exposition's own writing shows they would still be escaped as Prometheus reads them.
    const odd = formatFamily('odd_total', 'counter', 'Odd label values', [[{ value: 'a "quoted"\\back\nline' }, 1]])
    const text = (await (await fetch(`${service.metricsUrl}/metrics`)).text()) + odd
    for (const needle of [
      'error_type="500"',
      'http_request_method="_OTHER"',
      'value="a \\"quoted\\"\\\\back\\nline"',
    ]) {
      assert.ok(text.includes(needle), `${needle} in the exposition`)
    }
    const { status, output } = checkMetrics(tools.promtool, text)
    assert.equal(status, 0, output)
    assert.equal(output.trim(), '', 'no lint findings')
  })

  it('answer PromQL for request rate and p99 latency by route, from real scrapes', async (t) => {
    if ('skip' in tools) return t.skip(tools.skip)
    const started = performance.now()
    const service = await startMetricsService(t)
    const job = 'kickstart-node'
    const prometheus = await startPrometheus(tools.prometheus, new URL(service.metricsUrl).host, job)
    t.after(() => prometheus.stop())

    // Load keeps coming until Prometheus has two scrapes of it inside the rate window: a rate
    // needs two samples that differ.
    const paths = ['/health', '/ready', '/openapi.yaml', '/no/such/path']
    const stopLoad = new AbortController()
    const load = (async () => {
      while (!stopLoad.signal.aborted) {
        for (const path of paths) await (await fetch(`${service.url}${path}`)).arrayBuffer()
        await new Promise((resolve) => setTimeout(resolve, 10))
      }
    })().catch((err: unknown) => err) // awaited below; a test that failed before must not leave it unhandled
    t.after(() => stopLoad.abort())

    const rateByRoute = `sum by (http_route) (rate(http_server_request_duration_seconds_count{job="${job}"}[30s]))`
    const p99ByRoute = `histogram_quantile(0.99, sum by (le, http_route) (rate(http_server_request_duration_seconds_bucket{job="${job}"}[30s])))`
    // The 404s have no http_route: they show as one series without it, here ''.
    const routes = ['', '/health', '/openapi.yaml', '/ready']
    const routesOf = (result: { metric: Record<string, string> }[]) =>
      result.map((r) => r.metric.http_route ?? '').sort((a, b) => a.localeCompare(b))
    const covers = (result: { metric: Record<string, string>; value: number }[]) =>
      routes.every((route) => result.some((r) => (r.metric.http_route ?? '') === route && r.value > 0))
    await waitUntil(
      async () => covers(await prometheus.query(rateByRoute)),
      'a request rate for every route',
      prometheus.output,
    )
    stopLoad.abort()
    assert.equal(await load, undefined, 'every request of the load was answered')

    const rates = await prometheus.query(rateByRoute)
    assert.deepEqual(routesOf(rates), routes, JSON.stringify(rates))
    for (const { value } of rates) assert.ok(Number.isFinite(value) && value > 0, JSON.stringify(rates))

    const p99 = await prometheus.query(p99ByRoute)
    assert.deepEqual(routesOf(p99), routes, JSON.stringify(p99))
    // Fast requests: the p99 lies within the buckets, above 0 and at most the 10 s boundary.
    for (const { value } of p99) assert.ok(value > 0 && value <= 10, JSON.stringify(p99))

    const [up] = await prometheus.query(`up{job="${job}"}`)
    assert.equal(up?.value, 1, 'the last scrape succeeded')
    const [target] = await prometheus.query(`target_info{job="${job}"}`)
    assert.equal(target?.metric.service_name, pkg.name)
    assert.equal(target.metric.service_version, pkg.version)
    const [cpu] = await prometheus.query(`rate(process_cpu_seconds_total{job="${job}"}[30s])`)
    assert.ok(cpu !== undefined && cpu.value > 0, 'the process used CPU')
    t.diagnostic(`from the service's start to the answers: ${Math.round(performance.now() - started)} ms`)
  })
})
