import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { closeSync, constants, mkdtempSync, openSync, readFileSync, readSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setImmediate as nextTurn } from 'node:timers/promises'
import { request } from 'node:http'
import { describe, it } from 'node:test'
import { newAccessLog } from '../internal/access-log.ts'
import { newLogger, newStdoutOutput } from '../internal/log.ts'
import type { TrackedResponse } from '../internal/response.ts'
import { newRoutes } from '../internal/routes.ts'
import { exchange } from './raw.ts'
import { type LogLine, newLogSink, pkg, startService, withRoutes } from './service.ts'

const isoTime = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/

function assertBaseFields(line: LogLine) {
  assert.match(String(line.time), isoTime)
  assert.equal(line.service, pkg.name)
  assert.equal(typeof line.version, 'string')
  assert.ok(['trace', 'debug', 'info', 'warn', 'error', 'fatal'].includes(line.level))
}

describe('newStdoutOutput', () => {
  it('writes a line at once after a quiet millisecond; closer lines go out together at the end of the turn', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'log-output-'))
    const file = join(dir, 'out.log')
    const fd = openSync(file, 'w')
    t.after(() => {
      closeSync(fd)
      rmSync(dir, { recursive: true })
    })
    let clock = 1000
    const output = newStdoutOutput(fd, undefined, () => clock)
    const written = () => readFileSync(file, 'utf8')
    output.write('one\n')
    assert.equal(written(), 'one\n', 'the first line, at once')
    clock += 0.5
    output.write('två\n')
    output.write('three\n')
    assert.equal(written(), 'one\n', 'lines within a millisecond of the last write wait for the end of the turn')
    await nextTurn()
    assert.equal(written(), 'one\ntvå\nthree\n', 'in order, with nothing lost')
    clock += 1
    output.write('four\n')
    assert.equal(written(), 'one\ntvå\nthree\nfour\n', 'a millisecond after the last write: at once again')
    output.write('five\n')
    const flushed = output.flush(5000)
    assert.equal(written(), 'one\ntvå\nthree\nfour\nfive\n', 'flush writes what waits, without waiting for the turn')
    await flushed
  })

  it('never blocks on a reader that stopped: it drops past its bound, counts, and reports once it keeps up', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'log-output-'))
    const fifo = join(dir, 'stdout')
    execFileSync('mkfifo', [fifo])
    const fd = openSync(fifo, 'r+') // a blocking pipe whose reader, this process, does not read yet
    const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK)
    t.after(() => {
      closeSync(fd)
      closeSync(reader)
      rmSync(dir, { recursive: true })
    })
    const output = newStdoutOutput(fd, 256 * 1024)
    const reported: number[] = []
    output.onDropped = (count) => {
      reported.push(count)
      output.write(`dropped ${count}\n`) // as run() does: the report is a log line of its own
    }
    const line = `${'x'.repeat(1023)}\n`
    for (let i = 0; i < 1024; i++) output.write(line) // 1 MiB: the pipe holds 64 KiB, the bound 256 KiB
    let turns = 0
    while (turns < 10) await nextTurn(turns++) // the event loop keeps turning
    const started = performance.now()
    await output.flush(200)
    assert.ok(performance.now() - started < 5000, 'flush gives up at its timeout')
    assert.deepEqual(reported, [], 'nothing reported while stdout is stalled')
    // The reader comes back: everything kept arrives, then the count of what was dropped.
    let received = ''
    const buffer = Buffer.alloc(64 * 1024)
    while (!received.endsWith(`dropped ${reported[0]}\n`)) {
      try {
        received += buffer.toString('utf8', 0, readSync(reader, buffer))
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err
      }
      await nextTurn()
    }
    const kept = received.split('\n').length - 2
    assert.ok(kept >= 64 && kept <= 64 + 257, `${kept} lines kept: what the pipe holds and the bound`)
    assert.equal(kept + (reported[0] ?? 0), 1024, 'every line written or counted as dropped')
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
    const service = await startService(
      t,
      {},
      {
        routes: withRoutes({
          '/fail': {
            GET: () => {
              throw new Error('boom')
            },
          },
        }),
      },
    )
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
    const service = await startService(
      t,
      {},
      {
        routes: withRoutes({
          '/stall': { GET: () => arrived() }, // never answers
        }),
      },
    )
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
    const service = await startService(
      t,
      {},
      {
        routes: async (deps) => ({
          ...(await newRoutes(deps)),
          '/echo': {
            GET: (req, res) => {
              // A handler that logs far more than it should: the logger still redacts credentials.
              deps.log.info({ req: { headers: req.headers }, headers: req.headers }, 'handler logged its request')
              res.setHeader('set-cookie', 'session=response-cookie-secret')
              deps.log.info({ res: { headers: res.getHeaders() } }, 'handler logged its response')
              res.end('ok')
            },
          },
        }),
      },
    )
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
      sentStatus: 404,
      path: '/a"b\\c\u0001',
      route: '/a{x}',
      bodyBytes: 97,
      startedAt: performance.now() - 1.5,
      closedAt: performance.now(),
      requestId: 'id-1',
      trace: { traceId: 'a'.repeat(32), spanId: 'b'.repeat(16), flags: '00' },
    } as unknown as TrackedResponse
    newAccessLog(log, sink)(res)
    const [built] = sink.logs
    assert.ok(built)
    log.warn(
      {
        method: 'GET',
        path: res.path,
        route: '/a{x}',
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

  it('stay under 16 KiB whatever the client sends, and name the route', async (t) => {
    const service = await startService(t, { MAX_HEADER_SIZE: '64KiB' })
    const path = `/${'"'.repeat(20_000)}`
    const userAgent = '\\'.repeat(20_000)
    await exchange(service.port, [
      `GET ${path} HTTP/1.1\r\nHost: x\r\nUser-Agent: ${userAgent}\r\nX-Request-Id: huge\r\n\r\n`,
    ])
    const line = await service.waitForLog((l) => l.msg === 'request' && l.requestId === 'huge')
    assert.ok(Buffer.byteLength(JSON.stringify(line)) < 16 * 1024, 'one line, never split by the container runtime')
    assert.match(String(line.path), /^\/"+…\[17953 more\]$/)
    assert.match(String(line.userAgent), /^\\+…\[19488 more\]$/)
    assert.equal(line.route, undefined, 'no route matched')
    await (await fetch(`${service.url}/health`, { headers: { 'x-request-id': 'routed' } })).text()
    assert.equal((await service.waitForLog((l) => l.requestId === 'routed')).route, '/health')
  })

  it('follow LOG_LEVEL: at warn, only 4xx and 5xx access lines', () => {
    const sink = newLogSink()
    const logAccess = newAccessLog(newLogger(sink, 'warn', { service: 'svc', version: null }), sink)
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
        sentStatus: statusCode,
        path: '/',
        route: '',
        bodyBytes: 0,
        startedAt: performance.now(),
        closedAt: performance.now(),
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
