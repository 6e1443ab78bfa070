import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { describe, it } from 'node:test'
import { buildDir, readBuild } from '../internal/build-info.ts'
import { formatUptime } from '../internal/health.ts'
import type { Routes } from '../internal/router.ts'
import { newRoutes } from '../internal/routes.ts'
import { assertProblem, pkg, startService, withRoutes } from './service.ts'

const { build } = readBuild(buildDir)
const spanId = /^[0-9a-f]{16}$/

function assertCommonHeaders(res: Response) {
  assert.equal(res.headers.get('x-content-type-options'), 'nosniff')
  assert.match(res.headers.get('x-request-id') ?? '', spanId)
  assert.equal(res.headers.get('traceparent'), null, 'trace context goes downstream and into the logs, not back')
  assert.equal(res.headers.get('server'), null)
  assert.equal(res.headers.get('x-powered-by'), null)
}

describe('GET /health', () => {
  it('reports status, name, version, uptime, start time and build provenance', async (t) => {
    const before = Date.now()
    const service = await startService(t)
    const res = await fetch(`${service.url}/health`)
    assert.equal(res.status, 200)
    assertCommonHeaders(res)
    assert.equal(res.headers.get('content-type'), 'application/json')
    assert.equal(res.headers.get('cache-control'), 'no-store')
    const body = (await res.json()) as Record<string, unknown>
    assert.equal(body.status, 'ok')
    assert.equal(body.service, pkg.name)
    assert.equal(body.version, pkg.version)
    assert.deepEqual(body.build, { commit: build.commit, commitTime: build.commitTime, dirty: build.dirty })
    const startedAt = Date.parse(body.startedAt as string)
    assert.ok(startedAt >= before - 1000 && startedAt <= Date.now(), `startedAt ${String(body.startedAt)}`)
    assert.equal(typeof body.uptimeSeconds, 'number')
    assert.ok((body.uptimeSeconds as number) >= 0 && (body.uptimeSeconds as number) < 60)
    assert.ok(Number.isInteger(body.uptimeSeconds))
    assert.equal(body.uptime, formatUptime(body.uptimeSeconds as number))
  })

  it('uptime grows between requests while the rest stays the same', async (t) => {
    const service = await startService(t)
    const first = (await (await fetch(`${service.url}/health`)).json()) as Record<string, unknown>
    let second = first
    // Poll, not sleep: ask until the clock has moved on to the next second.
    while (second.uptimeSeconds === first.uptimeSeconds) {
      second = (await (await fetch(`${service.url}/health`)).json()) as Record<string, unknown>
    }
    assert.ok((second.uptimeSeconds as number) > (first.uptimeSeconds as number))
    assert.deepEqual({ ...second, uptime: 0, uptimeSeconds: 0 }, { ...first, uptime: 0, uptimeSeconds: 0 })
  })

  it('answers HEAD with the same headers and no body', async (t) => {
    const service = await startService(t)
    const get = await fetch(`${service.url}/health`)
    const head = await fetch(`${service.url}/health`, { method: 'HEAD' })
    assert.equal(head.status, 200)
    assert.equal(await head.text(), '')
    for (const name of ['content-type', 'cache-control', 'x-content-type-options']) {
      assert.equal(head.headers.get(name), get.headers.get(name), name)
    }
    assert.ok(Number(head.headers.get('content-length')) > 0)
  })
})

describe('GET /ready', () => {
  it('is 200 while serving', async (t) => {
    const service = await startService(t)
    const res = await fetch(`${service.url}/ready`)
    assert.equal(res.status, 200)
    assertCommonHeaders(res)
    assert.equal(res.headers.get('cache-control'), 'no-store')
    assert.deepEqual(await res.json(), { status: 'ready' })
  })

  it('turns 503 as soon as shutdown begins, while /health stays 200', async (t) => {
    const service = await startService(t, { SHUTDOWN_DELAY: '1m' })
    service.events.emit('SIGTERM', 'SIGTERM')
    await service.waitForLog((line) => line.msg === 'shutdown started')
    const ready = await fetch(`${service.url}/ready`)
    await assertProblem(ready, 503)
    assert.equal(ready.headers.get('cache-control'), 'no-store')
    assert.equal(ready.headers.get('connection'), 'close')
    const health = await fetch(`${service.url}/health`)
    assert.equal(health.status, 200)
    await health.body?.cancel()
    service.events.emit('SIGINT', 'SIGINT') // a second signal ends the delay at once
    assert.equal(await service.exited, 130)
  })
})

describe('GET /openapi.yaml', () => {
  it('serves the spec byte for byte as application/yaml', async (t) => {
    const service = await startService(t)
    const res = await fetch(`${service.url}/openapi.yaml`)
    assert.equal(res.status, 200)
    assertCommonHeaders(res)
    assert.equal(res.headers.get('content-type'), 'application/yaml')
    const served = Buffer.from(await res.arrayBuffer())
    assert.ok(served.equals(readFileSync(new URL('openapi.yaml', buildDir))))
  })
})

