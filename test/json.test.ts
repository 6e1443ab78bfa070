// The JSON helpers every JSON API repeats: sendJSON, and readJSON answering 415, 413 and 400 itself.
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { readJSON, sendJSON, sendProblem } from '../internal/json.ts'
import { assertProblem, startService, withRoutes } from './service.ts'

describe('readJSON and sendJSON', () => {
  async function start(t: Parameters<typeof startService>[0]) {
    return startService(
      t,
      { MAX_BODY_SIZE: '64B' },
      {
        routes: withRoutes({
          '/echo': {
            POST: async (req, res) => {
              const body = await readJSON(req, res, 64)
              if (body === undefined) return
              if (typeof body !== 'object' || body === null || typeof (body as { name?: unknown }).name !== 'string') {
                return sendProblem(res, 400, 'The body is not a valid thing.', undefined, {
                  errors: [{ pointer: '#/name', detail: 'must be a string' }],
                })
              }
              sendJSON(res, 201, { received: body }, { location: '/echo/1' })
            },
          },
        }),
      },
    )
  }

  it('reads a JSON body and answers with JSON, status and headers', async (t) => {
    const service = await start(t)
    const res = await fetch(`${service.url}/echo`, {
      method: 'POST',
      headers: { 'content-type': 'application/json; charset=utf-8' },
      body: '{"name":"é"}',
    })
    assert.equal(res.status, 201)
    assert.equal(res.headers.get('content-type'), 'application/json')
    assert.equal(res.headers.get('location'), '/echo/1')
    assert.deepEqual(await res.json(), { received: { name: 'é' } })
  })

  it('answers 415 for another content type, and closes the connection whose body it did not read', async (t) => {
    const service = await start(t)
    for (const type of ['text/plain', 'application/jsonp', undefined]) {
      const res = await fetch(`${service.url}/echo`, {
        method: 'POST',
        headers: type === undefined ? {} : { 'content-type': type },
        body: type === undefined ? undefined : '{"name":"x"}',
      })
      await assertProblem(res, 415, /application\/json/)
    }
  })

  it('answers 400 saying where the JSON breaks, and 400 naming the field a handler refuses', async (t) => {
    const service = await start(t)
    const post = (body: string) =>
      fetch(`${service.url}/echo`, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
    // V8 says where: the token and the text around it, or the position.
    await assertProblem(await post('{"name": }'), 400, /not valid JSON: Unexpected token '\}', "\{"name": \}"/)
    await assertProblem(await post('{"name": "x"} trailing'), 400, /not valid JSON: .* at position 14/)
    await assertProblem(await post(''), 400, /not valid JSON: Unexpected end of JSON input/)
    const field = await assertProblem(await post('{"name": 1}'), 400)
    assert.deepEqual(field.errors, [{ pointer: '#/name', detail: 'must be a string' }])
  })

  it('answers 413 above the limit, by Content-Length or by what arrives', async (t) => {
    const service = await start(t)
    const big = JSON.stringify({ name: 'x'.repeat(100) })
    const res = await fetch(`${service.url}/echo`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: big,
    })
    await assertProblem(res, 413, /larger than 64 bytes/)
    const chunked = await fetch(`${service.url}/echo`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: new Blob([big]).stream(),
      duplex: 'half',
    } as RequestInit)
    await assertProblem(chunked, 413)
  })
})
