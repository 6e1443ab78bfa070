// Spec helpers: load an OpenAPI document, list its operations and the cases its own examples make,
// and check a real response against what the document says of it. openapi.test.ts uses them for
// the public port, each add-on for its own routes.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { registerSchema, validate } from '@hyperjump/json-schema/openapi-3-1'
import type { OpenAPIV3_1 as OAS } from 'openapi-types'
import { parse } from 'yaml'
import { it } from 'node:test'
import type { AddOn } from '../internal/addon.ts'
import { buildDir } from '../internal/build-info.ts'
import type { Routes } from '../internal/router.ts'
import { newRoutes } from '../internal/routes.ts'
import { type StartOptions, startService } from './service.ts'

/** Spec is a parsed document and where it lives, which its relative $refs resolve against. */
export interface Spec {
  doc: OAS.Document
  url: string
}

export const metaSchema = 'https://spec.openapis.org/oas/3.1/schema-base'
const loaded = new Map<string, Spec>()
// The validator refuses file: URLs, so each document gets an https one that mirrors its path in
// the repository: relative $refs between documents resolve the same way.
const root = new URL('../', import.meta.url).href
const base = 'https://repo.test/'

/**
 * loadSpec parses the document at file, and every document its $refs name, once, and registers
 * them, so their schemas can be validated against.
 */
export function loadSpec(file: URL): Spec {
  const url = file.href.replace(root, base)
  const cached = loaded.get(url)
  if (cached) return cached
  const spec = { doc: parse(readFileSync(file, 'utf8')) as OAS.Document, url }
  registerSchema(spec.doc as never, url, metaSchema)
  loaded.set(url, spec)
  for (const ref of externalRefs(spec.doc)) loadSpec(new URL(new URL(ref, url).href.split('#')[0]!.replace(base, root)))
  return spec
}

function externalRefs(node: unknown): string[] {
  if (typeof node !== 'object' || node === null) return []
  return Object.entries(node).flatMap(([key, value]) =>
    key === '$ref' && typeof value === 'string' && !value.startsWith('#') ? [value] : externalRefs(value),
  )
}

const methods = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'] as const

/** Operation is one documented method of one path. */
export interface Operation {
  name: string // 'GET /items/{id}'
  method: string
  template: string
  op: OAS.OperationObject
  pointer: string
}

/** operationsOf lists the operations spec documents, HEAD included as the operation it is. */
export function operationsOf(spec: Spec): Operation[] {
  return Object.entries(spec.doc.paths ?? {}).flatMap(([template, item]) =>
    // In the document's order: an operation's examples may need an earlier one's (POST before GET).
    Object.keys(item ?? {}).flatMap((key) => {
      const m = methods.find((method) => method === key)
      const op = m === undefined ? undefined : item?.[m]
      if (m === undefined || op === undefined) return []
      const name = `${m.toUpperCase()} ${template}`
      // Parameters of the path apply to each of its operations.
      const parameters = [...(item?.parameters ?? []), ...(op.parameters ?? [])]
      return [
        {
          name,
          method: m.toUpperCase(),
          template,
          op: { ...op, parameters },
          pointer: `/paths/${escape(template)}/${m}`,
        },
      ]
    }),
  )
}

/** operationsServed lists what a route table answers, as operation names; GET routes answer HEAD. */
export function operationsServed(routes: Routes): string[] {
  return Object.entries(routes).flatMap(([template, handlers]) => {
    const served = Object.keys(handlers)
    if (served.includes('GET') && !served.includes('HEAD')) served.push('HEAD')
    return served.map((method) => `${method} ${template}`)
  })
}

/** Case is one request an operation's examples describe. */
export interface Case {
  name: string
  path: string
  init: RequestInit
}

/**
 * casesOf returns the requests op's own examples make: one with each parameter's `example` (or
 * its schema's default) and the request body's `example`, then one per named example, valid
 * (`examples`) or not (`x-invalid-examples`), of a parameter or of the body, the rest as in the
 * first.
 */