describe('routing', () => {
  it('answers 404 problem+json for an unknown path', async (t) => {
    const service = await startService(t)
    for (const path of ['/', '/nope', '/health/', '/HEALTH', '/health/x', '//health']) {
      const res = await fetch(`${service.url}${path}`)
      assertCommonHeaders(res)
      await assertProblem(res, 404)
    }
  })

  it('answers 405 with Allow for a known path and another method, whatever the route table holds', async (t) => {
    let routes: Routes = {}
    const service = await startService(t, {}, { routes: async (deps) => (routes = await newRoutes(deps)) })
    assert.ok(Object.keys(routes).length >= 3)
    for (const [template, handlers] of Object.entries(routes)) {
      if (template.includes('{')) continue // parameterised routes: test/routing.test.ts
      const served = Object.keys(handlers)
      if (served.includes('GET')) served.push('HEAD')
      for (const method of ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'].filter((m) => !served.includes(m))) {
        const res = await fetch(`${service.url}${template}`, { method })
        assertCommonHeaders(res)
        assert.equal(res.headers.get('allow'), served.join(', '), `${method} ${template}`)
        await assertProblem(res, 405)
      }
    }
  })

  it('ignores the query string', async (t) => {
    const service = await startService(t)
    const res = await fetch(`${service.url}/ready?verbose=1&x=%zz`)
    assert.equal(res.status, 200)
    assert.deepEqual(await res.json(), { status: 'ready' })
  })

  it('turns a handler throw or rejection into a 500 without internals, and keeps serving', async (t) => {
    const service = await startService(
      t,
      {},
      {
        routes: withRoutes({
          '/throw': {
            GET: () => {
              throw new Error('secret internal detail')
            },
          },
          '/reject': { GET: async () => Promise.reject(new Error('secret internal detail')) },
        }),
      },
    )
    for (const path of ['/throw', '/reject']) {
      const res = await fetch(`${service.url}${path}`, { headers: { 'x-request-id': `req-${path.slice(1)}` } })
      const body = await assertProblem(res, 500)
      assert.doesNotMatch(JSON.stringify(body), /secret/)
      assert.equal(res.headers.get('x-request-id'), `req-${path.slice(1)}`)
      const logged = service.logs.filter((l) => l.msg === 'handler failed' && l.requestId === `req-${path.slice(1)}`)
      assert.equal(logged.length, 1, `one error line for ${path}`)
      assert.equal(logged[0]?.level, 'error')
      assert.match(String((logged[0]?.err as { stack?: string } | undefined)?.stack), /secret internal detail\n\s+at /)
    }
    assert.equal((await fetch(`${service.url}/health`)).status, 200)
  })
})

describe('common headers', () => {
  it('reach every response, however the handler writes its headers', async (t) => {
    const service = await startService(
      t,
      {},
      {
        routes: withRoutes({
          '/object': { GET: (_req, res) => void res.writeHead(201, { 'content-type': 'text/plain' }).end('a') },
          '/reason': { GET: (_req, res) => void res.writeHead(202, 'Fine', { 'content-type': 'text/plain' }).end('b') },
          '/array': { GET: (_req, res) => void res.writeHead(203, ['content-type', 'text/plain']).end('c') },
          '/implicit': {
            GET: (_req, res) => {
              res.setHeader('content-type', 'text/plain')
              res.end('d')
            },
          },
          '/mixed': {
            GET: (_req, res) => {
              res.setHeader('x-extra', '1')
              res.writeHead(200, { 'content-type': 'text/plain' }).end('e')
            },
          },
          '/stream': {
            GET: (_req, res) => {
              res.write('f')
              res.end()
            },
          },
        }),
      },
    )
    for (const [path, status, body] of [
      ['/object', 201, 'a'],
      ['/reason', 202, 'b'],
      ['/array', 203, 'c'],
      ['/implicit', 200, 'd'],
      ['/mixed', 200, 'e'],
      ['/stream', 200, 'f'],
    ] as const) {
      const res = await fetch(`${service.url}${path}`)
      assert.equal(res.status, status, path)
      assert.equal(await res.text(), body)
      assertCommonHeaders(res)
      if (path !== '/stream') assert.equal(res.headers.get('content-type'), 'text/plain', path)
      if (path === '/mixed') assert.equal(res.headers.get('x-extra'), '1')
    }
  })
})

describe('request id', () => {
  it('echoes a sane X-Request-Id and generates one otherwise', async (t) => {
    const service = await startService(t)
    const cases: [string | undefined, boolean][] = [
      ['abc-123_x.y:z', true],
      ['a'.repeat(128), true],
      ['a'.repeat(129), false],
      ['has space', false],
      ['semi;colon', false],
      ['', false],
      [undefined, false],
    ]
    for (const [sent, echoed] of cases) {
      const res = await fetch(`${service.url}/ready`, { headers: sent === undefined ? {} : { 'x-request-id': sent } })
      await res.body?.cancel()
      const id = res.headers.get('x-request-id') ?? ''
      if (echoed) assert.equal(id, sent)
      else assert.match(id, spanId, `generated for ${JSON.stringify(sent)}`)
      const line = await service.waitForLog((l) => l.msg === 'request' && l.requestId === id)
      assert.equal(line.path, '/ready')
    }
  })
})
