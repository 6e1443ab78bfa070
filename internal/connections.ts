import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import type { IncomingMessage, Server } from 'node:http'
import { Server as NetServer, type Socket } from 'node:net'
import { type LogLimiter, newWarn, type Warn } from './client-error.ts'
import type { Logger } from './log.ts'
import type { TrackedResponse } from './response.ts'

/** Connections is what the service knows of its connections and requests, and how it drains them. */
export interface Connections {
  /** inflight counts the requests received and not yet answered or abandoned. */
  readonly inflight: { readonly size: number } & Iterable<TrackedResponse>
  /** count resolves with the number of open connections. */
  count(): Promise<number>
  /** draining is true once drain() was called. */
  readonly draining: boolean
  /** drain makes every connection close after the latest request it has received is answered. */
  drain(): void
  /**
   * close stops accepting connections, closes idle ones and those that sent nothing, lets requests
   * in flight finish and closes their sockets right after. It resolves once every connection is
   * gone; bound it with a timeout.
   */
  close(): Promise<void>
  /**
   * destroy stops listening and cuts every remaining connection, for when the drain is cut short.
   * It resolves once the cut responses have closed, and so written their access-log lines.
   */
  destroy(): Promise<void>
}

// A client may pipeline requests without reading the answers; Node parses a whole read (up to
// 64 KiB, over a thousand small requests) before it pauses, and queues every answer in memory. Past
// this many unanswered requests the connection is cut: that bounds what one connection can make
// the service hold to this many responses (README.md, Hostile input).
export const maxPipelined = 16
// How long the drain waits for just-accepted connections to send their request, and for ended
// responses to reach the kernel, before closing the connections that are left idle.
const settleMs = 1000
const unanswered = Symbol('unanswered')
const last = Symbol('last')

type TrackedSocket = Socket & { [unanswered]: number; [last]: TrackedResponse | undefined }

/** lastResponse returns the response to the latest request received on socket, if any. */
export function lastResponse(socket: Socket): TrackedResponse | undefined {
  return (socket as TrackedSocket)[last]
}

/**
 * connectionBudget returns how many connections the service may hold open: the soft limit on open
 * file descriptors (Linux: /proc/self/limits) less a tenth, at least 32, kept for the service's
 * own files, listeners and logs. Past it, Node closes new connections and emits 'drop', which is
 * logged; without the budget, libuv would accept and close them itself and tell nobody (its EMFILE
 * trick). Infinity where the limit cannot be read.
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
 * newConnections tracks server's connections and requests in flight. track() must see every
 * request first: it returns false when the request must not be handled (its connection was cut or
 * had announced its close); onDone is called once per tracked response, when it closes.
 */
export function newConnections(
  server: Server<typeof IncomingMessage, typeof TrackedResponse>,
  log: Logger,
  limiter: LogLimiter,
  onDone: (res: TrackedResponse) => void,
): Connections & { track(res: TrackedResponse): boolean } {
  const warn = newWarn(log, limiter)
  const state = { server, log, limiter, warn, inflight: newInflight(), sockets: new Set<TrackedSocket>(), accepted: 0 }
  let draining = false
  let closing = false
  watch(state)
  // One listener shared by every response ('this' is the response), so no closure per request.
  function onClose(this: TrackedResponse) {
    if (!state.inflight.delete(this)) return // closed already, by closeQueued
    this.closedAt = performance.now()
    ;(this.req.socket as TrackedSocket)[unanswered]--
    onDone(this)
    // Node's gap: a keep-alive response in flight when close() was called leaves its socket open
    // until keepAliveTimeout. Once the server stops accepting, no socket outlives its response.
    if (closing) this.req.socket.destroySoon()
  }
  return {
    inflight: state.inflight,
    track(res) {
      if (!admit(state, res)) return false
      state.inflight.add(res)
      res.on('close', onClose)
      return true
    },
    get draining() {
      return draining
    },
    count: () => new Promise((resolve) => server.getConnections((err, count) => resolve(err ? 0 : count))),
    drain() {
      draining = true
      // Responses whose headers are already out close their socket in onClose, once closing.
      for (const res of state.inflight) if (!res.headersSent) closeAfter(res)
    },
    close() {
      closing = true
      return stopAccepting(state)
    },
    destroy() {
      closing = true
      return cutAll(state)
    },
  }
}

type State = {
  server: Server<typeof IncomingMessage, typeof TrackedResponse>
  log: Logger
  limiter: LogLimiter
  warn: Warn
  inflight: ReturnType<typeof newInflight>
  sockets: Set<TrackedSocket>
  accepted: number
}

/**
 * watch counts and tracks the connections server accepts, and logs those it refuses (past
 * MAX_CONNECTIONS) or fails to accept (ENFILE, ENOBUFS...: Node would throw those once listening,
 * stopping the service; they are logged instead, and the service goes on serving).
 */
function watch(state: State) {
  const { server, warn } = state
  server.on('connection', (socket: TrackedSocket) => {
    socket[unanswered] = 0
    socket[last] = undefined
    state.accepted++
    state.sockets.add(socket)
    socket.once('close', () => {
      state.sockets.delete(socket)
      if (socket[unanswered] > 0) setImmediate(closeQueued, state, socket)
    })
  })
  server.once('listening', () => {
    server.on('error', (err: NodeJS.ErrnoException) => warn({ code: err.code }, 'connection not accepted'))
  })
  server.on('drop', (data?: { remoteAddress?: string }) => {
    const fields = { remoteAddr: data?.remoteAddress, maxConnections: server.maxConnections }
    warn(fields, 'connection refused: MAX_CONNECTIONS are open')
  })
}

