// The metrics add-on: its listener, what it records of the public server's requests and of the
// diagnostics channels, the process and runtime series, and its docs held to the code.
import assert from 'node:assert/strict'
import { channel } from 'node:diagnostics_channel'
import { EventEmitter, once } from 'node:events'
import { readFileSync } from 'node:fs'
import { type IncomingMessage, request } from 'node:http'
import { createServer } from 'node:net'
import { describe, it } from 'node:test'
import { buildDir, readBuild } from '../build-info.ts'
import { run } from '../run.ts'
import { exchange } from '../../test/raw.ts'
import { assertProblem, declaredRows, newGate, newLogSink, readmeTable, startService } from '../../test/service.ts'
import { checkListenerSpec, loadSpec } from '../../test/spec.ts'
import { makeGarbage, type MetricsService, samples, scrapeUntil, startMetricsService } from './harness.ts'
import { addOn as metrics, metricsVars } from './metrics.ts'

const count = 'http_server_request_duration_seconds_count'

/** labels writes a request series' labels as the exposition does: method, status, route ('': none), error_type. */
function labels(method: string, status: number, route = '', error = '') {
  const error_type = error && `error_type="${error}",`
  return `{${error_type}http_request_method="${method}",http_response_status_code="${status}",${route && `http_route="${route}",`}url_scheme="http"}`
}

/** send requests path on service's public port and reads the whole answer. */
async function send(service: MetricsService, path: string, method = 'GET'): Promise<number> {
  const res = await fetch(`${service.url}${path}`, { method })
  await res.arrayBuffer()
  return res.status
}

