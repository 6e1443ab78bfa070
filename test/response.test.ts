import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer, type IncomingMessage, request } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Readable } from 'node:stream'
import { describe, it, type TestContext } from 'node:test'
import { TrackedResponse } from '../internal/response.ts'

type Handler = (res: TrackedResponse) => void

/** serve answers one request with handler and resolves with the response once it has closed. */
async function serve(t: TestContext, handler: Handler) {
  const server = createServer<typeof IncomingMessage, typeof TrackedResponse>(
    { ServerResponse: TrackedResponse },
    (_req, res) => handler(res),
  )
  const closed = new Promise<TrackedResponse>((resolve) => {
    server.on('request', (_req, res: TrackedResponse) => res.on('close', () => resolve(res)))
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.after(() => {
    server.closeAllConnections()
    server.close()
  })
  return { port: (server.address() as AddressInfo).port, closed }
}

/** fetchBody sends one request and resolves with the body bytes the client received. */
async function fetchBody(port: number, method = 'GET'): Promise<{ status: number; body: Buffer }> {
  const req = request({ port, host: '127.0.0.1', method, agent: false })
  req.end()
  const [res] = (await once(req, 'response')) as [IncomingMessage]
  const chunks: Buffer[] = []
  for await (const chunk of res) chunks.push(chunk as Buffer)
  return { status: res.statusCode ?? 0, body: Buffer.concat(chunks) }
}

describe('TrackedResponse', () => {
  const cases: [string, Handler, number][] = [
    ['end with an ASCII string', (res) => res.end('hello'), 5],
    ['end with a multi-byte UTF-8 string', (res) => res.end('héllo ✓'), 10],
    ['end with a hex string', (res) => res.end('cafe', 'hex'), 2],
    ['end with a latin1 string and a callback', (res) => res.end('héllo', 'latin1', () => {}), 5],
    ['end with a Buffer', (res) => res.end(Buffer.alloc(1000)), 1000],
    ['end with a Uint8Array', (res) => res.end(new Uint8Array(7)), 7],
    ['end without a body', (res) => res.end(), 0],
    ['writeHead with content-length, then end', (res) => res.writeHead(200, { 'content-length': 3 }).end('abc'), 3],
    [
      'several writes in chunked encoding',
      (res) => {
        res.write('abc')
        res.write(Buffer.from('defg'))
        res.write('✓', 'utf8', () => {})
        res.end('!')
      },
      11,
    ],
    ['a piped stream', (res) => Readable.from([Buffer.alloc(70_000), 'tail']).pipe(res), 70_004],
  ]
  for (const [name, handler, bytes] of cases) {
    it(`counts ${name}: ${bytes} bytes, as the client receives`, async (t) => {
      const { port, closed } = await serve(t, handler)
      const { body } = await fetchBody(port)
      const res = await closed
      assert.equal(body.length, bytes)
      assert.equal(res.bodyBytes, bytes)
      assert.equal(res.aborted, false)
    })
  }

  const empty: [string, Handler, string][] = [
    ['HEAD', (res) => res.end('hello'), 'HEAD'],
    ['204', (res) => res.writeHead(204).end('ignored'), 'GET'],
    ['304', (res) => res.writeHead(304).end('ignored'), 'GET'],
  ]
  for (const [name, handler, method] of empty) {
    it(`counts 0 bytes for ${name}`, async (t) => {
      const { port, closed } = await serve(t, handler)
      const { body } = await fetchBody(port, method)
      const res = await closed
      assert.equal(body.length, 0)
      assert.equal(res.bodyBytes, 0)
    })
  }

  it('records the status the handler set, and 200 when it set none', async (t) => {
    for (const [handler, status] of [
      [(res: TrackedResponse) => res.end(), 200],
      [(res: TrackedResponse) => res.writeHead(418).end(), 418],
    ] as const) {
      const { port, closed } = await serve(t, handler)
      assert.equal((await fetchBody(port)).status, status)
      assert.equal((await closed).statusCode, status)
    }
  })

  it('passes write() backpressure and callbacks through', async (t) => {
    let returned: boolean | undefined
    let resolveCallback: () => void = () => {}
    const called = new Promise<void>((resolve) => (resolveCallback = resolve))
    const { port, closed } = await serve(t, (res) => {
      returned = res.write(Buffer.alloc(4 * 1024 * 1024), () => resolveCallback())
      res.once('drain', () => res.end())
    })
    const { body } = await fetchBody(port)
    await called // the write callback runs once the chunk is flushed
    assert.equal(returned, false, 'a write far above highWaterMark must ask the caller to wait')
    assert.equal(body.length, 4 * 1024 * 1024)
    assert.equal((await closed).bodyBytes, 4 * 1024 * 1024)
  })

  it('flags a response the client abandoned, with the bytes written before', async (t) => {
    const { port, closed } = await serve(t, (res) => {
      res.write('first part')
    })
    const req = request({ port, host: '127.0.0.1', agent: false })
    req.end()
    const [incoming] = (await once(req, 'response')) as [IncomingMessage]
    await once(incoming, 'data')
    req.destroy()
    const res = await closed
    assert.equal(res.aborted, true)
    assert.equal(res.bodyBytes, 10)
  })

  it('does not count writes after end', async (t) => {
    const { port, closed } = await serve(t, (res) => {
      res.end('abc')
      res.on('error', () => {}) // Node reports the late write as an error event
      res.write('late')
    })
    await fetchBody(port)
    assert.equal((await closed).bodyBytes, 3)
  })
})
