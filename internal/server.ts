import type { AsyncLocalStorage } from 'node:async_hooks'
import { once } from 'node:events'
import { createServer, type IncomingMessage, type Server } from 'node:http'
import { Server as NetServer, type Socket } from 'node:net'
import { handleClientError, handleConnect, newLogLimiter } from './client-error.ts'
import type { Config } from './config.ts'
import { type Inflight, newInflight } from './inflight.ts'
import { type Logger, newAccessLog } from './log.ts'
import { sendProblem } from './problem.ts'
import { TrackedResponse } from './response.ts'
import type { Handler, Routes } from './routes.ts'
import { newIdSource, parseTraceparent } from './trace.ts'

/** ServerDeps is what newServer needs. */
export interface ServerDeps {
  log: Logger
  routes: Routes
  /** context makes the response of the request being handled reachable from any code it runs. */
  context: AsyncLocalStorage<TrackedResponse>
  config: Pick<Config, 'headersTimeoutMs' | 'requestTimeoutMs' | 'keepAliveTimeoutMs' | 'maxHeaderBytes'>
}

/** HTTPServer is the node:http server plus the controls shutdown needs. */
export interface HTTPServer {
  readonly server: Server<typeof IncomingMessage, typeof TrackedResponse>
  /** inflight holds the responses not yet finished or aborted. */
  readonly inflight: Pick<Inflight, 'size' | typeof Symbol.iterator>
  /** drain makes every response from now on, in flight or not yet arrived, carry `Connection: close`. */
  drain(): void
  /**
   * close stops accepting connections, closes idle ones, lets requests in flight finish with
   * `Connection: close`, and closes their sockets right after. It resolves once every connection
   * is gone; bound it with a timeout.
   */
  close(): Promise<void>
  /** connections resolves with the number of open connections. */
  connections(): Promise<number>
  /** destroy stops listening and cuts every remaining connection, for when the drain is cut short. */
  destroy(): void
}

