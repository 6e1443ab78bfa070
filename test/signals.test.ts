// The real process: cmd/server/main.ts in a child process, real signals, real exit codes.
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { createServer } from 'node:net'
import { describe, it } from 'node:test'
import { type LogLine, spawnService as start } from './service.ts'

/** withoutCleanup leaves out the lines of the add-ons closing what they opened before the failure. */
function withoutCleanup(logs: LogLine[]): LogLine[] {
  return logs.filter((l) => l.msg !== 'shutdown hook finished')
}

describe('the server process', () => {
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    it(`stops gracefully on ${signal} with exit code 0 and nothing on stderr`, async () => {
      const server = start({})
      const listening = await server.waitForLog((l) => l.msg === 'listening')
      const res = await fetch(`http://127.0.0.1:${listening.port as number}/health`)
      assert.equal(res.status, 200)
      await res.arrayBuffer()
      server.kill(signal)
      assert.deepEqual(await server.exit, { code: 0, signal: null })
      assert.equal(server.stderr(), '')
      // The add-ons the service runs with may each log the cleanup of what they opened.
      const messages = server.logs.map((l) => l.msg).filter((msg) => msg !== 'shutdown hook finished')
      assert.deepEqual(messages, [
        'listening',
        'request',
        'shutdown started',
        'stopped accepting connections',
        'shutdown complete',
      ])
      assert.equal(server.logs[2]?.signal, signal)
    })
  }

  it('exits at once with 128 + signal number on a second signal', async () => {
    const server = start({ SHUTDOWN_DELAY: '1m' })
    await server.waitForLog((l) => l.msg === 'listening')
    server.kill('SIGTERM')
    await server.waitForLog((l) => l.msg === 'shutdown started')
    const sent = performance.now()
    server.kill('SIGINT')
    assert.deepEqual(await server.exit, { code: 130, signal: null })
    assert.ok(performance.now() - sent < 10_000, 'well before the one-minute delay')
    assert.ok(server.logs.some((l) => l.msg === 'second signal: exiting at once' && l.signal === 'SIGINT'))
  })

  it('refuses invalid configuration with exit code 2 and one line naming every bad variable', async () => {
    const server = start({ PORT: 'http', SHUTDOWN_TIMEOUT: '10' })
    assert.deepEqual(await server.exit, { code: 2, signal: null })
    assert.equal(server.logs.length, 1)
    const [line] = server.logs
    assert.equal(line?.level, 'fatal')
    assert.equal(line?.msg, 'invalid configuration')
    assert.deepEqual(line?.problems, [
      'Expected `PORT` to be an integer from 0 to 65535, got `http`',
      'Expected `SHUTDOWN_TIMEOUT` to be a duration with a unit, like 500ms, 10s, 1m or 1m30s, got `10`',
    ])
    assert.equal(server.stderr(), '')
  })

  it('exits 1 with one line naming HOST when it is not an address of this machine', async () => {
    const server = start({ HOST: '192.0.2.1' }) // TEST-NET-1: never local
    assert.deepEqual(await server.exit, { code: 1, signal: null })
    const [line, ...others] = withoutCleanup(server.logs)
    assert.deepEqual(others, [])
    assert.equal(line?.msg, 'cannot listen (PORT, HOST): listen EADDRNOTAVAIL: address not available 192.0.2.1')
    assert.equal(server.stderr(), '')
  })

  it('exits 1 with one line naming the port when the port is taken', async () => {
    const blocker = createServer()
    blocker.listen(0, '127.0.0.1')
    await once(blocker, 'listening')
    const port = (blocker.address() as { port: number }).port
    try {
      const server = start({ PORT: String(port), HOST: '127.0.0.1' })
      assert.deepEqual(await server.exit, { code: 1, signal: null })
      const [line, ...others] = withoutCleanup(server.logs)
      assert.deepEqual(others, [])
      assert.equal(line?.level, 'fatal')
      assert.equal(line?.msg, `cannot listen (PORT, HOST): listen EADDRINUSE: address already in use 127.0.0.1:${port}`)
      assert.doesNotMatch(JSON.stringify(server.logs), /\n\s+at /, 'no stack trace')
      assert.equal(server.stderr(), '')
    } finally {
      blocker.close()
    }
  })
})
