// The drain, in-process: requests in flight finish, idle connections don't hold the exit, stuck
// requests and hooks are bounded by SHUTDOWN_TIMEOUT, and fatal errors stop the service.
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { Agent, type IncomingMessage, request } from 'node:http'
import { connect } from 'node:net'
import { describe, it, type TestContext } from 'node:test'
import type { Handler } from '../internal/router.ts'
import { newRoutes, type RouteDeps } from '../internal/routes.ts'
import { newGate, type StartOptions, startService, withRoutes } from './service.ts'

/** get sends a GET through agent and resolves with status, headers, body and socket. */
async function get(url: string, agent: Agent, onResponse?: (res: IncomingMessage) => void) {
  const req = request(url, { agent })
  req.end()
  const [res] = (await once(req, 'response')) as [IncomingMessage]
  onResponse?.(res)
  const socket = res.socket
  const chunks: Buffer[] = []
  for await (const chunk of res) chunks.push(chunk as Buffer)
  return { status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString(), socket }
}

function refused(port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    socket.on('connect', () => {
      socket.destroy()
      resolve('connected')
    })
    socket.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'))
  })
}

function withRoute(path: string, handler: Handler): StartOptions {
  return { routes: withRoutes({ [path]: { GET: handler } }) }
}

/** withHooks returns the service's routes, having registered hooks as a dependency would. */
function withHooks(register: (deps: RouteDeps) => void): StartOptions {
  return {
    routes: (deps) => {
      register(deps)
      return newRoutes(deps)
    },
  }
}

/** startStuck starts the service with a route that never answers, and resolves once a request to it, with requestId, arrived. */
async function startStuck(t: TestContext, env: Record<string, string>, requestId: string) {
  const arrived = newGate()
  const service = await startService(
    t,
    env,
    withRoute('/stuck', () => arrived.open()),
  )
  const agent = new Agent()
  t.after(() => agent.destroy())
  const req = request(`${service.url}/stuck`, { agent, headers: { 'x-request-id': requestId } })
  req.on('error', () => {})
  req.end()
  await arrived.opened
  return service
}

