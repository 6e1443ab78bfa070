// The spec cannot drift from the code: every route is documented, every documented operation is
// served, and every real response validates against the documented schema and headers.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { describe, it } from 'node:test'
import { registerSchema, validate } from '@hyperjump/json-schema/openapi-3-1'
import type { OpenAPIV3_1 } from 'openapi-types'
import { parse } from 'yaml'
import { newDebugRoutes } from '../internal/debug.ts'
import { newRoutes, type Routes } from '../internal/routes.ts'
import { type Service, startService } from './service.ts'

const dist = new URL('../dist/', import.meta.url)
const spec = parse(readFileSync(new URL('openapi.yaml', dist), 'utf8')) as OpenAPIV3_1.Document
const pkg = JSON.parse(readFileSync(new URL('../package.json', dist), 'utf8')) as { version: string }
const specId = 'https://kickstart.test/openapi.json'
registerSchema(spec as never, specId, 'https://spec.openapis.org/oas/3.1/schema-base')

const methods = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'] as const

/**
 * operations lists the documented operations as 'GET /path': those of the public port, or with
 * listener 'debug' those tagged debug, which only the debug listener serves.
 */
function operations(listener: 'public' | 'debug' = 'public'): string[] {
  return Object.entries(spec.paths ?? {}).flatMap(([path, item]) =>
    methods
      .filter((m) => item?.[m] !== undefined && (item[m]?.tags ?? []).includes('debug') === (listener === 'debug'))
      .map((m) => `${m.toUpperCase()} ${path}`),
  )
}

// A profile runs for 10 seconds unless asked otherwise; the tests take 1-second ones.
const queries: Record<string, string> = { 'GET /debug/pprof/profile': '?seconds=1' }

/** baseUrl is where service serves operation: the debug listener for the debug routes. */
function baseUrl(service: Service, operation: string): string {
  return operations('debug').includes(operation) ? service.debugUrl : service.url
}

/** resolve follows local $refs, a $ref to a $ref included, and returns the object with its JSON pointer. */
function resolve<T>(value: T | OpenAPIV3_1.ReferenceObject, pointer: string): { value: T; pointer: string } {
  if (value && typeof value === 'object' && '$ref' in value) {
    const ref = value.$ref.slice(1)
    const target = ref
      .split('/')
      .slice(1)
      .reduce<unknown>(
        (node, key) => (node as Record<string, unknown>)[key.replaceAll('~1', '/').replaceAll('~0', '~')],
        spec,
      )
    return resolve(target as T | OpenAPIV3_1.ReferenceObject, ref)
  }
  return { value: value as T, pointer }
}

const escape = (key: string) => key.replaceAll('~', '~0').replaceAll('/', '~1')

/** assertMatchesResponse checks status, content type, body schema and documented headers. */
async function assertMatchesResponse(
  res: Response,
  documented: OpenAPIV3_1.ResponseObject | OpenAPIV3_1.ReferenceObject,
  pointer: string,
) {
  const { value: response, pointer: at } = resolve(documented, pointer)
  const contentType = res.headers.get('content-type') ?? ''
  const media = response.content?.[contentType]
  assert.ok(media?.schema, `${at} documents content type ${contentType}`)
  const text = await res.text()
  const body: unknown = contentType.endsWith('json') ? JSON.parse(text) : text
  const output = await validate(`${specId}#${at}/content/${escape(contentType)}/schema`, body as never)
  assert.ok(output.valid, `${at}: ${text} does not match its schema`)
  for (const [name, header] of Object.entries(response.headers ?? {})) {
    const { value, pointer: headerAt } = resolve(header, `${at}/headers/${escape(name)}`)
    const sent = res.headers.get(name)
    if (value.required) assert.notEqual(sent, null, `${at}: header ${name} is required`)
    if (sent !== null && value.schema) {
      assert.ok((await validate(`${specId}#${headerAt}/schema`, sent)).valid, `${at}: header ${name}: ${sent}`)
    }
  }
}

