// The metrics as real clients read them: promtool's checker, and a Prometheus server that scrapes
// the service every second and answers the PromQL a dashboard runs. Debian's `prometheus` package
// provides both; these tests never install it (.ci/run does). Without it they skip, saying why,
// and under CI=true that is a failure.
import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { channel } from 'node:diagnostics_channel'
import { once } from 'node:events'
import { existsSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it, type TestContext } from 'node:test'
import { pkg } from '../../test/service.ts'
import { formatFamily } from './exposition.ts'
import { makeGarbage, scrapeUntil, startMetricsService, waitUntil } from './harness.ts'

const [prometheus, promtool] = ['/usr/bin/prometheus', '/usr/bin/promtool']

/** skipWithout skips t when Prometheus is not installed, and fails it under CI=true instead. */
function skipWithout(t: TestContext): boolean {
  if (existsSync(prometheus) && existsSync(promtool)) return false
  const missing = [prometheus, promtool].filter((path) => !existsSync(path)).join(' and ')
  const reason = `${missing} missing: install Debian's prometheus package (apt-get install -y prometheus)`
  if (process.env.CI === 'true') assert.fail(`${reason}; under CI=true this test must run`)
  t.skip(reason)
  return true
}

/**
 * startPrometheus starts a Prometheus server on a free loopback port, its configuration and data
 * in a temporary directory, scraping target every second as job, and resolves once it is ready.
 */
async function startPrometheus(t: TestContext, target: string, job: string) {
  const dir = await mkdtemp(join(tmpdir(), 'metrics-prometheus-'))
  const config = `global: { scrape_interval: 1s, scrape_timeout: 1s }
scrape_configs: [{ job_name: ${job}, static_configs: [{ targets: ['${target}'] }] }]\n`
  await writeFile(join(dir, 'prometheus.yml'), config)
  const args = [`--config.file=${dir}/prometheus.yml`, `--storage.tsdb.path=${dir}/data`]
  const child = spawn(prometheus, [...args, '--web.listen-address=127.0.0.1:0'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  let output = ''
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk))
  const exited = once(child, 'exit')
  t.after(async () => {
    child.kill()
    await exited
    await rm(dir, { recursive: true, force: true })
  })
  // Prometheus logs the address it listens on, port 0 resolved, then answers 503 until it is ready.
  const url = await waitUntil(
    async () => {
      const address = /msg="Listening on" address=(127\.0\.0\.1:\d+)/.exec(output)?.[1]
      const ready = address && (await fetch(`http://${address}/-/ready`).catch(() => undefined))?.ok
      return ready ? address : undefined
    },
    () => `Prometheus ready\n${output}`,
  )
  return async function query(promql: string): Promise<Result> {
    const res = await fetch(`http://${url}/api/v1/query?query=${encodeURIComponent(promql)}`)
    const body = (await res.json()) as {
      data: { result: { metric: Record<string, string>; value: [number, string] }[] }
    }
    return body.data.result.map(({ metric, value }) => ({ metric, value: Number(value[1]) }))
  }
}

/** Result is an instant query's vector. */
type Result = { metric: Record<string, string>; value: number }[]

