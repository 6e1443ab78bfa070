// The load-shedding add-on over real sockets: the in-flight cap, the event-loop delay limit, the
// probes it never sheds, the answer it sheds with, and its variables and README table.
import assert from 'node:assert/strict'
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { type IncomingMessage, request } from 'node:http'
import { describe, it } from 'node:test'
import type { AddOn } from '../addon.ts'
import { parseConfig } from '../config.ts'
import type { TrackedResponse } from '../response.ts'
import type { Routes } from '../router.ts'
import {
  assertProblem,
  declaredRows,
  type LogLine,
  readmeTable,
  type Service,
  startService,
  withRoutes,
} from '../../test/service.ts'
import { addOn as shedding, sheddingVars } from './shedding.ts'

/** Stalls holds requests to /stall open until release() answers them all. */
interface Stalls {
  routes: ReturnType<typeof withRoutes>
  /** arrived resolves once n requests are being held. */
  arrived(n: number): Promise<void>
  release(): void
}

function newStalls(): Stalls {
  const held: TrackedResponse[] = []
  const waiters: (() => void)[] = []
  return {
    routes: withRoutes({
      '/stall': {
        GET: (_req, res) => {
          held.push(res)
          for (const wake of waiters.splice(0)) wake()
        },
      },
    }),
    async arrived(n) {
      while (held.length < n) await new Promise<void>((resolve) => waiters.push(resolve))
    },
    release() {
      for (const res of held.splice(0)) res.end('done')
    },
  }
}

/** hold sends GET /stall on a connection of its own; it resolves with the status once answered. */
function hold(service: Service): Promise<number> {
  const req = request(`${service.url}/stall`, { agent: false })
  req.end()
  return once(req, 'response').then(async ([res]: IncomingMessage[]) => {
    res?.resume()
    if (res !== undefined) await once(res, 'end')
    return res?.statusCode ?? 0
  })
}

/**
 * hogLoop keeps the event loop (the test's and the service's: one process) busy for busyMs at a
 * time, as a CPU-bound overload would, until the returned function is called.
 */
function hogLoop(busyMs: number): () => void {
  const timer = setInterval(() => {
    const until = performance.now() + busyMs
    while (performance.now() < until) {
      // busy on purpose
    }
  }, 1)
  return () => clearInterval(timer)
}

/** pollUntil GETs url until it answers status, and returns that response; it fails after 10 s. */
async function pollUntil(url: string, status: number): Promise<Response> {
  const deadline = performance.now() + 10_000
  for (;;) {
    const res = await fetch(url)
    if (res.status === status) return res
    await res.arrayBuffer()
    assert.ok(performance.now() < deadline, `${url} did not answer ${status} within 10 s`)
  }
}

async function assertProbesAnswer(service: Service): Promise<void> {
  for (const path of ['/health', '/ready']) {
    const res = await fetch(`${service.url}${path}`)
    assert.equal(res.status, 200, path)
    await res.arrayBuffer()
  }
}

const isShedLine = (line: LogLine) => line.msg === 'requests shed'