describe('shutdown', () => {
  it('lets a request in flight finish with Connection: close, refuses new connections, exits 0', async (t) => {
    const arrived = newGate()
    const release = newGate()
    const service = await startService(
      t,
      { SHUTDOWN_DELAY: '200ms' },
      withRoute('/slow', async (_req, res) => {
        arrived.open()
        await release.opened
        res.writeHead(200, { 'content-type': 'text/plain' }).end('done')
      }),
    )
    const agent = new Agent({ keepAlive: true })
    t.after(() => agent.destroy())
    const response = get(`${service.url}/slow`, agent)
    await arrived.opened
    service.events.emit('SIGTERM', 'SIGTERM')
    await service.waitForLog((l) => l.msg === 'stopped accepting connections')
    assert.equal(await refused(service.port), 'ECONNREFUSED')
    release.open()
    const released = performance.now()
    const { status, headers, body } = await response
    assert.equal(status, 200)
    assert.equal(headers.connection, 'close')
    assert.equal(body, 'done')
    assert.equal(await service.exited, 0)
    assert.ok(performance.now() - released < 5000, 'exits promptly once the request is done')
  })

  it('closes the socket of a keep-alive response that was already streaming', async (t) => {
    const release = newGate()
    const service = await startService(
      t,
      {},
      withRoute('/stream', async (_req, res) => {
        res.writeHead(200, { 'content-type': 'text/plain' })
        res.write('part1 ')
        await release.opened
        res.end('part2')
      }),
    )
    const agent = new Agent({ keepAlive: true })
    t.after(() => agent.destroy())
    const headersIn = newGate()
    const response = get(`${service.url}/stream`, agent, () => headersIn.open())
    await headersIn.opened
    service.events.emit('SIGTERM', 'SIGTERM')
    await service.waitForLog((l) => l.msg === 'stopped accepting connections')
    release.open()
    const { status, headers, body, socket } = await response
    assert.equal(status, 200)
    assert.equal(headers.connection, 'keep-alive', 'sent before the signal')
    assert.equal(body, 'part1 part2')
    socket.ref() // the agent unrefs idle sockets; keep the test alive until this one closes
    if (!socket.destroyed) await once(socket, 'close')
    assert.equal(await service.exited, 0)
  })

  it('does not wait for idle keep-alive connections', async (t) => {
    const service = await startService(t, { KEEP_ALIVE_TIMEOUT: '1m' })
    const agent = new Agent({ keepAlive: true })
    t.after(() => agent.destroy())
    const { status, socket } = await get(`${service.url}/health`, agent)
    assert.equal(status, 200)
    assert.equal(socket.destroyed, false, 'the connection stays open for reuse')
    socket.ref() // the agent unrefs idle sockets; keep the test alive until this one closes
    const closed = once(socket, 'close')
    const stopped = performance.now()
    assert.equal(await service.stop(), 0)
    await closed
    assert.ok(performance.now() - stopped < 5000, 'well before the one-minute keep-alive timeout')
  })

  it('serves a connection accepted just before the listener closed, once its request arrives', async (t) => {
    const service = await startService(t)
    const socket = connect(service.port, '127.0.0.1')
    t.after(() => socket.destroy())
    await once(socket, 'connect')
    service.events.emit('SIGTERM', 'SIGTERM')
    await service.waitForLog((l) => l.msg === 'stopped accepting connections')
    socket.write('GET /health HTTP/1.1\r\nHost: test\r\n\r\n')
    let answer = ''
    socket.setEncoding('utf8').on('data', (chunk: string) => (answer += chunk))
    await once(socket, 'close')
    assert.match(answer, /^HTTP\/1\.1 200 OK\r\n/)
    assert.match(answer, /\r\nConnection: close\r\n/i)
    assert.equal(await service.exited, 0)
  })

  it('keeps serving during SHUTDOWN_DELAY, with Connection: close', async (t) => {
    const service = await startService(t, { SHUTDOWN_DELAY: '1m' })
    service.events.emit('SIGTERM', 'SIGTERM')
    await service.waitForLog((l) => l.msg === 'shutdown started')
    const agent = new Agent({ keepAlive: true })
    t.after(() => agent.destroy())
    const health = await get(`${service.url}/health`, agent)
    assert.equal(health.status, 200)
    assert.equal(health.headers.connection, 'close')
    const ready = await get(`${service.url}/ready`, agent)
    assert.equal(ready.status, 503)
    service.events.emit('SIGTERM', 'SIGTERM')
    assert.equal(await service.exited, 143)
  })

  it('exits 1 at SHUTDOWN_TIMEOUT when a request is stuck, naming it', async (t) => {
    const service = await startStuck(t, { SHUTDOWN_TIMEOUT: '1s' }, 'stuck-1')
    service.events.emit('SIGTERM', 'SIGTERM')
    await service.waitForLog((l) => l.msg === 'stopped accepting connections')
    const stopped = performance.now()
    assert.equal(await service.exited, 1)
    const waited = performance.now() - stopped
    assert.ok(waited > 900 && waited < 6000, `exit ${Math.round(waited)} ms after the drain began`)
    const report = service.logs.find((l) => l.msg === 'shutdown timed out: closing remaining connections')
    assert.equal(report?.connections, 1)
    assert.deepEqual(
      (report?.inflight as { requestId: string }[] | undefined)?.map((r) => r.requestId),
      ['stuck-1'],
    )
  })

  it(
    'cuts a stuck drain at a second signal with 128 + its number, and says nothing of a timeout',
    { timeout: 20_000 },
    async (t) => {
      const service = await startStuck(t, { SHUTDOWN_TIMEOUT: '30s' }, 'stuck-2')
      service.events.emit('SIGTERM', 'SIGTERM')
      await service.waitForLog((l) => l.msg === 'stopped accepting connections')
      service.events.emit('SIGINT', 'SIGINT')
      assert.equal(await service.exited, 130)
      const line = await service.waitForLog((l) => l.msg === 'request' && l.requestId === 'stuck-2')
      assert.equal(line.aborted, true, 'the cut request is logged')
      const after = service.logs.slice(service.logs.findIndex((l) => l.msg === 'second signal: exiting at once'))
      assert.deepEqual(
        after.map((l) => l.msg),
        ['second signal: exiting at once', 'request'],
        'after the second signal, only the cut request',
      )
    },
  )

  it('runs cleanup hooks in reverse order, after requests in flight, each logged', async (t) => {
    const order: string[] = []
    const release = newGate()
    const arrived = newGate()
    const service = await startService(
      t,
      {},
      {
        routes: async (deps) => {
          for (const name of ['database', 'queue', 'cache']) {
            deps.lifecycle.onShutdown(name, async () => {
              order.push(name)
              await Promise.resolve()
            })
          }
          return {
            ...(await newRoutes(deps)),
            '/work': {
              GET: async (_req, res) => {
                arrived.open()
                await release.opened
                order.push('request finished')
                res.end('ok')
              },
            },
          }
        },
      },
    )
    const agent = new Agent()
    t.after(() => agent.destroy())
    const response = get(`${service.url}/work`, agent)
    await arrived.opened
    service.events.emit('SIGTERM', 'SIGTERM')
    await service.waitForLog((l) => l.msg === 'stopped accepting connections')
    release.open()
    assert.equal((await response).body, 'ok')
    assert.equal(await service.exited, 0)
    assert.deepEqual(order, ['request finished', 'cache', 'queue', 'database'])
    const hookLines = service.logs.filter((l) => l.msg === 'shutdown hook finished')
    assert.deepEqual(
      hookLines.map((l) => l.hook),
      ['cache', 'queue', 'database'],
    )
    for (const line of hookLines) assert.equal(typeof line.durationMs, 'number')
  })

  it('bounds a hung cleanup hook by SHUTDOWN_TIMEOUT and exits 1', async (t) => {
    let signalled: AbortSignal | undefined
    const service = await startService(
      t,
      { SHUTDOWN_TIMEOUT: '1s' },
      withHooks((deps) => {
        deps.lifecycle.onShutdown('never-called', () => {})
        deps.lifecycle.onShutdown('hung', (signal) => {
          signalled = signal
          return new Promise(() => {}) // never settles
        })
      }),
    )
    const stopped = performance.now()
    assert.equal(await service.stop(), 1)
    const waited = performance.now() - stopped
    assert.ok(waited > 900 && waited < 6000, `exit ${Math.round(waited)} ms after the signal`)
    assert.equal(signalled?.aborted, true, 'the hook was told its time is up')
    assert.ok(service.logs.some((l) => l.msg === 'shutdown hook timed out' && l.hook === 'hung'))
    const summary = service.logs.find((l) => l.msg === 'shutdown finished with failed hooks')
    assert.deepEqual(summary?.failed, ['hung', 'never-called'])
  })

  it('runs the other hooks when one fails, and exits 1', async (t) => {
    const ran: string[] = []
    const service = await startService(
      t,
      {},
      withHooks((deps) => {
        deps.lifecycle.onShutdown('first', () => void ran.push('first'))
        deps.lifecycle.onShutdown('broken', () => {
          throw new Error('cannot close')
        })
      }),
    )
    assert.equal(await service.stop(), 1)
    assert.deepEqual(ran, ['first'])
    const failed = service.logs.find((l) => l.msg === 'shutdown hook failed')
    assert.equal(failed?.hook, 'broken')
    assert.match(String((failed?.err as { message?: string } | undefined)?.message), /cannot close/)
  })

  for (const event of ['uncaughtException', 'unhandledRejection']) {
    it(`logs an ${event} as fatal, drains gracefully and exits 1`, async (t) => {
      const service = await startService(t)
      const agent = new Agent({ keepAlive: true })
      t.after(() => agent.destroy())
      assert.equal((await get(`${service.url}/health`, agent)).status, 200)
      service.events.emit(event, new Error('background job exploded'))
      assert.equal(await service.exited, 1)
      const fatal = service.logs.find((l) => l.level === 'fatal')
      assert.equal(fatal?.msg, 'shutdown started after an uncaught error')
      assert.match(String((fatal?.err as { stack?: string } | undefined)?.stack), /background job exploded\n\s+at /)
      assert.ok(
        service.logs.some((l) => l.msg === 'shutdown complete'),
        'the drain still ran',
      )
    })
  }

  it('logs a second uncaught error during the drain and still exits 1', async (t) => {
    const service = await startService(t, { SHUTDOWN_DELAY: '100ms' })
    service.events.emit('SIGTERM', 'SIGTERM')
    await service.waitForLog((l) => l.msg === 'shutdown started')
    service.events.emit('uncaughtException', new Error('during drain'))
    assert.equal(await service.exited, 1)
    assert.ok(service.logs.some((l) => l.msg === 'uncaught error during shutdown' && l.level === 'fatal'))
  })
})