describe('the metrics, read by Prometheus itself', { timeout: 60_000 }, () => {
  it('pass promtool check metrics, every family included', async (t) => {
    if (skipWithout(t)) return
    const fail = () => {
      throw new Error('planned')
    }
    const service = await startMetricsService(t, { '/fail': { GET: fail } })
    for (const path of ['/fail', '/nothing/here']) await (await fetch(`${service.url}${path}`)).arrayBuffer()
    await (await fetch(`${service.url}/health`, { method: 'PROPFIND' })).arrayBuffer()
    channel('kickstart.http.rejected').publish({ status: 400 })
    channel('kickstart.shed').publish({ reason: 'inflight', route: '/items' })
    channel('kickstart.job').publish({ job: 'heap-watch', outcome: 'ok', durationSeconds: 0.01 })
    channel('kickstart.queue').publish({ queue: 'emails', outcome: 'retried', durationSeconds: 0.2 })
    const needles = ['nodejs_gc_duration_seconds', 'nodejs_eventloop_lag_p99_seconds', 'error_type="500"', '"_OTHER"']
    let text = await scrapeUntil(service, (text) => makeGarbage() > 0 && needles.every((n) => text.includes(n)))
    // No label the service writes can hold a quote, a backslash or a line feed: a family of the
    // exposition's own writing shows they would be escaped as Prometheus reads them.
    text += formatFamily('odd_total', 'counter', 'Odd label values.', [[{ value: 'a "quoted"\\back\nline' }, 1]])
    assert.ok(text.includes('odd_total{value="a \\"quoted\\"\\\\back\\nline"} 1'))
    assert.equal([...text.matchAll(/^# TYPE /gm)].length, 21, 'the 20 families the service writes, and the odd one')
    const checked = spawnSync(promtool, ['check', 'metrics'], { input: text, encoding: 'utf8' })
    assert.equal(checked.status, 0, checked.stdout + checked.stderr)
    assert.equal(checked.stdout + checked.stderr, '', 'no lint findings')
  })

  it('answer PromQL for request rate and p99 latency by route, from real scrapes', async (t) => {
    if (skipWithout(t)) return
    const started = performance.now()
    const service = await startMetricsService(t)
    const job = 'kickstart-node'
    const query = await startPrometheus(t, new URL(service.metricsUrl).host, job)
    // Load keeps coming until Prometheus has two scrapes of it inside the rate window: a rate needs two samples.
    const stopLoad = new AbortController()
    t.after(() => stopLoad.abort())
    const load = (async () => {
      while (!stopLoad.signal.aborted) {
        for (const path of ['/health', '/ready', '/openapi.yaml', '/no/such/path']) {
          await (await fetch(`${service.url}${path}`)).arrayBuffer()
        }
        await new Promise((resolve) => setTimeout(resolve, 10))
      }
    })().catch((err: unknown) => err) // awaited below; a failed test must not leave it unhandled
    const routes = ['', '/health', '/openapi.yaml', '/ready'] // the 404s: one series without http_route
    const routesOf = (result: Result) => result.map((r) => r.metric.http_route ?? '').sort()
    const rate = `sum by (http_route) (rate(http_server_request_duration_seconds_count{job="${job}"}[30s]))`
    const rates = await waitUntil(
      async () => {
        const result = await query(rate)
        return result.length === routes.length && result.every((r) => r.value > 0) ? result : undefined
      },
      () => 'a request rate for every route',
    )
    stopLoad.abort()
    assert.equal(await load, undefined, 'every request of the load was answered')
    assert.deepEqual(routesOf(rates), routes)
    const buckets = `rate(http_server_request_duration_seconds_bucket{job="${job}"}[30s])`
    const p99 = await query(`histogram_quantile(0.99, sum by (le, http_route) (${buckets}))`)
    assert.deepEqual(routesOf(p99), routes)
    // Fast requests: the p99 lies within the buckets, above 0 and at most the 10 s bound.
    for (const { value } of p99) assert.ok(value > 0 && value <= 10, JSON.stringify(p99))
    assert.equal((await query(`up{job="${job}"}`))[0]?.value, 1, 'the last scrape succeeded')
    const [target] = await query(`target_info{job="${job}"}`)
    assert.deepEqual([target?.metric.service_name, target?.metric.service_version], [pkg.name, pkg.version])
    const [cpu] = await query(`rate(process_cpu_seconds_total{job="${job}"}[30s])`)
    assert.ok(cpu !== undefined && cpu.value > 0, 'the process used CPU')
    t.diagnostic(`from the service's start to the answers: ${Math.round(performance.now() - started)} ms`)
  })
})
