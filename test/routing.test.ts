// Routes keyed by OpenAPI path templates: parameters typed and percent-decoded, static segments
// first, exact paths, 404 and 405, and the matched template on the access line.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { type Handler, newRouter, routes } from '../internal/router.ts'
import { exchange } from './raw.ts'
import { assertProblem, startService, withRoutes } from './service.ts'

const noop: Handler = () => {}

describe('newRouter', () => {
  const route = newRouter({
    '/items': { GET: noop, POST: noop },
    '/items/{id}': { GET: noop, DELETE: noop },
    '/items/special': { GET: noop },
    '/items/{id}/parts/{part}': { PUT: noop },
    '/users/{id}/items': { GET: noop },
    '/users/me/settings': { GET: noop },
  })
  const cases: [string, string | undefined, Record<string, string>?][] = [
    ['/items', '/items', {}],
    ['/items/42', '/items/{id}', { id: '42' }],
    ['/items/special', '/items/special', {}],
    ['/items/a%20b%2Fc', '/items/{id}', { id: 'a b/c' }],
    ['/items/%E2%82%AC', '/items/{id}', { id: '€' }],
    ['/items/7/parts/x', '/items/{id}/parts/{part}', { id: '7', part: 'x' }],
    ['/users/me/items', '/users/{id}/items', { id: 'me' }], // the static 'me' leads nowhere: the parameter takes it
    ['/users/me/settings', '/users/me/settings', {}],
    ['/items/', undefined],
    ['/items/42/', undefined],
    ['/items//parts/x', undefined],
    ['/ITEMS', undefined],
    ['/items/42/parts', undefined],
    ['/nothing', undefined],
  ]
  for (const [path, template, params] of cases) {
    it(`matches ${path} to ${template ?? 'nothing'}`, () => {
      const match = route(path)
      if (template === undefined) return assert.equal(match, undefined)
      assert.ok(match !== undefined && match !== 'malformed')
      assert.equal(match.route.template, template)
      assert.deepEqual({ ...match.params }, params)
    })
  }

  it('says malformed for a parameter whose percent-encoding is not UTF-8', () => {
    assert.equal(route('/items/%zz'), 'malformed')
    assert.equal(route('/items/%E2%82'), 'malformed')
  })

  it('answers HEAD wherever GET is, and lists Allow in the order of the table', () => {
    const match = route('/items/1')
    assert.ok(match !== undefined && match !== 'malformed')
    assert.equal(match.route.allow, 'GET, DELETE, HEAD')
  })

  it('refuses templates that are not OpenAPI path templates', () => {
    assert.throws(() => newRouter({ '/items/id-{id}': { GET: noop } }), /not an OpenAPI path template/)
    assert.throws(
      () => newRouter({ '/a/{id}': { GET: noop }, '/a/{key}': { GET: noop } }),
      /the same paths as \/a\/\{id\}/,
    )
    assert.throws(() => newRouter({ '/a/"quoted"': { GET: noop } }), /not an OpenAPI path template/)
  })

  it('types each handler by its template', () => {
    routes({
      '/items/{id}/parts/{part}': {
        GET: (_req, _res, { id, part }) => void [id.length, part.length],
      },
      // @ts-expect-error: /items has no parameter named id
      '/items': { GET: (_req, _res, { id }) => void id },
    })
  })
})

describe('routing over HTTP', () => {
  it('hands the handler its decoded parameters and logs the route template', async (t) => {
    const service = await startService(
      t,
      {},
      {
        routes: withRoutes(
          routes({
            '/echo/{first}/and/{second}': {
              GET: (_req, res, params) =>
                void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(params)),
            },
          }),
        ),
      },
    )
    const res = await fetch(`${service.url}/echo/a%2Fb/and/%C3%A9?x=1`, { headers: { 'x-request-id': 'echo' } })
    assert.deepEqual(await res.json(), { first: 'a/b', second: 'é' })
    const line = await service.waitForLog((l) => l.msg === 'request' && l.requestId === 'echo')
    assert.equal(line.route, '/echo/{first}/and/{second}')
    assert.equal(line.path, '/echo/a%2Fb/and/%C3%A9')
  })

  it('answers 400 for a malformed percent-encoding, 405 with Allow on a parameterised path', async (t) => {
    const service = await startService(t, {}, { routes: withRoutes({ '/things/{id}': { DELETE: noop } }) })
    await assertProblem(await fetch(`${service.url}/things/%E2%82`, { method: 'DELETE' }), 400, /percent-encoding/)
    const res = await fetch(`${service.url}/things/1`)
    assert.equal(res.headers.get('allow'), 'DELETE')
    await assertProblem(res, 405)
  })

  it('answers 400 to a request with two Host headers, and keeps serving', async (t) => {
    const service = await startService(t)
    const twice = await exchange(service.port, ['GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n'])
    assert.deepEqual(twice.statuses, [400])
    assert.match(twice.text, /more than one Host header/)
    assert.equal((await fetch(`${service.url}/health`)).status, 200)
  })
})
