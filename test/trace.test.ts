import assert from 'node:assert/strict'
import { setTimeout as sleep } from 'node:timers/promises'
import { describe, it, type TestContext } from 'node:test'
import { newRoutes } from '../internal/routes.ts'
import { formatTraceparent, newIdSource, parseTraceparent } from '../internal/trace.ts'
import { startService } from './service.ts'

const traceId = '4bf92f3577b34da6a3ce929d0e0e4736'
const parentId = '00f067aa0ba902b7'
const traceparentPattern = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/

describe('parseTraceparent', () => {
  const valid: [string, string][] = [
    [`00-${traceId}-${parentId}-01`, '01'],
    [`00-${traceId}-${parentId}-00`, '00'],
    [`01-${traceId}-${parentId}-01`, '01'],
    [`01-${traceId}-${parentId}-01-what-the-future-brings`, '01'],
  ]
  for (const [header, flags] of valid) {
    it(`accepts ${header}`, () => assert.deepEqual(parseTraceparent(header), { traceId, parentId, flags }))
  }
  const invalid: [string, string | string[] | undefined][] = [
    ['absent', undefined],
    ['empty', ''],
    ['uppercase hex', `00-${traceId.toUpperCase()}-${parentId}-01`],
    ['version ff', `ff-${traceId}-${parentId}-01`],
    ['a zero trace id', `00-${'0'.repeat(32)}-${parentId}-01`],
    ['a zero parent id', `00-${traceId}-${'0'.repeat(16)}-01`],
    ['a short trace id', `00-${traceId.slice(1)}-${parentId}-01`],
    ['a long parent id', `00-${traceId}-${parentId}0-01`],
    ['one-digit flags', `00-${traceId}-${parentId}-1`],
    ['version 00 with more fields', `00-${traceId}-${parentId}-01-extra`],
    ['non-hex characters', `00-${traceId.slice(0, 31)}g-${parentId}-01`],
    ['spaces around it', ` 00-${traceId}-${parentId}-01`],
    ['two headers joined by Node', `00-${traceId}-${parentId}-01, 00-${traceId}-${parentId}-01`],
    ['an array', [`00-${traceId}-${parentId}-01`]],
  ]
  for (const [name, header] of invalid) {
    it(`rejects ${name}`, () => assert.equal(parseTraceparent(header), undefined))
  }
})

describe('newIdSource', () => {
  it('makes distinct lowercase hex ids of the W3C lengths, across pool refills', () => {
    const ids = newIdSource()
    const traceIds = new Set(Array.from({ length: 1000 }, () => ids.traceId()))
    const spanIds = new Set(Array.from({ length: 1000 }, () => ids.spanId()))
    assert.equal(traceIds.size, 1000)
    assert.equal(spanIds.size, 1000)
    for (const id of traceIds) assert.match(id, /^[0-9a-f]{32}$/)
    for (const id of spanIds) assert.match(id, /^[0-9a-f]{16}$/)
  })
})

describe('trace context over HTTP', () => {
  // The service with a route that answers what a handler sends downstream, as a call to another service.
  const start = (t: TestContext) =>
    startService(
      t,
      {},
      {
        routes: async (deps) => ({
          ...(await newRoutes(deps)),
          '/downstream': { GET: (_req, res) => void res.end(formatTraceparent(res.trace)) },
        }),
      },
    )

  it('continues a valid trace: same trace id and flags downstream, a new span id, on the access line too', async (t) => {
    const service = await start(t)
    const res = await fetch(`${service.url}/downstream`, {
      headers: { traceparent: `00-${traceId}-${parentId}-01`, 'x-request-id': 'traced' },
    })
    const [, sentTrace, spanId, flags] = traceparentPattern.exec(await res.text()) ?? []
    assert.equal(sentTrace, traceId)
    assert.equal(flags, '01')
    assert.notEqual(spanId, parentId)
    const line = await service.waitForLog((l) => l.msg === 'request' && l.requestId === 'traced')
    assert.equal(line.traceId, traceId)
    assert.equal(line.spanId, spanId)
  })

  for (const [name, headers] of [
    ['absent', {}],
    ['invalid', { traceparent: `00-${traceId.toUpperCase()}-${parentId}-01` }],
  ] as const) {
    it(`starts a new trace when traceparent is ${name}`, async (t) => {
      const service = await start(t)
      const seen = new Set<string>()
      for (let i = 0; i < 3; i++) {
        const res = await fetch(`${service.url}/downstream`, { headers })
        const [, newTrace, spanId, flags] = traceparentPattern.exec(await res.text()) ?? []
        assert.notEqual(newTrace, traceId)
        assert.notEqual(newTrace, '0'.repeat(32))
        assert.equal(flags, '00')
        assert.equal(spanId, res.headers.get('x-request-id'), 'a generated request id is the span id')
        seen.add(newTrace ?? '')
      }
      assert.equal(seen.size, 3, 'every request starts its own trace')
    })
  }

  it("puts the request's ids on a handler's own log lines, however deep and however late", async (t) => {
    async function deepInTheCallStack(log: { info(obj: object, msg: string): void }) {
      await sleep(5) // across timers and promises, not only synchronous calls
      log.info({ step: 2 }, 'deep in the call stack')
    }
    const service = await startService(
      t,
      {},
      {
        routes: async (deps) => ({
          ...(await newRoutes(deps)),
          '/work': {
            GET: async (_req, res) => {
              deps.log.info({ step: 1 }, 'handler started')
              await deepInTheCallStack(deps.log)
              res.end('done')
            },
          },
        }),
      },
    )
    const [first, second] = await Promise.all(
      ['a', 'b'].map(async (name) => {
        const res = await fetch(`${service.url}/work`, {
          headers: { 'x-request-id': `work-${name}`, traceparent: `00-${traceId}-${parentId}-01` },
        })
        await res.text()
        const line = await service.waitForLog((l) => l.msg === 'request' && l.requestId === `work-${name}`)
        return line.spanId
      }),
    )
    for (const [name, spanId] of [
      ['a', first],
      ['b', second],
    ] as const) {
      const lines = service.logs.filter((l) => l.requestId === `work-${name}` && l.msg !== 'request')
      assert.deepEqual(
        lines.map((l) => l.msg),
        ['handler started', 'deep in the call stack'],
      )
      for (const line of lines) {
        assert.equal(line.traceId, traceId)
        assert.equal(line.spanId, spanId)
      }
    }
    assert.notEqual(first, second)
    const listening = service.logs.find((l) => l.msg === 'listening')
    assert.equal(listening?.requestId, undefined, 'lines outside a request carry no request ids')
  })
})