/** cutAll stops listening and cuts every connection; it resolves once the cut responses have closed. */
async function cutAll({ server, inflight, sockets }: State): Promise<void> {
  const cut = [...inflight].map((res) => once(res, 'close'))
  server.close()
  server.closeAllConnections()
  for (const socket of sockets) socket.destroy()
  await Promise.all(cut)
}

/**
 * admit tells whether the request res answers may be handled: not after a response that announced
 * its connection's close (RFC 9112 §9.6: the client sends it again elsewhere), nor past
 * maxPipelined unanswered requests on one connection, which is then cut.
 */
function admit(state: State, res: TrackedResponse): boolean {
  const socket = res.req.socket as TrackedSocket
  const previous = socket[last]
  if (socket.destroyed || (previous !== undefined && !previous.shouldKeepAlive)) return cut(res)
  socket[last] = res
  if (++socket[unanswered] <= maxPipelined) return true
  state.warn({ remoteAddr: socket.remoteAddress, maxPipelined }, 'connection cut: too many pipelined requests')
  socket.destroy()
  return cut(res)
}

/**
 * stopAccepting closes the listener without losing a connection the kernel already completed,
 * closes idle connections and those that sent nothing, and resolves once every connection is gone.
 */
async function stopAccepting(state: State): Promise<void> {
  const { server, log, limiter, inflight, sockets } = state
  const closed = once(server, 'close')
  // Connections the kernel has completed but Node has not accepted yet would be reset by closing
  // the listener now; the poll phase before setImmediate accepts them first.
  await new Promise((resolve) => setImmediate(resolve))
  // net's close, not http's: http's would also destroy every connection that has not sent a
  // request yet, including those just accepted whose request is still on its way.
  NetServer.prototype.close.call(server)
  // accepted is final now: with it, a client tells a connection refused from one lost.
  log.info({ inflight: inflight.size, accepted: state.accepted }, 'stopped accepting connections')
  // Node's closeIdleConnections() skips connections that never sent a byte (it counts them as
  // active) and destroys those whose ended response is still being flushed. Wait, briefly, until
  // neither kind is left; then close what is idle or silent, losing nothing.
  const deadline = performance.now() + settleMs
  while (performance.now() < deadline && [...sockets].some(isUnsettled)) {
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
  for (const socket of sockets) if (socket.bytesRead === 0) socket.destroy()
  server.closeIdleConnections()
  await closed
  server.close() // lets Node release its own connection tracking
  const dropped = limiter.dropped()
  if (dropped > 0) log.warn({ dropped }, 'lines about misbehaving clients left out of the log')
}

/**
 * closeQueued closes the responses still waiting behind another on socket, which has closed. Node
 * 24 and 26 close them themselves; Node 22 never does, and they would stay in flight, unlogged and
 * held in memory, for good. They are collected before any closes: closing one unlinks it.
 */
function closeQueued(state: State, socket: Socket) {
  const queued = [...state.inflight].filter((res) => res.req.socket === socket)
  for (const res of queued) {
    res.destroy()
    res.emit('close')
  }
}

/** cut abandons res without an answer or a log line, and returns false for track(). */
function cut(res: TrackedResponse): false {
  res.destroy()
  return false
}

/**
 * closeAfter makes res announce its connection's close (`Connection: close`) if it answers the
 * latest request received there: one pipelined behind it must still get its answer.
 */
export function closeAfter(res: TrackedResponse) {
  if ((res.req.socket as TrackedSocket)[last] === res) res.shouldKeepAlive = false
}

/** isUnsettled tells whether socket, with no request being handled, is still receiving or sending. */
function isUnsettled(socket: TrackedSocket): boolean {
  if (socket[unanswered] > 0) return false
  return socket.bytesRead === 0 || socket.writableLength > 0 || (socket.writableEnded && !socket.destroyed)
}

/**
 * newInflight returns the responses in flight as a doubly linked list threaded through the
 * responses themselves, so adding and removing allocate nothing. A Set here reallocated its table
 * every few dozen requests, and the tables that survived a scavenge tripled the mark-compact
 * pauses that set the p99 latency (BENCHMARKS.md).
 */
function newInflight() {
  let head: TrackedResponse | undefined
  let size = 0
  return {
    get size() {
      return size
    },
    add(res: TrackedResponse) {
      res.nextInflight = head
      if (head !== undefined) head.prevInflight = res
      head = res
      size++
    },
    /** delete removes res and says whether it was in the list. */
    delete(res: TrackedResponse): boolean {
      if (res.prevInflight !== undefined) res.prevInflight.nextInflight = res.nextInflight
      else if (head === res) head = res.nextInflight
      else return false
      if (res.nextInflight !== undefined) res.nextInflight.prevInflight = res.prevInflight
      res.prevInflight = undefined
      res.nextInflight = undefined
      size--
      return true
    },
    *[Symbol.iterator]() {
      for (let res = head; res !== undefined; res = res.nextInflight) yield res
    },
  }
}
