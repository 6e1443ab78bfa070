// The spec cannot drift from the code: every route is documented, every documented operation is
// served, and every real response validates against the documented schema and headers.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { describe, it } from 'node:test'
import { registerSchema, validate } from '@hyperjump/json-schema/openapi-3-1'
import type { OpenAPIV3_1 } from 'openapi-types'
import { parse } from 'yaml'
import { newRoutes, type Routes } from '../internal/routes.ts'
import { startService } from './service.ts'

const dist = new URL('../', import.meta.url)
const spec = parse(readFileSync(new URL('openapi.yaml', dist), 'utf8')) as OpenAPIV3_1.Document
const pkg = JSON.parse(readFileSync(new URL('../package.json', dist), 'utf8')) as { version: string }
const specId = 'https://kickstart.test/openapi.json'
registerSchema(spec as never, specId, 'https://spec.openapis.org/oas/3.1/schema-base')

const methods = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'] as const

/** operations lists every documented operation as 'GET /path'. */
function operations(): string[] {
  return Object.entries(spec.paths ?? {}).flatMap(([path, item]) =>
    methods.filter((m) => item?.[m] !== undefined).map((m) => `${m.toUpperCase()} ${path}`),
  )
}

/** resolve follows a local $ref and returns the object with its JSON pointer. */
function resolve<T>(value: T | OpenAPIV3_1.ReferenceObject, pointer: string): { value: T; pointer: string } {
  if (value && typeof value === 'object' && '$ref' in value) {
    const ref = value.$ref.slice(1)
    const target = ref
      .split('/')
      .slice(1)
      .reduce<unknown>((node, key) => (node as Record<string, unknown>)[key.replaceAll('~1', '/').replaceAll('~0', '~')], spec)
    return { value: target as T, pointer: ref }
  }
  return { value: value as T, pointer }
}

const escape = (key: string) => key.replaceAll('~', '~0').replaceAll('/', '~1')

/** assertMatchesResponse checks status, content type, body schema and documented headers. */
async function assertMatchesResponse(res: Response, documented: OpenAPIV3_1.ResponseObject | OpenAPIV3_1.ReferenceObject, pointer: string) {
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

  it('documents exactly the routes the service serves', async (t) => {
    let routes: Routes = {}
    await startService(t, {}, (deps) => (routes = newRoutes(deps)))
    const served = Object.entries(routes).flatMap(([path, handlers]) => Object.keys(handlers).map((m) => `${m} ${path}`))
    assert.deepEqual(served.sort(), operations().sort())
  })

  it('describes every real response of every operation', async (t) => {
    const service = await startService(t)
    for (const operation of operations()) {
      const [method = '', path = ''] = operation.split(' ')
      const documented = spec.paths?.[path]?.[method.toLowerCase() as (typeof methods)[number]]
      const res = await fetch(`${service.url}${path}`, { method })
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

  it('validates against its schemas strictly enough to catch a wrong body', async () => {
    const at = `${specId}#/components/schemas/Health`
    assert.equal((await validate(at, { status: 'ok' })).valid, false)
    assert.equal((await validate(`${specId}#/components/responses/NotFound/content/application~1problem+json/schema`, { type: 'about:blank', title: 'x', status: 405, detail: 'y' })).valid, false)
  })
})
