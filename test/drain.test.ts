// Shutdown under load, on the real process: keep-alive clients hammer /health while SIGTERM
// arrives with SHUTDOWN_DELAY set. The accounting needs no clock: the service logs how many
// connections it accepted, so a connection the kernel refused after the listener closed (allowed)
// is told apart from one the service accepted and then lost (never allowed). Every answered
// request must have exactly one access-log line, none lost at exit.
import assert from 'node:assert/strict'
import { Agent, request } from 'node:http'
import type { Socket } from 'node:net'
import { it } from 'node:test'
import { spawnService } from './service.ts'

const clients = 16

interface Outcome {
  id: string
  socket: Socket | undefined
  /** first is true when the request was the first on its connection. */
  first: boolean
  status?: number
  connection?: string
  error?: string
}

/** answered counts, per client socket, the responses it carried; a socket absent never connected. */
const answered = new Map<Socket, number>()

function send(port: number, agent: Agent, id: string): Promise<Outcome> {
  return new Promise((resolve) => {
    const outcome: Outcome = { id, socket: undefined, first: true }
    const req = request({ port, host: '127.0.0.1', path: '/health', agent, headers: { 'x-request-id': id } }, (res) => {
      res.resume()
      res.on('end', () => {
        if (outcome.socket) answered.set(outcome.socket, (answered.get(outcome.socket) ?? 0) + 1)
        resolve({ ...outcome, status: res.statusCode, connection: res.headers.connection })
      })
      res.on('error', (err: NodeJS.ErrnoException) => resolve({ ...outcome, error: err.code ?? err.message }))
    })
    req.on('error', (err: NodeJS.ErrnoException) => resolve({ ...outcome, error: err.code ?? err.message }))
    req.on('socket', (socket: Socket) => {
      const track = () => {
        outcome.socket = socket
        outcome.first = !answered.has(socket)
        if (outcome.first) answered.set(socket, 0)
      }
      if (socket.connecting) socket.once('connect', track)
      else track()
    })
    req.end()
  })
}

it('loses no request and no log line when stopped under load', async () => {
  const service = spawnService({ HOST: '127.0.0.1', SHUTDOWN_DELAY: '1s' })
  const port = (await service.waitForLog((l) => l.msg === 'listening')).port as number
  const agent = new Agent({ keepAlive: true, maxSockets: clients })
  const outcomes: Outcome[] = []
  let signalled = false
  let stopped = false
  void service.waitForLog((l) => l.msg === 'stopped accepting connections').then(() => (stopped = true))
  const loops = Array.from({ length: clients }, async (_, client) => {
    for (let n = 0; ; n++) {
      const outcome = await send(port, agent, `load-${client}-${n}`)
      outcomes.push(outcome)
      // Past the delay the port is closed: one failure per client after that shows it, then stop.
      if (outcome.error !== undefined && stopped) return
      if (outcomes.length >= 400 && !signalled) {
        signalled = true
        service.kill('SIGTERM')
      }
    }
  })
  await Promise.all(loops)
  const { code } = await service.exit
  agent.destroy()
  assert.equal(code, 0, service.stderr())
  const logs = service.logs
  assert.ok(logs.some((l) => l.msg === 'shutdown complete'))

  // A request fails without loss only when it was the first on a connection the service never
  // accepted. Connections that carried an answer were accepted; so the service's count of accepted
  // connections must equal the number of client connections that carried an answer, and every
  // failure must be the first request of its connection.
  const accepted = logs.find((l) => l.msg === 'stopped accepting connections')?.accepted
  const carried = [...answered.values()].filter((count) => count > 0).length
  assert.equal(accepted, carried, 'connections accepted by the service but never answered')
  const lost = outcomes.filter((o) => o.error !== undefined && o.socket !== undefined && !o.first)
  assert.deepEqual(lost, [], 'requests failed on a connection that had been answered before')

  const ok = outcomes.filter((o) => o.status !== undefined)
  assert.ok(ok.every((o) => o.status === 200))
  const shutdownAt = logs.findIndex((l) => l.msg === 'shutdown started')
  const duringDelay = logs
    .slice(shutdownAt)
    .filter((l) => l.msg === 'request')
    .map((l) => l.requestId)
  assert.ok(duringDelay.length > 0, 'the service kept serving during the delay')
  const closeAnnounced = new Set(ok.filter((o) => o.connection === 'close').map((o) => o.id))
  assert.deepEqual(
    duringDelay.filter((id) => !closeAnnounced.has(String(id))),
    [],
    'answers in the delay say Connection: close',
  )

  // Every answered request has exactly one access-log line, and no line is left over.
  const lines = new Map<string, number>()
  for (const line of logs) {
    if (line.msg === 'request') lines.set(String(line.requestId), (lines.get(String(line.requestId)) ?? 0) + 1)
  }
  assert.deepEqual(
    ok.filter((o) => lines.get(o.id) !== 1),
    [],
    'answered requests without exactly one access-log line',
  )
  assert.equal(lines.size, ok.length, 'access-log lines for requests no client saw answered')
  assert.ok(ok.length >= 400, `${ok.length} requests answered`)
})
