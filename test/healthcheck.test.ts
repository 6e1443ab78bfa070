// cmd/healthcheck/main.js as Docker's HEALTHCHECK runs it: a child process with the service's
// environment, judged by its exit code alone.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { once } from 'node:events'
import { type Server, type Socket, createServer } from 'node:net'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { startService } from './service.ts'

const healthcheck = fileURLToPath(new URL('../cmd/healthcheck/main.ts', import.meta.url))

/** check runs the healthcheck with env and resolves with its exit code and output. */
function check(env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [healthcheck], { env: { PATH: process.env.PATH, ...env } }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr })
    })
  })
}

async function listen(server: Server): Promise<number> {
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return (server.address() as { port: number }).port
}

describe('the healthcheck', () => {
  it('exits 0 when /health answers 200 on PORT', async (t) => {
    const service = await startService(t)
    const result = await check({ PORT: String(service.port) })
    assert.equal(result.code, 0, result.stderr)
    assert.equal(result.stdout, `healthy: GET http://127.0.0.1:${service.port}/health answered 200\n`)
    assert.ok(service.logs.some((line) => line.msg === 'request' && line.path === '/health'))
  })

  it('asks HOST when the service listens on one address only', async (t) => {
    const service = await startService(t, { HOST: '::1' })
    const result = await check({ PORT: String(service.port), HOST: '::1' })
    assert.equal(result.code, 0, result.stderr)
    assert.match(result.stdout, /GET http:\/\/\[::1\]:\d+\/health answered 200/)
  })

  it('exits 1 when /health answers anything but 200', async (t) => {
    const service = await startService(
      t,
      {},
      { routes: () => ({ '/health': { GET: (_, res) => void res.writeHead(503).end() } }) },
    )
    const result = await check({ PORT: String(service.port) })
    assert.equal(result.code, 1)
    assert.match(result.stdout, /unhealthy: .* answered 503/)
  })

  it('exits 1 when nothing listens on PORT', async () => {
    const server = createServer()
    const port = await listen(server)
    server.close()
    await once(server, 'close')
    const result = await check({ PORT: String(port) })
    assert.equal(result.code, 1)
    assert.match(result.stderr, /unhealthy: .*ECONNREFUSED/)
  })

  it('exits 1 within its timeout when the service accepts but never answers', async (t) => {
    const sockets = new Set<Socket>()
    const server = createServer((socket) => sockets.add(socket))
    const port = await listen(server)
    t.after(() => {
      for (const socket of sockets) socket.destroy()
      server.close()
    })
    const started = performance.now()
    const result = await check({ PORT: String(port) })
    assert.equal(result.code, 1)
    assert.match(result.stderr, /unhealthy: .*(timeout|aborted)/i)
    // Docker's HEALTHCHECK --timeout is 3s; the script must give up on its own before that.
    assert.ok(performance.now() - started < 3000, `took ${performance.now() - started} ms`)
  })

  it('exits 1 naming the problem when the configuration is invalid', async () => {
    const result = await check({ PORT: 'http' })
    assert.equal(result.code, 1)
    assert.match(result.stderr, /invalid configuration: Expected `PORT`/)
  })
})
