import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import type { IncomingMessage, Server } from 'node:http'
import { Server as NetServer, type Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger, Warn } from './log.ts'
import type { TrackedResponse } from './response.ts'

/** HTTPServer is the node:http server of one listener, its responses tracked. */
export type HTTPServer = Server<typeof IncomingMessage, typeof TrackedResponse>

/** Connections is what the service knows of a listener's connections and requests, and how it drains them. */
export interface Connections {
  /** inflight counts the requests received and not yet answered or abandoned. */
  readonly inflight: number
  /** connections counts the open connections. */
  readonly connections: number
  /** draining is true once drain() was called. */
  readonly draining: boolean
  /** requests lists the requests in flight, oldest first on each connection. */
  requests(): Iterable<TrackedResponse>
  /** drain makes every connection close after the latest request it has received is answered. */
  drain(): void
  /**
   * close stops accepting connections, closes idle ones and those that sent nothing, lets requests
   * in flight finish and closes their sockets right after. It resolves once every connection is
   * gone; bound it with a timeout.
   */
  close(): Promise<void>
  /** destroy cuts every connection and resolves once the cut responses have closed (and were logged). */
  destroy(): Promise<void>
}

// Node parses a whole read (up to 64 KiB, over a thousand small requests) before it pauses, and
// queues an answer for each. Past this many unanswered requests the connection is cut: what one
// connection can make the service hold is this many responses (README.md, Hostile input).
export const maxPipelined = 16
// How long the drain waits for just-accepted connections to send their first request.
const settleMs = 1000
const queued = Symbol('queued') // the connection's responses in flight, oldest first
const latest = Symbol('latest') // the latest response admitted on the connection
type TrackedSocket = Socket & { [queued]: TrackedResponse[]; [latest]: TrackedResponse | undefined }

/**
 * connectionBudget returns the default MAX_CONNECTIONS: the soft limit on open files less a tenth
 * (at least 32), kept for the service's own files, so the service refuses connections and says so
 * before libuv, out of descriptors, closes them itself and tells nobody. Infinity where unknown.
 */
export function connectionBudget(limits = '/proc/self/limits'): number {
  try {
    const soft = /^Max open files\s+(\d+)/m.exec(readFileSync(limits, 'utf8'))?.[1]
    return soft === undefined ? Infinity : Number(soft) - Math.max(32, Math.ceil(Number(soft) / 10))
  } catch {
    return Infinity
  }
}

/**
 * newConnections tracks server's connections and requests. track() must see every request first:
 * false means the request must not be handled (its connection was cut, or announced its close);
 * onDone is called once per tracked response, when it closes.
 */
export function newConnections(
  server: HTTPServer,
  log: Logger,
  warn: Warn,
  onDone: (res: TrackedResponse) => void,
): Connections & { track(res: TrackedResponse): boolean } {
  const state = watch(server, warn)
  const sockets = state.sockets
  let inflight = 0
  let draining = false
  let closing = false
  let whenIdle = () => {}
  // One listener shared by every response ('this' is the response): no closure per request.
  function onClose(this: TrackedResponse) {
    const responses = (this.req.socket as TrackedSocket)[queued]
    const i = responses.indexOf(this)
    if (i === -1) return // closed already, by closeQueued
    if (i === 0) responses.shift()
    else responses.splice(i, 1)
    this.closedAt = performance.now()
    if (--inflight === 0) whenIdle()
    onDone(this)
    // Node leaves a keep-alive socket whose response was in flight at close() open until
    // keepAliveTimeout. Once the server stops accepting, no socket outlives its response.
    if (closing) this.req.socket.destroySoon()
  }
  return {
    get inflight() {
      return inflight
    },
    get connections() {
      return sockets.size
    },
    get draining() {
      return draining
    },
    *requests() {
      for (const socket of sockets) yield* socket[queued]
    },
    track(res) {
      const socket = res.req.socket as TrackedSocket
      const previous = socket[latest]
      // Nothing after a response that announced the connection's close (RFC 9112 §9.6).
      if (socket.destroyed || (previous !== undefined && !previous.shouldKeepAlive)) return cut(res)
      if (socket[queued].length >= maxPipelined) {
        warn({ remoteAddr: socket.remoteAddress, maxPipelined }, 'connection cut: too many pipelined requests')
        socket.destroy()
        return cut(res)
      }
      socket[latest] = res
      socket[queued].push(res)
      inflight++
      res.on('close', onClose)
      return true
    },
    drain() {
      draining = true
      // A response whose headers are out closes its socket in onClose, once closing.
      for (const socket of sockets) if (socket[latest]?.headersSent === false) socket[latest].shouldKeepAlive = false
    },
    close() {
      closing = true
      return stopAccepting(server, log, state, () => inflight)
    },
    async destroy() {
      closing = true
      const idle = inflight === 0 ? Promise.resolve() : new Promise<void>((resolve) => (whenIdle = resolve))
      server.close()
      server.closeAllConnections()
      await idle
    },
  }
}

/**
 * watch counts server's connections and keeps the open ones. It logs the connections server refuses (past
 * MAX_CONNECTIONS) or fails to accept (ENFILE...: Node would throw those once listening, stopping
 * the service), and closes the responses Node 22 leaves queued behind a closed connection.
 */
function watch(server: HTTPServer, warn: Warn) {
  const state = { sockets: new Set<TrackedSocket>(), accepted: 0 }
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

/**
 * stopAccepting closes the listener without losing a connection the kernel already completed,
 * closes idle connections and those that sent nothing, and resolves once every connection is gone.
 */
async function stopAccepting(server: HTTPServer, log: Logger, state: ReturnType<typeof watch>, inflight: () => number) {
  const { sockets } = state
  const closed = once(server, 'close')
  // net's close, not http's: http's also destroys connections that have not sent a request yet,
  // among them those just accepted whose request is on its way.
  NetServer.prototype.close.call(server)
  // The count is final now: with it a client tells a refused connection from a lost one.
  log.info({ inflight: inflight(), accepted: state.accepted }, 'stopped accepting connections')
  // Give connections just accepted a moment to send their first request.
  const deadline = performance.now() + settleMs
  while (performance.now() < deadline && [...sockets].some((s) => s.bytesRead === 0)) await sleep(5)
  for (const socket of sockets) if (socket.bytesRead === 0) socket.destroy()
  server.close() // http's close now: it closes the idle connections and stops Node's timeout checks
  await closed
}

/** closeQueued closes the responses still queued on socket, which closed: Node 22 never does. */
function closeQueued(socket: TrackedSocket) {
  for (const res of socket[queued].slice()) {
    // a copy: each close takes one out
    res.destroy()
    res.emit('close')
  }
}

/** cut abandons res without an answer or a log line, and returns false for track(). */
function cut(res: TrackedResponse): false {
  res.destroy()
  return false
}

/** closeAfter makes res announce its connection's close if it answers the latest request there. */
export function closeAfter(res: TrackedResponse) {
  if ((res.req.socket as TrackedSocket)[latest] === res) res.shouldKeepAlive = false
}

/** latestResponse returns the response to the latest request received on socket, if any. */
export function latestResponse(socket: Socket): TrackedResponse | undefined {
  return (socket as TrackedSocket)[latest]
}