const requestIdPattern = /^[\w.:-]{1,128}$/
const absoluteForm = /^https?:\/\/[^/?#]*/i
// How long the drain waits for just-accepted connections to send their request, and for ended
// responses to reach the kernel, before closing idle connections.
const settleGraceMs = 1000

/**
 * newServer returns the HTTP server: it routes each request by exact path and method, answers
 * 404, 405 and malformed requests itself, gives every request its ids (request id, trace
 * context), runs its handler in the request context the logger reads, turns whatever a handler
 * throws into a logged 500, and writes one access-log line per request. Its timeouts and size
 * limits come from config.
 */
export function newServer({ log, routes, context, config }: ServerDeps): HTTPServer {
  const table = compileRoutes(routes)
  const ids = newIdSource()
  const logAccess = newAccessLog(log)
  const inflight = newInflight()
  let draining = false
  let closing = false

  // One listener shared by every response ('this' is the response), so no closure per request.
  function onClose(this: TrackedResponse) {
    inflight.delete(this)
    logAccess(this)
    // Node's gap: a keep-alive response in flight when close() was called leaves its socket open
    // until keepAliveTimeout. Once the server stops accepting, no socket outlives its response.
    if (closing) this.req.socket.destroySoon()
  }

  function fail(res: TrackedResponse, err: unknown) {
    log.error({ err, requestId: res.requestId, method: res.req.method, path: res.path }, 'handler failed')
    if (res.headersSent) {
      if (!res.writableEnded) res.destroy() // a half-sent response must not look complete
      return
    }
    for (const name of res.getHeaderNames()) res.removeHeader(name) // the 500 keeps none of the handler's
    sendProblem(res, 500, 'The server could not complete the request.')
  }

  function onRequest(req: IncomingMessage, res: TrackedResponse) {
    inflight.add(res)
    res.on('close', onClose)
    const parent = parseTraceparent(req.headers.traceparent)
    res.trace = { traceId: parent?.traceId ?? ids.traceId(), spanId: ids.spanId(), flags: parent?.flags ?? '00' }
    // Without a usable X-Request-Id the span id serves: unique per request, and already made.
    const id = req.headers['x-request-id']
    res.requestId = typeof id === 'string' && requestIdPattern.test(id) ? id : res.trace.spanId
    if (draining) res.shouldKeepAlive = false
    context.run(res, dispatch, req, res)
  }

  function dispatch(req: IncomingMessage, res: TrackedResponse) {
    const url = req.url ?? ''
    const path = pathOf(url)
    res.path = path ?? url
    // Answered here rather than by Node (requireHostHeader) so the answer is problem+json and logged.
    if (path === undefined || (req.headers.host === undefined && req.httpVersion === '1.1')) {
      res.shouldKeepAlive = false
      return sendProblem(
        res,
        400,
        path === undefined ? 'The request target must be a path.' : 'The Host header is missing.',
      )
    }
    const route = table.get(path)
    if (route === undefined) return sendProblem(res, 404, 'There is nothing at this path.')
    const handler = route.handlers.get(req.method ?? '')
    if (handler === undefined) {
      return sendProblem(res, 405, `This path answers ${route.allow}.`, { allow: route.allow })
    }
    try {
      const result = handler(req, res)
      if (result !== undefined) result.catch((err: unknown) => fail(res, err))
    } catch (err) {
      fail(res, err)
    }
  }

  const server = createServer<typeof IncomingMessage, typeof TrackedResponse>(
    {
      ServerResponse: TrackedResponse,
      headersTimeout: config.headersTimeoutMs,
      requestTimeout: config.requestTimeoutMs,
      keepAliveTimeout: config.keepAliveTimeoutMs,
      maxHeaderSize: config.maxHeaderBytes,
      requireHostHeader: false,
      // Node enforces the timeouts above only when it checks, every 30 s by default: check often
      // enough that a 1 s header timeout bites within about 1.5 s.
      connectionsCheckingInterval: Math.min(1000, Math.max(100, config.headersTimeoutMs / 2)),
    },
    onRequest,
  )
  /** busySockets returns the sockets whose response is still being written by a handler. */
  function busySockets(): Set<Socket> {
    const busy = new Set<Socket>()
    for (const res of inflight) if (!res.writableEnded) busy.add(res.req.socket)
    return busy
  }

  const sockets = new Set<Socket>()
  server.on('connection', (socket: Socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  const limiter = newLogLimiter(10, 1000)
  server.on('clientError', handleClientError(log, limiter, ids.spanId))
  server.on('connect', handleConnect(log, limiter, ids.spanId))

  return {
    server,
    inflight,
    drain() {
      draining = true
      // Responses whose headers are already out close their socket in onClose, once closing.
      for (const res of inflight) if (!res.headersSent) res.shouldKeepAlive = false
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
      log.info({ inflight: inflight.size }, 'stopped accepting connections')
      // Node's closeIdleConnections() destroys every connection without a request in progress,
      // which includes two kinds that are not idle: just-accepted connections whose request is
      // still on its way, and connections whose response has ended but is still being flushed.
      // Wait, briefly, until neither kind is left; then closing the idle ones loses nothing.
      const deadline = performance.now() + settleGraceMs
      while (performance.now() < deadline && [...sockets].some(isUnsettled, busySockets())) {
        await new Promise((resolve) => setTimeout(resolve, 5))
      }
      server.closeIdleConnections()
      await closed
      server.close() // lets Node release its own connection tracking
      const dropped = limiter.dropped()
      if (dropped > 0) log.warn({ dropped }, 'malformed requests left out of the log')
    },
    connections() {
      return new Promise((resolve) => server.getConnections((err, count) => resolve(err ? 0 : count)))
    },
    destroy() {
      closing = true
      server.close()
      server.closeAllConnections()
    },
  }
}

/**
 * pathOf returns the path of a request target without its query string. It accepts the
 * absolute-form (`GET http://host/path`) that RFC 9112 says servers must accept, and returns
 * undefined for anything else that is not a path (`*`, `host:port`).
 */
export function pathOf(target: string): string | undefined {
  if (target.charCodeAt(0) !== 47 /* / */) {
    const origin = absoluteForm.exec(target)
    if (origin === null) return undefined
    target = target.slice(origin[0].length)
    if (target.charCodeAt(0) !== 47) target = `/${target}`
  }
  const query = target.indexOf('?')
  return query === -1 ? target : target.slice(0, query)
}

/** isUnsettled tells whether socket, unless busy (in `this`), is neither idle nor closing cleanly. */
function isUnsettled(this: Set<Socket>, socket: Socket): boolean {
  if (this.has(socket)) return false
  return socket.bytesRead === 0 || socket.writableLength > 0 || (socket.writableEnded && !socket.destroyed)
}

interface Route {
  handlers: Map<string, Handler>
  allow: string
}

/** compileRoutes turns the route table into a lookup map, adding HEAD wherever GET is served. */
function compileRoutes(routes: Routes): Map<string, Route> {
  const table = new Map<string, Route>()
  for (const [path, methods] of Object.entries(routes)) {
    const handlers = new Map<string, Handler>(Object.entries(methods))
    const get = handlers.get('GET')
    if (get !== undefined && !handlers.has('HEAD')) handlers.set('HEAD', get)
    table.set(path, { handlers, allow: [...handlers.keys()].join(', ') })
  }
  return table
}
