import assert from 'node:assert/strict'
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setImmediate as nextTurn } from 'node:timers/promises'
import { request } from 'node:http'
import { describe, it } from 'node:test'
import { newAccessLog, newLogger, newLogOutput } from '../internal/log.ts'
import type { TrackedResponse } from '../internal/response.ts'
import { newRoutes } from '../internal/routes.ts'
import { exchange } from './raw.ts'
import { type LogLine, newLogSink, startService } from './service.ts'

const isoTime = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/

function assertBaseFields(line: LogLine) {
  assert.match(String(line.time), isoTime)
  assert.equal(line.service, 'kickstart-node')
  assert.equal(typeof line.version, 'string')
  assert.ok(['trace', 'debug', 'info', 'warn', 'error', 'fatal'].includes(line.level))
}

describe('newLogOutput', () => {
  it('writes the lines of one event-loop turn together at its end, and flushSync at once', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'log-output-'))
    const file = join(dir, 'out.log')
    const fd = openSync(file, 'w')
    t.after(() => {
      closeSync(fd)
      rmSync(dir, { recursive: true })
    })
    const output = newLogOutput(fd)
    output.write('one\n')
    output.write('two\n')
    assert.equal(readFileSync(file, 'utf8'), '', 'nothing written within the turn')
    await nextTurn()
    assert.equal(readFileSync(file, 'utf8'), 'one\ntwo\n')
    output.write('three\n')
    output.flushSync()
    assert.equal(readFileSync(file, 'utf8'), 'one\ntwo\nthree\n', 'flushSync writes what is pending')
  })
})

