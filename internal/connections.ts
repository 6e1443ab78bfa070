import { once } from 'node:events'
import { existsSync, readFileSync } from 'node:fs'
import type { IncomingMessage, Server } from 'node:http'
import { Server as NetServer, type Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger, Warn } from './log.ts'
import type { TrackedResponse } from './response.ts'

/** HTTPServer is the node:http server of one listener, its responses tracked. */
export type HTTPServer = Server<typeof IncomingMessage, typeof TrackedResponse>

/**
 * Connections is a listener's connections and requests in flight: drain() makes each connection
 * close after its latest request; close() stops accepting and resolves once every connection
 * closed (bound it with a timeout); destroy() cuts them all.
 */
export type Connections = Readonly<Omit<ReturnType<typeof newConnections>, 'track'>>

// Node parses a whole read (up to 64 KiB, over a thousand small requests) and queues an answer for
// each: past this many the connection is cut, bounding what one holds (README.md, Hostile input).
const maxPipelined = 16
const settleMs = 1000 // how long close() waits for a connection just accepted to send its request
const queued = Symbol('queued') // the connection's responses in flight, oldest first
const latest = Symbol('latest') // the latest response admitted on the connection
type TrackedSocket = Socket & { [queued]: TrackedResponse[]; [latest]: TrackedResponse | undefined }

/**
 * connectionBudget returns the default MAX_CONNECTIONS: the soft limit on open files less a tenth
 * (at least 32), so the service refuses connections, and says so, before it runs out of descriptors.
 */
export function connectionBudget(limits = '/proc/self/limits'): number {
  const text = existsSync(limits) ? readFileSync(limits, 'utf8') : ''
  const soft = Number(/^Max open files\s+(\d+)/m.exec(text)?.[1] ?? NaN)
  return soft >= 0 ? soft - Math.max(32, Math.ceil(soft / 10)) : Infinity
}

/** newConnections tracks server's connections; track(res) false means: do not handle it. onDone hears each close. */
export function newConnections(server: HTTPServer, log: Logger, warn: Warn, onDone: (res: TrackedResponse) => void) {
  const state = watch(server, warn)
  let whenIdle = () => {}
  let idle: Promise<void> | undefined // what destroy() waits for, however often it is called
  // One listener for every response ('this'): no closure per request.
  function onClose(this: TrackedResponse) {
    const responses = (this.req.socket as TrackedSocket)[queued]
    const i = responses.indexOf(this)
    if (i === -1) return // closed already
    if (i === 0) responses.shift()
    else responses.splice(i, 1)
    this.closedAt = performance.now()
    if (--connections.inflight === 0) whenIdle()
    onDone(this)
    // Node keeps a keep-alive connection open after its response, even once the server is closed.
    if (state.closing) this.req.socket.destroySoon()
  }
  const connections = {
    inflight: 0,
    draining: false,
    get connections() {
      return state.sockets.size
    },
    *requests(): Iterable<TrackedResponse> {
      for (const socket of state.sockets) yield* socket[queued]
    },
    track(res: TrackedResponse): boolean {
      if (!admit(res, warn)) return false
      connections.inflight++
      res.on('close', onClose)
      return true
    },
    drain() {
      connections.draining = true
      // A response already under way closes its connection in onClose.
      for (const socket of state.sockets)
        if (socket[latest]?.headersSent === false) socket[latest].shouldKeepAlive = false
    },
    close: () => stopAccepting(server, log, state, () => connections.inflight),
    destroy(): Promise<void> {
      state.closing = true
      server.close()
      server.closeAllConnections()
      idle ??= connections.inflight === 0 ? Promise.resolve() : new Promise((resolve) => (whenIdle = resolve))
      return idle
    },
  }
  return connections
}

/** admit queues res on its connection, or abandons it unanswered (false) when the connection is cut. */
function admit(res: TrackedResponse, warn: Warn): boolean {
  const socket = res.req.socket as TrackedSocket
  // Nothing after a response that announced the connection's close (RFC 9112 §9.6).
  const cut = socket.destroyed || socket[latest]?.shouldKeepAlive === false
  if (!cut && socket[queued].length >= maxPipelined) {
    warn({ remoteAddr: socket.remoteAddress, maxPipelined }, 'connection cut: too many pipelined requests')
    socket.destroy()
  }
  if (cut || socket.destroyed) {
    res.destroy()
    return false
  }
  socket[latest] = res
  socket[queued].push(res)
  return true
}

/** stopAccepting closes the listener and the idle connections, and resolves once every connection closed. */
async function stopAccepting(server: HTTPServer, log: Logger, state: ReturnType<typeof watch>, inflight: () => number) {
  state.closing = true
  const closed = once(server, 'close')
  // Closing the listener resets the connections the kernel completed and Node has not accepted
  // yet; the event loop's poll phase, before setImmediate, accepts them first.
  await new Promise((resolve) => setImmediate(resolve))
  // net's close, not http's: on Node 26 that destroys the connections whose request is on its way.
  NetServer.prototype.close.call(server)
  // The count is final now: with it a client tells a refused connection from a lost one.
  log.info({ inflight: inflight(), accepted: state.accepted }, 'stopped accepting connections')
  const deadline = performance.now() + settleMs
  while (performance.now() < deadline && [...state.sockets].some((s) => s.bytesRead === 0)) await sleep(5)
  for (const socket of state.sockets) if (socket.bytesRead === 0) socket.destroy()
  server.close() // http's close now: it closes the idle connections and stops Node's timeout checks
  await closed
}

/** watch keeps server's connections, counts them, logs those refused or not accepted (ENFILE: Node would throw). */
function watch(server: HTTPServer, warn: Warn) {
  const state = { sockets: new Set<TrackedSocket>(), accepted: 0, closing: false }
  server.on('connection', (socket: TrackedSocket) => {
    socket[queued] = []
    socket[latest] = undefined
    state.accepted++
    state.sockets.add(socket)
    socket.once('close', () => {
      state.sockets.delete(socket)
      if (socket[queued].length > 0) setImmediate(closeQueued, socket)
    })
  })
  server.once('listening', () => {
    server.on('error', (err: NodeJS.ErrnoException) => warn({ code: err.code }, 'connection not accepted'))
  })
  server.on('drop', (data?: { remoteAddress?: string }) => {
    const fields = { remoteAddr: data?.remoteAddress, maxConnections: server.maxConnections }
    warn(fields, 'connection refused: MAX_CONNECTIONS are open')
  })
  return state
}

/** closeQueued closes the responses still queued on socket, which closed: Node 22 never does. */
function closeQueued(socket: TrackedSocket) {
  for (const res of socket[queued].slice()) res.destroy().emit('close') // a copy: each close takes one out
}

/** latestResponse returns the response to the latest request received on socket, if any. */
export function latestResponse(socket: Socket): TrackedResponse | undefined {
  return (socket as TrackedSocket)[latest]
}
