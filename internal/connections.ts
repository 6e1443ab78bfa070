import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import type { IncomingMessage, Server } from 'node:http'
import { Server as NetServer, type Socket } from 'node:net'
import type { LogLimiter } from './client-error.ts'
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
  const inflight = newInflight()
  const sockets = new Set<TrackedSocket>()
  let draining = false
  let closing = false
  let accepted = 0

  server.on('connection', (socket: TrackedSocket) => {
    socket[unanswered] = 0
    socket[last] = undefined
    accepted++
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  server.on('drop', (data?: { remoteAddress?: string }) => {
    const dropped = limiter.take()
    if (dropped !== undefined) {
      const fields = {
        remoteAddr: data?.remoteAddress,
        maxConnections: server.maxConnections,
        dropped: dropped || undefined,
      }
      log.warn(fields, 'connection refused: MAX_CONNECTIONS are open')
    }
  })

  // One listener shared by every response ('this' is the response), so no closure per request.
  function onClose(this: TrackedResponse) {
    inflight.delete(this)
    ;(this.req.socket as TrackedSocket)[unanswered]--
    onDone(this)
    // Node's gap: a keep-alive response in flight when close() was called leaves its socket open
    // until keepAliveTimeout. Once the server stops accepting, no socket outlives its response.
    if (closing) this.req.socket.destroySoon()
  }

  return {
    inflight,
    track(res) {
      const socket = res.req.socket as TrackedSocket
      const previous = socket[last]
      // After a response that announced the connection's close, no further request is processed
      // (RFC 9112 §9.6): the client knows to send it again elsewhere.
      if (socket.destroyed || (previous !== undefined && !previous.shouldKeepAlive)) return cut(res)
      socket[last] = res
      if (++socket[unanswered] > maxPipelined) {
        const dropped = limiter.take()
        const fields = { remoteAddr: socket.remoteAddress, maxPipelined, dropped: dropped || undefined }
        if (dropped !== undefined) log.warn(fields, 'connection cut: too many pipelined requests')
        socket.destroy()
        return cut(res)
      }
      inflight.add(res)
      res.on('close', onClose)
      return true
    },
    get draining() {
      return draining
    },
    count() {
      return new Promise((resolve) => server.getConnections((err, count) => resolve(err ? 0 : count)))
    },
    drain() {
      draining = true
      // Responses whose headers are already out close their socket in onClose, once closing.
      for (const res of inflight) if (!res.headersSent) closeAfter(res)
    },
    async close() {
      closing = true
      const closed = once(server, 'close')
      // Connections the kernel has completed but Node has not accepted yet would be reset by
      // closing the listener now; the poll phase before setImmediate accepts them first.
      await new Promise((resolve) => setImmediate(resolve))
      // net's close, not http's: http's would also destroy every connection that has not sent a
      // request yet, including those just accepted whose request is still on its way.
      NetServer.prototype.close.call(server)
      // accepted is final now: with it, a client tells a connection refused from one lost.
      log.info({ inflight: inflight.size, accepted }, 'stopped accepting connections')
      // Node's closeIdleConnections() skips connections that never sent a byte (it counts them as
      // active) and destroys those whose ended response is still being flushed. Wait, briefly,
      // until neither kind is left; then close what is idle or silent, losing nothing.
      const deadline = performance.now() + settleMs
      while (performance.now() < deadline && [...sockets].some(isUnsettled)) {
        await new Promise((resolve) => setTimeout(resolve, 5))
      }
      for (const socket of sockets) if (socket.bytesRead === 0) socket.destroy()
      server.closeIdleConnections()
      await closed
      server.close() // lets Node release its own connection tracking
      const dropped = limiter.dropped()
      if (dropped > 0) log.warn({ dropped }, 'malformed requests left out of the log')
    },
    async destroy() {
      closing = true
      const cut = [...inflight].map((res) => once(res, 'close'))
      server.close()
      server.closeAllConnections()
      for (const socket of sockets) socket.destroy()
      await Promise.all(cut)
    },
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
    delete(res: TrackedResponse) {
      if (res.prevInflight !== undefined) res.prevInflight.nextInflight = res.nextInflight
      else if (head === res) head = res.nextInflight
      else return // not in the list
      if (res.nextInflight !== undefined) res.nextInflight.prevInflight = res.prevInflight
      res.prevInflight = undefined
      res.nextInflight = undefined
      size--
    },
    *[Symbol.iterator]() {
      for (let res = head; res !== undefined; res = res.nextInflight) yield res
    },
  }
}
