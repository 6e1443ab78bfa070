// The metrics add-on: its listener on METRICS_ADDR only, what it counts of the public server's
// requests and how it labels them, the process and runtime series, and its docs held to the code.
import assert from 'node:assert/strict'
import { channel } from 'node:diagnostics_channel'
import { EventEmitter, once } from 'node:events'
import { readFileSync } from 'node:fs'
import { type IncomingMessage, request } from 'node:http'
import { connect, createServer } from 'node:net'
import { describe, it } from 'node:test'
import { buildDir, readBuild } from '../build-info.ts'
import { address, parseConfig } from '../config.ts'
import { run } from '../run.ts'
import {
  assertProblem,
  declaredRows,
  newGate,
  newLogSink,
  pkg,
  readmeTable,
  startService,
  withRoutes,
} from '../../test/service.ts'
import { checkListenerSpec, loadSpec } from '../../test/spec.ts'
import {
  findSamples,
  makeGarbage,
  type MetricsService,
  type Sample,
  startMetricsService,
  waitUntil,
} from './harness.ts'
import { addOn as metrics, metricsVars } from './metrics.ts'
import { boundaries } from './requests.ts'

const { build } = readBuild(buildDir)
const spec = loadSpec(new URL('metrics.openapi.yaml', import.meta.url))
const duration = 'http_server_request_duration_seconds'

/** get requests path from service's public port and reads the whole answer. */
async function get(service: MetricsService, path: string, init: RequestInit = {}): Promise<number> {
  const res = await fetch(`${service.url}${path}`, init)
  await res.arrayBuffer()
  return res.status
}

/** countOf returns the _count of the one duration series with labels, 0 when there is none. */
function countOf(samples: Sample[], labels: Record<string, string | undefined>): number {
  const found = findSamples(samples, `${duration}_count`, labels)
  assert.ok(found.length <= 1, `one series at most for ${JSON.stringify(labels)}: ${JSON.stringify(found)}`)
  return found[0]?.value ?? 0
}

/** waitForCount polls the metrics until the series with labels has counted count requests. */
async function waitForCount(service: MetricsService, labels: Record<string, string | undefined>, count: number) {
  let samples: Sample[] = []
  await waitUntil(
    async () => countOf((samples = await service.scrape()), labels) >= count,
    `${count} requests with ${JSON.stringify(labels)}`,
    () => JSON.stringify(findSamples(samples, `${duration}_count`)),
  )
  return samples
}

const ok = { http_response_status_code: '200', url_scheme: 'http', error_type: undefined }