export function casesOf(spec: Spec, { method, template, op }: Operation): Case[] {
  const parameters = (op.parameters ?? []).map((p) => resolve<OAS.ParameterObject>(spec, p))
  const media = op.requestBody && resolve<OAS.RequestBodyObject>(spec, op.requestBody).content
  const [contentType, body] = Object.entries(media ?? {})[0] ?? []
  const base = Object.fromEntries(
    parameters.map((p) => [p.name, p.example ?? (p.schema as { default?: unknown })?.default]),
  )
  const make = (name: string, values: Record<string, unknown>, payload: unknown): Case => {
    let path = template
    const query = new URLSearchParams()
    for (const p of parameters) {
      const value = values[p.name] as string | number | boolean | undefined
      if (value === undefined) continue
      if (p.in === 'path') path = path.replace(`{${p.name}}`, encodeURIComponent(String(value)))
      if (p.in === 'query') query.set(p.name, String(value))
    }
    const init: RequestInit = { method }
    if (payload !== undefined) {
      init.body = typeof payload === 'string' ? payload : JSON.stringify(payload)
      init.headers = { 'content-type': contentType ?? 'application/json' }
    }
    return { name, path: query.size > 0 ? `${path}?${query.toString()}` : path, init }
  }
  const cases = [make('example', base, body?.example)]
  for (const p of parameters) {
    for (const [name, example] of Object.entries({ ...p.examples, ...invalidExamples(p) })) {
      cases.push(
        make(
          `${p.name}: ${name}`,
          { ...base, [p.name]: resolve<OAS.ExampleObject>(spec, example).value },
          body?.example,
        ),
      )
    }
  }
  for (const [name, example] of Object.entries({ ...body?.examples, ...invalidExamples(body) })) {
    cases.push(make(`body: ${name}`, base, resolve<OAS.ExampleObject>(spec, example).value))
  }
  return cases
}

/**
 * invalidExamples returns the `x-invalid-examples` of a parameter or media type: values the
 * schema refuses, kept apart from `examples`, which linters hold to the schema, to show the 400s.
 */
function invalidExamples(value: object | undefined): Record<string, OAS.ExampleObject> {
  return (
    (value as { 'x-invalid-examples'?: Record<string, OAS.ExampleObject> } | undefined)?.['x-invalid-examples'] ?? {}
  )
}

/**
 * assertDocumented checks res against what op documents for its status (or `default`): the
 * content type, the body against its schema, and every documented header. HEAD has no body.
 */
export async function assertDocumented(spec: Spec, res: Response, operation: Operation): Promise<void> {
  const status = String(res.status)
  const documented = operation.op.responses?.[status] ?? operation.op.responses?.default
  assert.ok(documented, `${operation.name} answered ${status}, which is not documented`)
  const at = `${operation.pointer}/responses/${operation.op.responses?.[status] ? status : 'default'}`
  await assertResponse(spec, res, documented, at, operation.method === 'HEAD')
}

/** assertResponse checks res against response, found at pointer in spec (a $ref is followed). */
export async function assertResponse(
  spec: Spec,
  res: Response,
  response: OAS.ResponseObject | OAS.ReferenceObject,
  pointer: string,
  head = false,
): Promise<void> {
  const { value, url } = follow<OAS.ResponseObject>(spec, response, `${spec.url}#${pointer}`)
  const text = await res.text()
  if (head || value.content === undefined) assert.equal(text, '', `${url}: a body where none is documented`)
  else {
    const contentType = res.headers.get('content-type') ?? ''
    assert.ok(value.content?.[contentType]?.schema, `${url} documents content type ${contentType}`)
    const body: unknown = contentType.endsWith('json') ? JSON.parse(text) : text
    const output = await validate(`${url}/content/${escape(contentType)}/schema`, body as never)
    assert.ok(output.valid, `${url}: ${text.slice(0, 500)} does not match its schema`)
  }
  for (const [name, header] of Object.entries(value.headers ?? {})) {
    const resolved = follow<OAS.HeaderObject>(spec, header, `${url}/headers/${escape(name)}`)
    const sent = res.headers.get(name)
    if (resolved.value.required) assert.notEqual(sent, null, `${url}: header ${name} is required`)
    if (sent !== null && resolved.value.schema) {
      assert.ok((await validate(`${resolved.url}/schema`, sent)).valid, `${url}: header ${name}: ${sent}`)
    }
  }
}