describe('openapi.yaml', () => {
  it('is a valid OpenAPI 3.1 document', async () => {
    assert.equal(spec.openapi, '3.1.0')
    const output = await validate('https://spec.openapis.org/oas/3.1/schema-base', spec as never)
    assert.ok(output.valid)
  })

  it('rejects an invalid document, so the check above can fail', async () => {
    const broken = structuredClone(spec)
    broken.paths = { '/x': { get: { responses: { '200': { descriptio: 'typo' } } } } } as never
    assert.equal((await validate('https://spec.openapis.org/oas/3.1/schema-base', broken as never)).valid, false)
  })

  it('has the version of package.json', () => {
    assert.equal(spec.info.version, pkg.version)
  })

  it('documents exactly the routes the service serves, the debug ones tagged debug', async (t) => {
    let routes: Routes = {}
    let debugRoutes: Routes = {}
    await startService(
      t,
      { DEBUG_ADDR: '127.0.0.1:0' },
      (deps) => (routes = newRoutes(deps)),
      (deps) => (debugRoutes = newDebugRoutes(deps)),
    )
    const list = (table: Routes) =>
      Object.entries(table).flatMap(([path, handlers]) => Object.keys(handlers).map((m) => `${m} ${path}`))
    assert.deepEqual(list(routes).sort(), operations().sort())
    assert.deepEqual(list(debugRoutes).sort(), operations('debug').sort())
    assert.ok(operations('debug').length >= 3)
  })

  it('describes every real response of every operation', async (t) => {
    const service = await startService(t, { DEBUG_ADDR: '127.0.0.1:0' })
    for (const operation of [...operations(), ...operations('debug')]) {
      const [method = '', path = ''] = operation.split(' ')
      const documented = spec.paths?.[path]?.[method.toLowerCase() as (typeof methods)[number]]
      const res = await fetch(`${baseUrl(service, operation)}${path}${queries[operation] ?? ''}`, { method })
      const status = String(res.status)
      const response = documented?.responses?.[status]
      assert.ok(response, `${operation} answered ${status}, which is not documented`)
      await assertMatchesResponse(res, response, `/paths/${escape(path)}/${method.toLowerCase()}/responses/${status}`)
    }
  })

  it('describes /ready while shutting down', async (t) => {
    const service = await startService(t, { SHUTDOWN_DELAY: '1m' })
    service.events.emit('SIGTERM', 'SIGTERM')
    await service.waitForLog((l) => l.msg === 'shutdown started')
    const res = await fetch(`${service.url}/ready`)
    assert.equal(res.status, 503)
    const documented = spec.paths?.['/ready']?.get?.responses?.['503'] as OpenAPIV3_1.ResponseObject
    await assertMatchesResponse(res, documented, '/paths/~1ready/get/responses/503')
    service.events.emit('SIGTERM', 'SIGTERM')
    assert.equal(await service.exited, 143)
  })

  it('describes the 404 and 405 answers', async (t) => {
    const service = await startService(t)
    const notFound = await fetch(`${service.url}/no-such-path`)
    assert.equal(notFound.status, 404)
    await assertMatchesResponse(notFound, { $ref: '#/components/responses/NotFound' }, '')
    const notAllowed = await fetch(`${service.url}/health`, { method: 'POST' })
    assert.equal(notAllowed.status, 405)
    await assertMatchesResponse(notAllowed, { $ref: '#/components/responses/MethodNotAllowed' }, '')
  })

  it("describes the debug listener's other answers: sampling profile, 400, 409, 404, 405", async (t) => {
    const service = await startService(t, { DEBUG_ADDR: '127.0.0.1:0' })
    const heap = '/paths/~1debug~1pprof~1heap/get/responses'
    const profile = '/paths/~1debug~1pprof~1profile/get/responses'
    const sampling = await fetch(`${service.debugUrl}/debug/pprof/heap?sampling=1&seconds=1`)
    assert.equal(sampling.status, 200)
    await assertMatchesResponse(sampling, { $ref: `#${heap}/200` }, '')

    const badSeconds = await fetch(`${service.debugUrl}/debug/pprof/profile?seconds=61`)
    assert.equal(badSeconds.status, 400)
    await assertMatchesResponse(badSeconds, { $ref: `#${profile}/400` }, '')
    const badSampling = await fetch(`${service.debugUrl}/debug/pprof/heap?sampling=2`)
    assert.equal(badSampling.status, 400)
    await assertMatchesResponse(badSampling, { $ref: `#${heap}/400` }, '')

    const client = new AbortController()
    const running = fetch(`${service.debugUrl}/debug/pprof/profile?seconds=60`, { signal: client.signal }).catch(
      () => {},
    )
    await service.waitForLog((l) => l.msg === 'profile started')
    for (const [path, at] of [
      ['/debug/pprof/profile', profile],
      ['/debug/pprof/heap', heap],
    ] as const) {
      const busy = await fetch(`${service.debugUrl}${path}`)
      assert.equal(busy.status, 409)
      await assertMatchesResponse(busy, { $ref: `#${at}/409` }, '')
    }
    client.abort()
    await running

    const notFound = await fetch(`${service.debugUrl}/health`)
    assert.equal(notFound.status, 404)
    await assertMatchesResponse(notFound, { $ref: '#/components/responses/NotFound' }, '')
    const notAllowed = await fetch(`${service.debugUrl}/debug/vars`, { method: 'DELETE' })
    assert.equal(notAllowed.status, 405)
    await assertMatchesResponse(notAllowed, { $ref: '#/components/responses/MethodNotAllowed' }, '')
  })

  it('validates against its schemas strictly enough to catch a wrong body', async () => {
    const at = `${specId}#/components/schemas/Health`
    assert.equal((await validate(at, { status: 'ok' })).valid, false)
    assert.equal(
      (
        await validate(`${specId}#/components/responses/NotFound/content/application~1problem+json/schema`, {
          type: 'about:blank',
          title: 'x',
          status: 405,
          detail: 'y',
        })
      ).valid,
      false,
    )
    assert.equal(
      (
        await validate(`${specId}#/components/schemas/CPUProfile`, {
          nodes: [{ id: 1 }],
          startTime: 0,
          endTime: 1,
          samples: [],
          timeDeltas: [],
        })
      ).valid,
      false,
    )
    const heap = `${specId}#/paths/~1debug~1pprof~1heap/get/responses/200/content/application~1json/schema`
    assert.equal(
      (await validate(heap, { head: { callFrame: {}, selfSize: 0, id: 1, children: [] }, samples: [] })).valid,
      false,
    )
    assert.equal((await validate(`${specId}#/components/schemas/DebugVars`, { service: 'x' })).valid, false)
  })
})