describe('the metrics listener', () => {
  it('is off by default, and the public port never serves /metrics', async (t) => {
    for (const env of [{}, { METRICS_ADDR: '127.0.0.1:0' }]) {
      const service = await startService(t, env, { addOns: [metrics] })
      assert.equal(
        service.logs.some((l) => l.msg === 'metrics listening'),
        'METRICS_ADDR' in env,
      )
      await assertProblem(await fetch(`${service.url}/metrics`), 404)
      assert.equal(await service.stop(), 0)
    }
  })

  it('has its own route table, and answers in the text format, never cached', async (t) => {
    const service = await startMetricsService(t)
    for (const path of ['/health', '/ready', '/openapi.yaml', '/']) {
      await assertProblem(await fetch(`${service.metricsUrl}${path}`), 404)
    }
    const post = await fetch(`${service.metricsUrl}/metrics`, { method: 'POST' })
    assert.equal(post.headers.get('allow'), 'GET, HEAD')
    await assertProblem(post, 405)
    const res = await fetch(`${service.metricsUrl}/metrics`)
    assert.equal(res.status, 200)
    assert.equal(res.headers.get('content-type'), 'text/plain; version=0.0.4; charset=utf-8')
    assert.equal(res.headers.get('cache-control'), 'no-store')
    const text = await res.text()
    assert.equal(Number(res.headers.get('content-length')), Buffer.byteLength(text))
    assert.match(text, /^# HELP /)
  })

  it('logs where it listens before the listening line, as its own listener', async (t) => {
    const service = await startMetricsService(t)
    assert.deepEqual(
      service.logs.map((l) => l.msg),
      ['metrics listening', 'listening'],
    )
    assert.equal(service.logs[0]?.listener, 'metrics')
    assert.equal(service.logs[0]?.address, '127.0.0.1')
  })

  it('fails the start with exit code 1 and one line when its port is taken', async () => {
    const blocker = createServer().listen(0, '127.0.0.1')
    await once(blocker, 'listening')
    const port = (blocker.address() as { port: number }).port
    try {
      const sink = newLogSink()
      const env = { PORT: '0', METRICS_ADDR: `127.0.0.1:${port}` }
      assert.equal(await run({ env, stdout: sink, events: new EventEmitter(), addOns: [metrics] }), 1)
      assert.deepEqual(
        sink.logs.map((l) => [l.level, l.msg]),
        [['fatal', `cannot start metrics: cannot listen: port ${port} (METRICS_ADDR) is already in use`]],
      )
    } finally {
      blocker.close()
    }
  })

  it('refuses a METRICS_ADDR that is not host:port', () => {
    assert.deepEqual(parseConfig({ METRICS_ADDR: ':9464' }, metricsVars), {
      config: { metricsAddr: { host: '', port: 9464 } },
      problems: [],
    })
    for (const raw of ['9464', 'localhost', '::1:9464', 'host:99999']) {
      const { problems } = parseConfig({ METRICS_ADDR: raw }, metricsVars)
      assert.deepEqual(problems, [`Expected \`METRICS_ADDR\` to be ${address.expected}, got \`${raw}\``])
    }
  })
})

describe('the request metrics', () => {
  it('count every request once, by method, route template and status, and not their own scrapes', async (t) => {
    const service = await startMetricsService(
      t,
      {},
      withRoutes({ '/things/{id}': { GET: (_req, res) => void res.writeHead(200).end() } }),
    )
    for (let i = 0; i < 5; i++) assert.equal(await get(service, '/health'), 200)
    for (const id of ['1', '2', 'three']) assert.equal(await get(service, `/things/${id}`), 200)
    await service.scrape() // a scrape in between counts nowhere
    const samples = await waitForCount(service, { http_route: '/things/{id}', ...ok }, 3)
    assert.equal(countOf(samples, { http_request_method: 'GET', http_route: '/health', ...ok }), 5)
    assert.ok(
      !samples.some((s) => s.labels.http_route?.startsWith('/things/') && s.labels.http_route !== '/things/{id}'),
    )
    assert.ok(!samples.some((s) => s.labels.http_route === '/metrics'), 'the metrics listener counts nothing')
    const total = findSamples(samples, `${duration}_count`).reduce((sum, s) => sum + s.value, 0)
    assert.equal(total, 8, 'every request of the public port, once')
  })

  it('keep a histogram whose buckets add up: cumulative, +Inf equal to the count, the sum the time taken', async (t) => {
    const service = await startMetricsService(
      t,
      {},
      withRoutes({
        '/slow': { GET: (_req, res) => void setTimeout(() => res.writeHead(200).end(), 30) },
      }),
    )
    for (let i = 0; i < 3; i++) await get(service, '/slow')
    const samples = await waitForCount(service, { http_route: '/slow' }, 3)
    const buckets = findSamples(samples, `${duration}_bucket`, { http_route: '/slow' })
    assert.deepEqual(
      buckets.map((b) => b.labels.le),
      [...boundaries.map(String), '+Inf'],
    )
    const counts = buckets.map((b) => b.value)
    assert.deepEqual(
      counts,
      counts.toSorted((a, b) => a - b),
      'cumulative',
    )
    assert.equal(counts.at(-1), 3)
    // Each waited for a 30 ms timer (which may fire a millisecond early): none is in the buckets up to 25 ms.
    assert.equal(buckets.find((b) => b.labels.le === '0.025')?.value, 0)
    const [sum] = findSamples(samples, `${duration}_sum`, { http_route: '/slow' })
    assert.ok(sum !== undefined && sum.value > 0.075 && sum.value < 10, JSON.stringify(sum))
  })

  it('put every unmatched request in one series without http_route, and a 405 under its route', async (t) => {
    const service = await startMetricsService(t)
    for (const path of ['/nope', '/a/b/c', '/health/', '/nope?x=1']) assert.equal(await get(service, path), 404)
    assert.equal(await get(service, '/health', { method: 'DELETE' }), 405)
    const samples = await waitForCount(service, { http_route: '/health', http_response_status_code: '405' }, 1)
    const unmatched = findSamples(samples, `${duration}_count`, { http_response_status_code: '404' })
    assert.equal(unmatched.length, 1)
    assert.deepEqual(unmatched[0]?.labels, {
      http_request_method: 'GET',
      http_response_status_code: '404',
      url_scheme: 'http',
    })
    assert.equal(unmatched[0]?.value, 4)
    assert.equal(
      countOf(samples, { http_request_method: 'DELETE', http_route: '/health', http_response_status_code: '405' }),
      1,
    )
  })

  it('count HEAD under HEAD with the route of its GET, and methods outside the known set as _OTHER', async (t) => {
    const service = await startMetricsService(t)
    assert.equal(await get(service, '/health', { method: 'HEAD' }), 200)
    assert.equal(await get(service, '/health', { method: 'OPTIONS' }), 405)
    for (const method of ['PROPFIND', 'MKCOL', 'PURGE']) assert.equal(await get(service, '/health', { method }), 405)
    const samples = await waitForCount(service, { http_request_method: '_OTHER' }, 3)
    assert.equal(countOf(samples, { http_request_method: 'HEAD', http_route: '/health', ...ok }), 1)
    assert.equal(countOf(samples, { http_request_method: 'OPTIONS', http_route: '/health' }), 1)
    assert.deepEqual(
      [...new Set(findSamples(samples, `${duration}_count`).map((s) => s.labels.http_request_method ?? ''))].sort(
        (a, b) => a.localeCompare(b),
      ),
      ['_OTHER', 'HEAD', 'OPTIONS'],
    )
  })

  it('mark a 5xx with error_type, and a response cut before its headers as 499, aborted', async (t) => {
    const started = newGate()
    const service = await startMetricsService(
      t,
      {},
      withRoutes({
        '/fail': {
          GET: () => {
            throw new Error('planned')
          },
        },
        '/stall': { GET: () => started.open() }, // never answers
      }),
    )
    assert.equal(await get(service, '/fail'), 500)
    const client = new AbortController()
    const stalled = fetch(`${service.url}/stall`, { signal: client.signal }).catch((err: unknown) => err)
    await started.opened
    client.abort()
    assert.ok((await stalled) instanceof Error)
    const samples = await waitForCount(service, { http_route: '/stall' }, 1)
    assert.equal(countOf(samples, { http_route: '/fail', http_response_status_code: '500', error_type: '500' }), 1)
    assert.equal(countOf(samples, { http_route: '/stall', http_response_status_code: '499', error_type: 'aborted' }), 1)
    const access = await service.waitForLog((l) => l.msg === 'request' && l.path === '/stall')
    assert.equal(access.status, 499, 'the same status as the access log')
  })

  it('keep the status of a response cut after its headers went out, marked aborted', async (t) => {
    const service = await startMetricsService(
      t,
      {},
      withRoutes({
        '/stream': { GET: (_req, res) => void res.writeHead(200, { 'content-type': 'text/plain' }).write('part') },
      }),
    )
    const req = request(`${service.url}/stream`).end()
    const [res] = (await once(req, 'response')) as [IncomingMessage]
    assert.equal(res.statusCode, 200)
    req.destroy()
    const samples = await waitForCount(service, { http_route: '/stream' }, 1)
    assert.equal(
      countOf(samples, { http_route: '/stream', http_response_status_code: '200', error_type: 'aborted' }),
      1,
    )
  })

  it('count a response queued behind one whose connection closed as 499, as the access log does', async (t) => {
    const started = newGate()
    const service = await startMetricsService(t, {}, withRoutes({ '/stall': { GET: () => started.open() } }))
    // Two pipelined requests: /health is answered at once, but its answer waits behind /stall's.
    const socket = connect(service.port, '127.0.0.1')
    socket.end('GET /stall HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n')
    await started.opened
    socket.destroy()
    const samples = await waitForCount(service, { http_route: '/health' }, 1)
    const access = await service.waitForLog((l) => l.msg === 'request' && l.path === '/health')
    assert.equal(access.status, 499)
    assert.equal(
      countOf(samples, { http_route: '/health', http_response_status_code: '499', error_type: 'aborted' }),
      1,
    )
  })

  it('show the requests in flight on the public port, by method', async (t) => {
    const arrived = newGate()
    let release = () => {}
    const service = await startMetricsService(
      t,
      {},
      withRoutes({
        '/stall': {
          GET: (_req, res) => {
            release = () => res.writeHead(200).end()
            arrived.open()
          },
        },
      }),
    )
    const active = (samples: Sample[], method: string) =>
      findSamples(samples, 'http_server_active_requests', { http_request_method: method, url_scheme: 'http' })[0]?.value
    assert.equal(
      findSamples(await service.scrape(), 'http_server_active_requests').length,
      0,
      'no series before any request',
    )
    const stalled = fetch(`${service.url}/stall`)
    await arrived.opened
    assert.equal(active(await service.scrape(), 'GET'), 1)
    release()
    await (await stalled).arrayBuffer()
    await waitForCount(service, { http_route: '/stall' }, 1)
    assert.equal(active(await service.scrape(), 'GET'), 0, 'the series stays, at 0')
  })

  it('count the requests the shedding add-on tells of on its channel, by reason', async (t) => {
    const service = await startMetricsService(t)
    assert.equal(findSamples(await service.scrape(), 'http_server_shed_requests_total').length, 0, 'none until one')
    const shed = channel('kickstart.shed')
    shed.publish({ reason: 'event_loop_delay', route: '/items' })
    shed.publish({ reason: 'event_loop_delay', route: '/items' })
    shed.publish({ reason: 'inflight', route: '/items' })
    const samples = findSamples(await service.scrape(), 'http_server_shed_requests_total')
    assert.deepEqual(
      samples.map((s) => [s.labels.reason, s.value]).sort((a, b) => String(a[0]).localeCompare(String(b[0]))),
      [
        ['event_loop_delay', 2],
        ['inflight', 1],
      ],
    )
  })

  it('keep two services in one process apart', async (t) => {
    const one = await startMetricsService(t)
    const two = await startMetricsService(t)
    await get(one, '/health')
    await waitForCount(one, { http_route: '/health' }, 1)
    assert.equal(countOf(await two.scrape(), { http_route: '/health' }), 0)
  })
})

describe('the process and runtime metrics', () => {
  const value = (samples: Sample[], name: string, labels: Record<string, string> = {}) => {
    const [found] = findSamples(samples, name, labels)
    assert.ok(found, `${name} ${JSON.stringify(labels)}`)
    return found.value
  }

  it('report CPU, memory, heap, file descriptors and the start time', async (t) => {
    const service = await startMetricsService(t)
    const samples = await service.scrape()
    const user = value(samples, 'process_cpu_user_seconds_total')
    const system = value(samples, 'process_cpu_system_seconds_total')
    assert.ok(user > 0 && system >= 0)
    assert.ok(Math.abs(value(samples, 'process_cpu_seconds_total') - (user + system)) < 1e-6)
    const rss = value(samples, 'process_resident_memory_bytes')
    const used = value(samples, 'nodejs_heap_size_used_bytes')
    const total = value(samples, 'nodejs_heap_size_total_bytes')
    assert.ok(used > 0 && used <= total && total < value(samples, 'nodejs_heap_size_limit_bytes'))
    assert.ok(rss > used)
    assert.ok(value(samples, 'nodejs_external_memory_bytes') > 0)
    assert.ok(Math.abs(value(samples, 'process_start_time_seconds') - performance.timeOrigin / 1000) < 0.01)
    if (process.platform === 'linux') {
      const open = value(samples, 'process_open_fds')
      assert.ok(open >= 3 && open <= value(samples, 'process_max_fds'))
    }
    const active = value(samples, 'nodejs_eventloop_time_seconds_total', { nodejs_eventloop_state: 'active' })
    const idle = value(samples, 'nodejs_eventloop_time_seconds_total', { nodejs_eventloop_state: 'idle' })
    assert.ok(active > 0 && idle >= 0)
    const later = await service.scrape()
    assert.ok(value(later, 'nodejs_eventloop_time_seconds_total', { nodejs_eventloop_state: 'active' }) >= active)
    assert.ok(value(later, 'process_cpu_seconds_total') >= user + system, 'a counter only grows')
  })

  it('report event-loop delay percentiles since the previous scrape, in order', async (t) => {
    const service = await startMetricsService(t)
    let samples: Sample[] = []
    // The delay is sampled every 10 ms: scrape until a window holds a sample.
    await waitUntil(
      async () => (samples = await service.scrape()).some((s) => s.name === 'nodejs_eventloop_lag_p99_seconds'),
      'an event-loop delay sample',
    )
    const stat = (name: string) => value(samples, `nodejs_eventloop_lag_${name}_seconds`)
    assert.ok(stat('min') >= 0 && stat('min') <= stat('p50'))
    assert.ok(stat('p50') <= stat('p90') && stat('p90') <= stat('p99') && stat('p99') <= stat('max'))
    assert.ok(stat('mean') >= stat('min') && stat('mean') <= stat('max') && stat('stddev') >= 0)
    assert.ok(stat('max') < 5, 'seconds, not nanoseconds')
  })

  it('count garbage collections by kind', async (t) => {
    const service = await startMetricsService(t)
    let samples: Sample[] = []
    await waitUntil(async () => {
      makeGarbage()
      samples = await service.scrape()
      return findSamples(samples, 'nodejs_gc_duration_seconds_count', { kind: 'minor' }).some((s) => s.value > 0)
    }, 'a minor collection')
    const buckets = findSamples(samples, 'nodejs_gc_duration_seconds_bucket', { kind: 'minor' })
    assert.deepEqual(
      buckets.map((b) => b.labels.le),
      ['0.001', '0.01', '0.1', '1', '2', '5', '+Inf'],
    )
    assert.ok(value(samples, 'nodejs_gc_duration_seconds_sum', { kind: 'minor' }) > 0)
  })

  it('report the build as target_info and the Node.js version', async (t) => {
    const service = await startMetricsService(t)
    const samples = await service.scrape()
    const target = findSamples(samples, 'target_info')
    assert.deepEqual(target, [
      {
        name: 'target_info',
        labels: {
          service_name: pkg.name,
          ...(build.version === null ? {} : { service_version: build.version }),
          ...(build.commit === null ? {} : { vcs_ref_head_revision: build.commit }),
        },
        value: 1,
      },
    ])
    const [major, minor, patch] = process.versions.node.split('.')
    assert.deepEqual(findSamples(samples, 'nodejs_version_info')[0]?.labels, {
      version: process.version,
      major,
      minor,
      patch,
    })
  })

  it('stop sampling at shutdown, through a hook logged like any other', async (t) => {
    const service = await startMetricsService(t)
    assert.equal(await service.stop(), 0)
    const hook = service.logs.find((l) => l.msg === 'shutdown hook finished' && l.hook === 'metrics')
    assert.ok(hook, JSON.stringify(service.logs))
  })
})

describe('metrics.openapi.yaml and README.md', () => {
  checkListenerSpec(spec, metrics, { METRICS_ADDR: '127.0.0.1:0' }, 'metrics')

  it("hold the README's variable table to the declaration", () => {
    const readme = readFileSync(new URL('README.md', import.meta.url), 'utf8')
    assert.deepEqual(readmeTable(readme, '## Configuration'), declaredRows(metricsVars))
  })

  it('list in the README every series the listener serves', async (t) => {
    const readme = readFileSync(new URL('README.md', import.meta.url), 'utf8')
    const service = await startMetricsService(t)
    await get(service, '/health')
    let text = ''
    await waitUntil(async () => {
      makeGarbage()
      text = await (await fetch(`${service.metricsUrl}/metrics`)).text()
      return text.includes('nodejs_gc_duration_seconds') && text.includes('nodejs_eventloop_lag_p99_seconds')
    }, 'every family')
    const families = [...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1] ?? '')
    for (const family of families) assert.ok(readme.includes(`\`${family}\``), `README.md names ${family}`)
  })
})