/** resolve follows value's $refs, across documents too, and returns what they point at. */
export function resolve<T>(spec: Spec, value: T | OAS.ReferenceObject): T {
  return follow(spec, value, spec.url).value
}

/** follow resolves $refs and says where the value is, as an absolute URL with a JSON pointer. */
function follow<T>(spec: Spec, value: T | OAS.ReferenceObject, url: string): { value: T; url: string } {
  if (!value || typeof value !== 'object' || !('$ref' in value)) return { value: value as T, url }
  const target = new URL(value.$ref, url)
  const pointer = decodeURIComponent(target.hash.slice(1))
  target.hash = ''
  const doc = target.href === spec.url ? spec : loadSpec(new URL(target.href.replace(base, root)))
  const found = pointer
    .split('/')
    .slice(1)
    .reduce<unknown>(
      (node, key) => (node as Record<string, unknown>)[key.replaceAll('~1', '/').replaceAll('~0', '~')],
      doc.doc,
    )
  return follow(doc, found as T | OAS.ReferenceObject, `${doc.url}#${pointer}`)
}

/** escape writes key as one JSON pointer token, percent-encoded for a URI fragment (RFC 6901 §6). */
export function escape(key: string): string {
  return encodeURIComponent(key.replaceAll('~', '~0').replaceAll('/', '~1'))
}

/**
 * checkPublicSpec defines the contract tests of the public port, started with options (the
 * add-ons), against the spec it serves: openapi.yaml with the add-ons' fragments merged in.
 */
export function checkPublicSpec(options: StartOptions = {}) {
  const spec = loadSpec(new URL('openapi.yaml', buildDir))
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
        // An operation's own example must succeed; its named examples show the other answers.
        if (c.name === 'example') assert.ok(res.status >= 200 && res.status < 300, what)
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

/**
 * checkListenerSpec defines the contract tests of an add-on's own listener (named listener in its
 * `… listening` log line), started with env: it serves exactly the operations spec documents, and
 * each operation's own examples get a documented answer, the `example` a 2xx.
 */
export function checkListenerSpec(spec: Spec, addOn: AddOn<any>, env: Record<string, string>, listener: string) {
  it(`the ${listener} listener serves exactly the documented operations`, async (t) => {
    let routes: Routes = {}
    const capture: AddOn<any> = {
      ...addOn,
      start: (ctx) =>
        addOn.start({
          ...ctx,
          serve: (name, addr, table, variable) => ctx.serve(name, addr, (routes = table), variable),
        }),
    }
    await startService(t, env, { addOns: [capture] })
    assert.deepEqual(
      operationsServed(routes).sort(),
      operationsOf(spec)
        .map((o) => o.name)
        .sort(),
    )
  })

  it(`the ${listener} listener answers every operation's own examples as documented`, async (t) => {
    const service = await startService(t, env, { addOns: [addOn] })
    const port = service.logs.find((l) => l.msg === `${listener} listening`)?.port as number
    for (const operation of operationsOf(spec)) {
      for (const c of casesOf(spec, operation)) {
        const res = await fetch(`http://127.0.0.1:${port}${c.path}`, c.init)
        if (c.name === 'example') assert.ok(res.ok, `${operation.name} answered its example ${res.status}`)
        await assertDocumented(spec, res, operation)
      }
    }
  })
}