describe('load shedding', () => {
  it('is off by default: nothing is shed, however many requests wait or however late the loop runs', async (t) => {
    const stalls = newStalls()
    const service = await startService(t, {}, { addOns: [shedding], routes: stalls.routes })
    assert.ok(!service.logs.some((l) => l.msg === 'load shedding on'))
    const held = Array.from({ length: 5 }, () => hold(service))
    await stalls.arrived(5)
    const stopHog = hogLoop(30)
    try {
      for (let i = 0; i < 5; i++) {
        const res = await fetch(`${service.url}/openapi.yaml`)
        assert.equal(res.status, 200)
        await res.arrayBuffer()
      }
    } finally {
      stopHog()
    }
    stalls.release()
    assert.deepEqual(await Promise.all(held), [200, 200, 200, 200, 200])
    assert.ok(!service.logs.some(isShedLine))
  })

  it('sheds past SHED_MAX_INFLIGHT with 503 and Retry-After, counted in a summary line, never the probes, and admits again', async (t) => {
    const stalls = newStalls()
    const env = { SHED_MAX_INFLIGHT: '2', SHED_RETRY_AFTER: '5s' }
    const service = await startService(t, env, { addOns: [shedding], routes: stalls.routes })
    const on = service.logs.find((l) => l.msg === 'load shedding on')
    assert.deepEqual(
      { maxInflight: on?.maxInflight, maxEventLoopDelayMs: on?.maxEventLoopDelayMs, retryAfter: on?.retryAfterSeconds },
      { maxInflight: 2, maxEventLoopDelayMs: null, retryAfter: 5 },
    )
    const told: unknown[] = []
    const onShed = (message: unknown) => told.push(message)
    subscribe('kickstart.shed', onShed)
    t.after(() => void unsubscribe('kickstart.shed', onShed))
    const held = [hold(service), hold(service)]
    await stalls.arrived(2)

    for (const path of ['/stall', '/openapi.yaml']) {
      const res = await fetch(`${service.url}${path}`, { headers: { 'x-request-id': `shed-${path.length}` } })
      assert.equal(res.headers.get('retry-after'), '5')
      await assertProblem(res, 503, /^The service is overloaded; try again in 5 seconds\.$/)
    }
    await assertProbesAnswer(service)

    const summary = await service.waitForLog(isShedLine)
    assert.equal(summary.level, 'info', 'shedding under overload is what it is for: expected, not an error')
    assert.equal(summary.shed, 2)
    assert.deepEqual(summary.reasons, { inflight: 2, event_loop_delay: 0 })
    assert.equal(summary.inflight, 3)
    assert.equal(summary.maxInflight, 2)
    const access = service.logs.filter((l) => l.msg === 'request' && String(l.requestId).startsWith('shed-'))
    assert.deepEqual(access, [], 'the summary counts the shed requests, the access log leaves them out')
    assert.deepEqual(
      told,
      [
        { reason: 'inflight', route: '/stall' },
        { reason: 'inflight', route: '/openapi.yaml' },
      ],
      'each shed request is told on the channel the metrics add-on counts',
    )

    stalls.release()
    assert.deepEqual(await Promise.all(held), [200, 200])
    await (await pollUntil(`${service.url}/openapi.yaml`, 200)).arrayBuffer()
  })

  it('sheds while the event loop runs later than SHED_MAX_EVENT_LOOP_DELAY, never the probes, and recovers', async (t) => {
    const service = await startService(t, { SHED_MAX_EVENT_LOOP_DELAY: '20ms' }, { addOns: [shedding] })
    const stopHog = hogLoop(40)
    let shed: Response
    try {
      shed = await pollUntil(`${service.url}/openapi.yaml`, 503)
      await assertProbesAnswer(service)
    } finally {
      stopHog()
    }
    assert.equal(shed.headers.get('retry-after'), '1')
    await assertProblem(shed, 503, /^The service is overloaded; try again in 1 second\.$/)
    const summary = await service.waitForLog(isShedLine)
    assert.ok((summary.reasons as { event_loop_delay: number }).event_loop_delay >= 1)
    assert.equal(summary.maxEventLoopDelayMs, 20)
    assert.ok((summary.eventLoopDelayMs as number) > 20, String(summary.eventLoopDelayMs))
    await (await pollUntil(`${service.url}/openapi.yaml`, 200)).arrayBuffer()
  })

  it("leaves add-ons' own listeners alone: the hooks apply to the public port only", async (t) => {
    const stalls = newStalls()
    // An add-on with a listener of its own, as the debug and metrics add-ons have.
    const side: AddOn = {
      name: 'side',
      vars: {},
      start: async (ctx) => {
        const routes: Routes = { '/side': { GET: (_req, res) => void res.end('ok') } }
        await ctx.serve('side', { host: '127.0.0.1', port: 0 }, routes, 'SIDE_ADDR')
      },
    }
    const service = await startService(
      t,
      { SHED_MAX_INFLIGHT: '1' },
      { addOns: [side, shedding], routes: stalls.routes },
    )
    const sidePort = service.logs.find((l) => l.msg === 'side listening')?.port as number
    const held = hold(service)
    await stalls.arrived(1)
    await assertProblem(await fetch(`${service.url}/openapi.yaml`), 503)
    const res = await fetch(`http://127.0.0.1:${sidePort}/side`)
    assert.equal(res.status, 200)
    assert.equal(await res.text(), 'ok')
    stalls.release()
    assert.equal(await held, 200)
  })
})

describe('load-shedding variables', () => {
  it('parse limits, durations and whole seconds, and refuse the rest', () => {
    const parse = (env: Record<string, string>) => parseConfig(env, sheddingVars)
    assert.deepEqual(parse({}), {
      config: { maxInflight: null, maxEventLoopDelayMs: null, retryAfterSeconds: 1 },
      problems: [],
    })
    assert.deepEqual(
      parse({ SHED_MAX_INFLIGHT: '250', SHED_MAX_EVENT_LOOP_DELAY: '1.5s', SHED_RETRY_AFTER: '1m' }).config,
      { maxInflight: 250, maxEventLoopDelayMs: 1500, retryAfterSeconds: 60 },
    )
    const cases: [Record<string, string>, string][] = [
      [{ SHED_MAX_INFLIGHT: '0' }, 'Expected `SHED_MAX_INFLIGHT` to be an integer from 1 to 9999999, got `0`'],
      [{ SHED_MAX_INFLIGHT: '-1' }, 'Expected `SHED_MAX_INFLIGHT` to be an integer from 1 to 9999999, got `-1`'],
      [{ SHED_MAX_INFLIGHT: '1e3' }, 'Expected `SHED_MAX_INFLIGHT` to be an integer from 1 to 9999999, got `1e3`'],
      [
        { SHED_MAX_EVENT_LOOP_DELAY: '50' },
        'Expected `SHED_MAX_EVENT_LOOP_DELAY` to be a duration above zero with a unit, like 500ms, 10s or 1m, got `50`',
      ],
      [
        { SHED_MAX_EVENT_LOOP_DELAY: '0ms' },
        'Expected `SHED_MAX_EVENT_LOOP_DELAY` to be a duration above zero with a unit, like 500ms, 10s or 1m, got `0ms`',
      ],
      [
        { SHED_RETRY_AFTER: '500ms' },
        'Expected `SHED_RETRY_AFTER` to be a whole number of seconds, like 1s, 5s or 1m, got `500ms`',
      ],
      [
        { SHED_RETRY_AFTER: '1.5s' },
        'Expected `SHED_RETRY_AFTER` to be a whole number of seconds, like 1s, 5s or 1m, got `1.5s`',
      ],
      [
        { SHED_RETRY_AFTER: '0s' },
        'Expected `SHED_RETRY_AFTER` to be a whole number of seconds, like 1s, 5s or 1m, got `0s`',
      ],
    ]
    for (const [env, problem] of cases) assert.deepEqual(parse(env).problems, [problem], JSON.stringify(env))
  })

  it("hold the README's variable table to the declaration", () => {
    const readme = readFileSync(new URL('README.md', import.meta.url), 'utf8')
    assert.deepEqual(readmeTable(readme, '## Configuration'), declaredRows(sheddingVars))
  })
})
