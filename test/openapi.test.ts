// The spec cannot drift from the code: the public port serves exactly the documented operations,
// each operation's own examples reach its route and get a documented answer, and every answer
// validates against the documented schema and headers. The document checked is the one the
// service serves: openapi.yaml with the add-ons' fragments merged in by the build.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { validate } from '@hyperjump/json-schema/openapi-3-1'
import { buildDir } from '../internal/build-info.ts'
import type { Routes } from '../internal/router.ts'
import { newRoutes } from '../internal/routes.ts'
import { assertProblem, pkg, type StartOptions, startService } from './service.ts'
import {
  assertDocumented,
  assertResponse,
  casesOf,
  loadSpec,
  metaSchema,
  operationsOf,
  operationsServed,
} from './spec.ts'

const spec = loadSpec(new URL('openapi.yaml', buildDir))

/**
 * checkSpec runs the contract checks for the service started with options against spec: add-ons
 * call it with themselves in options, so each is held to the spec it merges in.
 */
export function checkSpec(options: StartOptions = {}) {
  it('documents exactly the operations the public port serves', async (t) => {
    const tables: Routes[] = []
    await startService(t, {}, capturing(options, tables))
    const served = tables.flatMap(operationsServed)
    assert.deepEqual(
      served.sort(),
      operationsOf(spec)
        .map((o) => o.name)
        .sort(),
    )
  })

  it("answers every operation's own examples on its route, as documented", async (t) => {
    const service = await startService(t, {}, options)
    for (const operation of operationsOf(spec)) {
      for (const [i, c] of casesOf(spec, operation).entries()) {
        const id = `spec-${operation.method}-${i}-${Math.random().toString(36).slice(2)}`
        const res = await fetch(`${service.url}${c.path}`, {
          ...c.init,
          headers: { ...(c.init.headers as Record<string, string>), 'x-request-id': id },
        })
        const what = `${operation.name}, ${c.name}: ${c.init.method} ${c.path} answered ${res.status}`
        await assertDocumented(spec, res, operation)
        const line = await service.waitForLog((l) => l.msg === 'request' && l.requestId === id)
        assert.equal(line.route, operation.template, `${what} without reaching its route`)
      }
    }
  })
}

/** capturing returns options whose route tables, the service's and the add-ons', land in tables. */
function capturing(options: StartOptions, tables: Routes[]): StartOptions {
  const routes = options.routes ?? newRoutes
  return {
    routes: async (deps) => {
      const table = await routes(deps)
      tables.push(table)
      return table
    },
    addOns: (options.addOns ?? []).map((addOn) => ({
      ...addOn,
      async start(ctx) {
        const parts = (await addOn.start(ctx)) ?? {}
        tables.push(parts.routes ?? {})
        return parts
      },
    })),
  }
}

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

  it('has the name and version of package.json', () => {
    assert.equal(spec.doc.info.title, pkg.name)
    assert.equal(spec.doc.info.version, pkg.version)
  })

  checkSpec()

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