describe('logs', () => {
  it('start with a listening line naming address, port, version and commit', async (t) => {
    const service = await startService(t)
    const line = service.logs.find((l) => l.msg === 'listening')
    assert.ok(line)
    assertBaseFields(line)
    assert.equal(line.level, 'info')
    assert.equal(line.port, service.port)
    assert.equal(typeof line.address, 'string')
    assert.ok('commit' in line)
  })

  it('write one access line per request with every field', async (t) => {
    const service = await startService(t)
    const res = await fetch(`${service.url}/health?token=secret`, {
      headers: { 'user-agent': 'log-test/1.0', 'x-request-id': 'access-1' },
    })
    const body = await res.arrayBuffer()
    const line = await service.waitForLog((l) => l.requestId === 'access-1')
    assertBaseFields(line)
    assert.equal(line.msg, 'request')
    assert.equal(line.level, 'info')
    assert.equal(line.method, 'GET')
    assert.equal(line.path, '/health', 'the query string stays out of the logs')
    assert.equal(line.status, 200)
    assert.equal(line.bytes, body.byteLength)
    assert.equal(typeof line.durationMs, 'number')
    assert.ok((line.durationMs as number) >= 0 && (line.durationMs as number) < 10_000)
    assert.match(String(line.remoteAddr), /127\.0\.0\.1$/)
    assert.equal(line.userAgent, 'log-test/1.0')
    assert.equal(line.aborted, undefined)
    assert.equal(service.logs.filter((l) => l.requestId === 'access-1').length, 1)
    assert.doesNotMatch(JSON.stringify(service.logs), /secret/)
  })

  it('log 4xx at warn and 5xx at error', async (t) => {
    const service = await startService(t, {}, (deps) => ({
      ...newRoutes(deps),
      '/fail': {
        GET: () => {
          throw new Error('boom')
        },
      },
    }))
    for (const [path, method, level, status] of [
      ['/nope', 'GET', 'warn', 404],
      ['/health', 'DELETE', 'warn', 405],
      ['/fail', 'GET', 'error', 500],
      ['/ready', 'HEAD', 'info', 200],
    ] as const) {
      const id = `level-${status}`
      await (await fetch(`${service.url}${path}`, { method, headers: { 'x-request-id': id } })).arrayBuffer()
      const line = await service.waitForLog((l) => l.msg === 'request' && l.requestId === id)
      assert.equal(line.level, level, `${method} ${path}`)
      assert.equal(line.status, status)
    }
  })

  it('mark a request the client abandoned as aborted', async (t) => {
    let arrived: () => void = () => {}
    const handled = new Promise<void>((resolve) => (arrived = resolve))
    const service = await startService(t, {}, (deps) => ({
      ...newRoutes(deps),
      '/stall': { GET: () => arrived() }, // never answers
    }))
    const req = request(`${service.url}/stall`, { headers: { 'x-request-id': 'gone' } })
    req.on('error', () => {})
    req.end()
    await handled
    req.destroy()
    const line = await service.waitForLog((l) => l.msg === 'request' && l.requestId === 'gone')
    assert.equal(line.aborted, true)
    assert.equal(line.status, 499)
    assert.equal(line.level, 'warn')
    assert.equal(line.bytes, 0)
  })

  it('never contain Authorization, Cookie or Set-Cookie values', async (t) => {
    const service = await startService(t, {}, (deps) => ({
      ...newRoutes(deps),
      '/echo': {
        GET: (req, res) => {
          // A handler that logs far more than it should: the logger still redacts credentials.
          deps.log.info({ req: { headers: req.headers }, headers: req.headers }, 'handler logged its request')
          res.setHeader('set-cookie', 'session=response-cookie-secret')
          deps.log.info({ res: { headers: res.getHeaders() } }, 'handler logged its response')
          res.end('ok')
        },
      },
    }))
    const res = await fetch(`${service.url}/echo`, {
      headers: { authorization: 'Bearer token-secret', cookie: 'session=cookie-secret' },
    })
    assert.equal(await res.text(), 'ok')
    await service.waitForLog((l) => l.msg === 'request' && l.path === '/echo')
    const text = JSON.stringify(service.logs)
    assert.doesNotMatch(text, /token-secret|cookie-secret/)
    assert.match(text, /\[REDACTED\]/, 'the logged headers were there, with their values redacted')
  })

  it('build the access line exactly as pino would write it, bindings included', () => {
    const sink = newLogSink()
    const log = newLogger(sink, 'info', { service: 'svc', version: '1.2.3' }).child({ listener: 'debug' })
    const res = {
      req: { method: 'GET', socket: { remoteAddress: '::1' }, headers: { 'user-agent': 'ua "quoted" \\ é' } },
      aborted: false,
      headersSent: true,
      statusCode: 404,
      path: '/a"b\\c\u0001',
      bodyBytes: 97,
      startedAt: performance.now(),
      requestId: 'id-1',
      trace: { traceId: 'a'.repeat(32), spanId: 'b'.repeat(16), flags: '00' },
    } as unknown as TrackedResponse
    newAccessLog(log)(res)
    const [built] = sink.logs
    assert.ok(built)
    log.warn(
      {
        method: 'GET',
        path: res.path,
        status: 404,
        bytes: 97,
        durationMs: built.durationMs,
        requestId: 'id-1',
        traceId: 'a'.repeat(32),
        spanId: 'b'.repeat(16),
        remoteAddr: '::1',
        userAgent: 'ua "quoted" \\ é',
      },
      'request',
    )
    const byPino = sink.logs[1]
    assert.deepEqual(Object.entries({ ...built, time: 0 }), Object.entries({ ...byPino, time: 0 }))
    assert.equal(built.listener, 'debug')
    assert.equal(built.path, '/a"b\\c\u0001')
  })

  it('escape the path and user agent a client sends, whatever they hold', async (t) => {
    const service = await startService(t)
    const path = '/a"b\\c%22'
    const userAgent = 'evil"},"level":"fatal\\'
    await exchange(service.port, [
      `GET ${path}?q HTTP/1.1\r\nHost: x\r\nUser-Agent: ${userAgent}\r\nX-Request-Id: escaped\r\n\r\n`,
    ])
    const line = await service.waitForLog((l) => l.msg === 'request' && l.requestId === 'escaped')
    assert.equal(line.path, path)
    assert.equal(line.userAgent, userAgent)
    assert.equal(line.level, 'warn')
  })

  it('follow LOG_LEVEL: at warn, only 4xx and 5xx access lines', () => {
    const sink = newLogSink()
    const logAccess = newAccessLog(newLogger(sink, 'warn', { service: 'svc', version: null }))
    for (const [statusCode, requestId] of [
      [200, 'quiet'],
      [404, 'loud'],
      [503, 'louder'],
    ] as const) {
      logAccess({
        req: { method: 'GET', socket: {}, headers: {} },
        aborted: false,
        headersSent: true,
        statusCode,
        path: '/',
        bodyBytes: 0,
        startedAt: performance.now(),
        requestId,
        trace: { traceId: 'a'.repeat(32), spanId: 'b'.repeat(16), flags: '00' },
      } as unknown as TrackedResponse)
    }
    assert.deepEqual(
      sink.logs.map((l) => [l.requestId, l.level]),
      [
        ['loud', 'warn'],
        ['louder', 'error'],
      ],
    )
  })

  it('record shutdown start and end', async (t) => {
    const service = await startService(t)
    assert.equal(await service.stop('SIGTERM'), 0)
    const started = service.logs.find((l) => l.msg === 'shutdown started')
    const complete = service.logs.find((l) => l.msg === 'shutdown complete')
    assert.equal(started?.signal, 'SIGTERM')
    assert.equal(complete?.level, 'info')
    assert.equal(typeof complete?.durationMs, 'number')
  })
})