describe('the metrics listener', () => {
  it('is off by default, and the public port never serves /metrics', async (t) => {
    for (const env of [{}, { METRICS_ADDR: '127.0.0.1:0' }]) {
      const service = await startService(t, env, { addOns: [metrics] })
      const on = service.logs.some((l) => l.msg === 'metrics listening')
      assert.equal(on, 'METRICS_ADDR' in env)
      await assertProblem(await fetch(`${service.url}/metrics`), 404)
      assert.equal(await service.stop(), 0)
    }
  })

  it('answers GET /metrics alone, as text never cached, logging no successful scrape', async (t) => {
    const service = await startMetricsService(t)
    const res = await fetch(service.metricsUrl)
    assert.equal(res.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8')
    assert.equal(res.headers.get('cache-control'), 'no-store')
    const text = await res.text()
    assert.equal(Number(res.headers.get('content-length')), Buffer.byteLength(text))
    assert.match(text, /^# HELP /)
    await assertProblem(await fetch(service.metricsUrl.replace('/metrics', '/health')), 404)
    const post = await fetch(service.metricsUrl, { method: 'POST' })
    assert.equal(post.headers.get('allow'), 'GET, HEAD')
    await assertProblem(post, 405)
    await service.waitForLog((l) => l.msg === 'request' && l.status === 405)
    const logged = service.logs.filter((l) => l.msg === 'request').map((l) => [l.listener, l.path, l.status])
    assert.deepEqual(logged, [
      ['metrics', '/health', 404],
      ['metrics', '/metrics', 405],
    ])
  })

  it('fails the start with exit code 1 and one line when its port is taken, leaving nothing behind', async (t) => {
    const blocker = createServer().listen(0, '127.0.0.1')
    t.after(() => blocker.close())
    await once(blocker, 'listening')
    const { port } = blocker.address() as { port: number }
    const sink = newLogSink()
    const env = { PORT: '0', METRICS_ADDR: `127.0.0.1:${port}` }
    assert.equal(await run({ env, stdout: sink, events: new EventEmitter(), addOns: [metrics] }), 1)
    const message = `cannot start metrics: cannot listen (METRICS_ADDR): listen EADDRINUSE: address already in use 127.0.0.1:${port}`
    assert.deepEqual(
      sink.logs.map((l) => [l.level, l.msg]),
      [['fatal', message]],
    )
    assert.equal(channel('kickstart.shed').hasSubscribers, false)
  })
})

describe('the request metrics', () => {
  it('count each public request once by method, route template, the status sent and error, and no scrape', async (t) => {
    const stalled = newGate()
    const service = await startMetricsService(t, {
      '/things/{id}': { GET: (_req, res) => void res.writeHead(200).end() },
      '/fail': {
        GET: () => {
          throw new Error('planned')
        },
      },
      '/stall': { GET: () => stalled.open() }, // never answers
      '/stream': { GET: (_req, res) => void res.writeHead(200, { 'content-type': 'text/plain' }).write('part') },
    })
    for (const path of ['/things/1', '/things/2', '/things/three', '/nope', '/a/b?c=d', '/fail'])
      await send(service, path)
    for (const method of ['HEAD', 'DELETE', 'PROPFIND', 'PURGE']) await send(service, '/health', method)
    await service.scrape()
    const client = new AbortController() // /stall, cut before its headers
    const cut = fetch(`${service.url}/stall`, { signal: client.signal }).catch((err: unknown) => err)
    await stalled.opened
    client.abort()
    assert.ok((await cut) instanceof Error)
    const req = request(`${service.url}/stream`).end() // /stream, cut after them
    const [res] = (await once(req, 'response')) as [IncomingMessage]
    req.destroy()
    assert.equal(res.statusCode, 200)
    const text = await scrapeUntil(service, (text) => text.includes(labels('GET', 200, '/stream', 'aborted')))
    assert.deepEqual(samples(text, count), {
      [labels('GET', 200, '/things/{id}')]: 3, // the template, never the path
      [labels('GET', 404)]: 2, // no route matched: no http_route
      [labels('GET', 500, '/fail', '500')]: 1,
      [labels('HEAD', 200, '/health')]: 1,
      [labels('DELETE', 405, '/health')]: 1, // a 405 keeps its route
      [labels('_OTHER', 405, '/health')]: 2, // outside RFC 9110 and PATCH
      [labels('GET', 499, '/stall', 'aborted')]: 1, // as the access log says
      [labels('GET', 200, '/stream', 'aborted')]: 1,
    })
  })

  it('keep a histogram whose buckets add up: cumulative, +Inf equal to the count, the sum the time taken', async (t) => {
    const service = await startMetricsService(t, {
      '/slow': { GET: (_req, res) => void setTimeout(() => res.writeHead(200).end(), 30) },
    })
    for (let i = 0; i < 3; i++) await send(service, '/slow')
    const text = await scrapeUntil(service, (text) => samples(text, count)[labels('GET', 200, '/slow')] === 3)
    const buckets = Object.values(samples(text, 'http_server_request_duration_seconds_bucket'))
    assert.equal(buckets.length, 15, '14 bounds and +Inf')
    assert.deepEqual(
      buckets,
      buckets.toSorted((a, b) => a - b),
      'cumulative',
    )
    // Each waited for a 30 ms timer (which may fire a millisecond early): none up to 25 ms.
    assert.deepEqual([buckets[2], buckets.at(-1)], [0, 3])
    const sum = samples(text, 'http_server_request_duration_seconds_sum')[labels('GET', 200, '/slow')] ?? 0
    assert.ok(sum > 0.075 && sum < 10, String(sum))
  })

  it('show the requests in flight by method, a method once seen staying at 0', async (t) => {
    const arrived = newGate()
    let release = () => {}
    const service = await startMetricsService(t, {
      '/stall': {
        GET: (_req, res) => {
          release = () => res.writeHead(200).end()
          arrived.open()
        },
      },
    })
    const active = async () => samples(await service.scrape(), 'http_server_active_requests')
    assert.deepEqual(await active(), {}, 'no series before any request')
    const stalled = fetch(`${service.url}/stall`)
    await arrived.opened
    assert.deepEqual(await active(), { '{http_request_method="GET",url_scheme="http"}': 1 })
    release()
    await (await stalled).arrayBuffer()
    await send(service, '/health', 'HEAD') // never in flight at a scrape
    await scrapeUntil(service, (text) => text.includes(labels('HEAD', 200, '/health')))
    const idle = {
      '{http_request_method="GET",url_scheme="http"}': 0,
      '{http_request_method="HEAD",url_scheme="http"}': 0,
    }
    assert.deepEqual(await active(), idle)
  })

  it("count the requests Node's parser rejects by status, apart from the request durations", async (t) => {
    const service = await startMetricsService(t)
    const H = 'Host: x\r\n'
    for (const [bytes, status] of [
      [`GET /health HTTP/1.1\r\n${H}Bad Header\r\n\r\n`, 400],
      [`FOO /health HTTP/1.1\r\n${H}\r\n`, 400],
      [`GET /health HTTP/1.1\r\n${H}X-Big: ${'x'.repeat(17 * 1024)}\r\n\r\n`, 431],
      [`CONNECT example.com:443 HTTP/1.1\r\n${H}\r\n`, 405],
    ] as const) {
      assert.deepEqual((await exchange(service.port, [bytes])).statuses, [status])
    }
    const rejected = 'http_server_rejected_requests_total'
    const text = await scrapeUntil(service, (text) => text.includes(`${rejected}{http_response_status_code="405"}`))
    const statuses = { '{http_response_status_code="400"}': 2, '{http_response_status_code="431"}': 1 }
    assert.deepEqual(samples(text, rejected), { ...statuses, '{http_response_status_code="405"}': 1 })
    assert.deepEqual(samples(text, count), {}, 'no duration recorded for them')
  })

  it('keep two services in one process apart', async (t) => {
    const one = await startMetricsService(t)
    const two = await startMetricsService(t)
    await send(one, '/health')
    await scrapeUntil(one, (text) => text.includes(labels('GET', 200, '/health')))
    assert.deepEqual(samples(await two.scrape(), count), {})
  })
})

describe('the diagnostics channels', () => {
  it('count shed requests, job runs and queue messages as their publishers tell them, from the first', async (t) => {
    const service = await startMetricsService(t)
    assert.doesNotMatch(await service.scrape(), /shed|job|messaging/, 'no family before its first message')
    for (const reason of ['event_loop_delay', 'event_loop_delay', 'inflight']) {
      channel('kickstart.shed').publish({ reason, route: '/items' })
    }
    for (const [outcome, durationSeconds] of [
      ['ok', 0.5],
      ['ok', 20],
      ['failed', 2],
      ['skipped', 0],
    ] as const) {
      channel('kickstart.job').publish({ job: 'heap-watch', outcome, durationSeconds })
    }
    for (const [outcome, durationSeconds] of [
      ['acked', 0.015625],
      ['acked', 0.25],
      ['retried', 1],
      ['dead-lettered', 3],
    ]) {
      channel('kickstart.queue').publish({ queue: 'emails', outcome, durationSeconds })
    }
    const text = await service.scrape()
    assert.deepEqual(samples(text, 'http_server_shed_requests_total'), {
      '{reason="event_loop_delay"}': 2,
      '{reason="inflight"}': 1,
    })
    const job = (outcome: string) => `{job="heap-watch",outcome="${outcome}"}`
    assert.deepEqual(samples(text, 'job_runs_total'), { [job('ok')]: 2, [job('failed')]: 1, [job('skipped')]: 1 })
    assert.deepEqual(samples(text, 'job_run_duration_seconds_sum'), { [job('ok')]: 20.5, [job('failed')]: 2 })
    assert.equal(samples(text, 'job_run_duration_seconds_bucket')['{job="heap-watch",outcome="ok",le="1"}'], 1)
    const queue = (error: string) =>
      `{${error && `error_type="${error}",`}messaging_destination_name="emails",messaging_operation_name="process",messaging_system="rabbitmq"}`
    const byError = { [queue('')]: 2, [queue('retried')]: 1, [queue('dead-lettered')]: 1 }
    assert.deepEqual(samples(text, 'messaging_client_consumed_messages_total'), byError)
    assert.deepEqual(samples(text, 'messaging_process_duration_seconds_count'), byError)
    assert.equal(samples(text, 'messaging_process_duration_seconds_sum')[queue('')], 0.265625)
  })
})

describe('the process and runtime metrics', () => {
  it('report CPU, memory, heap, file descriptors, start time, event loop, GC and the build', async (t) => {
    const service = await startMetricsService(t)
    // The event-loop delay is sampled every 10 ms, and collections come when they come.
    const text = await scrapeUntil(service, (text) => {
      makeGarbage()
      return text.includes('nodejs_gc_duration_seconds_count{kind="minor"}') && text.includes('lag_p99')
    })
    const value = (name: string, labels = '') => samples(text, name)[labels] ?? NaN
    assert.ok(value('process_cpu_seconds_total') > 0)
    assert.ok(value('process_resident_memory_bytes') > value('nodejs_heap_size_used_bytes'))
    assert.ok(value('nodejs_heap_size_used_bytes') < value('nodejs_heap_size_limit_bytes'))
    assert.ok(Math.abs(value('process_start_time_seconds') - performance.timeOrigin / 1000) < 0.001)
    if (process.platform === 'linux')
      assert.ok(value('process_open_fds') >= 3 && value('process_open_fds') < value('process_max_fds'))
    assert.ok(value('nodejs_eventloop_lag_p99_seconds') <= value('nodejs_eventloop_lag_max_seconds'))
    assert.ok(value('nodejs_eventloop_lag_max_seconds') < 5, 'seconds, not nanoseconds')
    assert.ok(value('nodejs_eventloop_time_seconds_total', '{nodejs_eventloop_state="active"}') > 0)
    assert.ok(value('nodejs_eventloop_time_seconds_total', '{nodejs_eventloop_state="idle"}') >= 0)
    assert.ok(value('nodejs_gc_duration_seconds_sum', '{kind="minor"}') > 0)
    const { service: name, version, commit } = readBuild(buildDir).build
    const target = [
      `service_name="${name}"`,
      version && `service_version="${version}"`,
      commit && `vcs_ref_head_revision="${commit}"`,
    ]
    assert.deepEqual(samples(text, 'target_info'), { [`{${target.filter(Boolean).join(',')}}`]: 1 })
  })

  it('stop sampling and listening to the channels at shutdown, through a hook logged like any other', async (t) => {
    const service = await startMetricsService(t)
    assert.equal(channel('kickstart.shed').hasSubscribers, true)
    assert.equal(await service.stop(), 0)
    assert.ok(service.logs.some((l) => l.msg === 'shutdown hook finished' && l.hook === 'metrics'))
    assert.equal(channel('kickstart.shed').hasSubscribers, false)
  })
})

describe('metrics.openapi.yaml and README.md', () => {
  checkListenerSpec(
    loadSpec(new URL('metrics.openapi.yaml', import.meta.url)),
    metrics,
    { METRICS_ADDR: '127.0.0.1:0' },
    'metrics',
  )

  it("hold the README's variable table to the declaration", () => {
    const readme = readFileSync(new URL('README.md', import.meta.url), 'utf8')
    assert.deepEqual(readmeTable(readme, '## Configuration'), declaredRows(metricsVars))
  })
})
