// The spec cannot drift from the code: the public port serves exactly the documented operations,
// each operation's own examples reach its route and get a documented answer, and every answer
// validates against the documented schema and headers. The document checked is the one the
// service serves: openapi.yaml with the add-ons' fragments merged in by the build.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { validate } from '@hyperjump/json-schema/openapi-3-1'
import { addOns as entries } from '../cmd/server/main.ts'
import { buildDir } from '../internal/build-info.ts'
import { assertProblem, pkg, startService } from './service.ts'
import { assertDocumented, assertResponse, checkPublicSpec, loadSpec, metaSchema, operationsOf } from './spec.ts'

const addOns = await Promise.all(entries.map(async (entry) => (await entry.load()).addOn))
const spec = loadSpec(new URL('openapi.yaml', buildDir))

describe('openapi.yaml', () => {
  it('is a valid OpenAPI 3.1 document', async () => {
    assert.equal(spec.doc.openapi, '3.1.0')
    assert.ok((await validate(metaSchema, spec.doc as never)).valid)
  })

  it('rejects an invalid document, so the check above can fail', async () => {
    const broken = structuredClone(spec.doc)
    broken.paths = { '/x': { get: { responses: { '200': { descriptio: 'typo' } } } } } as never
    assert.equal((await validate(metaSchema, broken as never)).valid, false)
  })

  it('has the version of package.json', () => {
    assert.equal(spec.doc.info.version, pkg.version)
  })

  checkPublicSpec({ addOns })

  it('describes /ready while shutting down', async (t) => {
    const service = await startService(t, { SHUTDOWN_DELAY: '1m' })
    service.events.emit('SIGTERM', 'SIGTERM')
    await service.waitForLog((l) => l.msg === 'shutdown started')
    const ready = operationsOf(spec).find((o) => o.name === 'GET /ready')
    assert.ok(ready)
    const res = await fetch(`${service.url}/ready`)
    assert.equal(res.status, 503)
    await assertDocumented(spec, res, ready)
    service.events.emit('SIGTERM', 'SIGTERM')
    assert.equal(await service.exited, 143)
  })

  it('describes the 404 and 405 answers', async (t) => {
    const service = await startService(t)
    const responses = '/components/responses'
    const notFound = await fetch(`${service.url}/no-such-path`)
    assert.equal(notFound.status, 404)
    await assertResponse(spec, notFound, { $ref: `#${responses}/NotFound` }, '')
    const notAllowed = await fetch(`${service.url}/health`, { method: 'POST' })
    assert.equal(notAllowed.status, 405)
    await assertResponse(spec, notAllowed, { $ref: `#${responses}/MethodNotAllowed` }, '')
  })

  it('validates strictly enough to catch a wrong body', async (t) => {
    const at = `${spec.url}#/components/schemas/Health`
    assert.equal((await validate(at, { status: 'ok' })).valid, false)
    const notFound = `${spec.url}#/components/responses/NotFound/content/application~1problem+json/schema`
    assert.equal((await validate(notFound, { type: 'about:blank', title: 'x', status: 405, detail: 'y' })).valid, false)
    const service = await startService(t)
    await assertProblem(await fetch(`${service.url}/nope`), 404)
  })
})
