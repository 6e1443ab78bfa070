import { randomUUID } from 'node:crypto'
import { once } from 'node:events'
import { createServer, type IncomingMessage, type Server } from 'node:http'
import { type Logger, logAccess } from './log.ts'
import { sendProblem } from './problem.ts'
import { TrackedResponse } from './response.ts'
import type { Handler, Routes } from './routes.ts'

/** ServerDeps is what newServer needs. */
export interface ServerDeps {
  log: Logger
  routes: Routes
}

/** HTTPServer is the node:http server plus the controls shutdown needs. */
export interface HTTPServer {
  readonly server: Server<typeof IncomingMessage, typeof TrackedResponse>
  /** inflight holds the responses not yet finished or aborted. */
  readonly inflight: ReadonlySet<TrackedResponse>
  /** drain makes every response from now on, in flight or not yet arrived, carry `Connection: close`. */
  drain(): void
  /**
   * close stops accepting connections, closes idle ones at once, lets requests in flight finish
   * with `Connection: close`, and closes their sockets right after. It resolves once every
   * connection is gone.
   */
  close(): Promise<void>
  /** destroy stops listening and cuts every remaining connection, for when the drain is cut short. */
  destroy(): void
}

const requestIdPattern = /^[\w.:-]{1,128}$/

/**
 * newServer returns the HTTP server: it routes each request by exact path and method, answers
 * 404 and 405 itself, stamps a request id and `X-Content-Type-Options` on every response, turns
 * whatever a handler throws into a logged 500, and writes one access-log line per request.
 */
export function newServer({ log, routes }: ServerDeps): HTTPServer {
  const table = compileRoutes(routes)
  const inflight = new Set<TrackedResponse>()
  let draining = false
  let closing = false

  // One listener shared by every response ('this' is the response), so no closure per request.
  function onClose(this: TrackedResponse) {
    inflight.delete(this)
    logAccess(log, this)
    // Node's gap: a keep-alive response in flight when close() was called leaves its socket open
    // until keepAliveTimeout. Once the server stops accepting, no socket outlives its response.
    if (closing) this.req.socket.destroySoon()
  }

  function fail(res: TrackedResponse, err: unknown) {
    log.error({ err, requestId: res.requestId, method: res.req.method, url: res.req.url }, 'handler failed')
    if (res.headersSent) {
      if (!res.writableEnded) res.destroy() // a half-sent response must not look complete
      return
    }
    for (const name of res.getHeaderNames()) {
      if (name !== 'x-request-id' && name !== 'x-content-type-options') res.removeHeader(name)
    }
    sendProblem(res, 500, 'The server could not complete the request.')
  }

  function onRequest(req: IncomingMessage, res: TrackedResponse) {
    inflight.add(res)
    res.on('close', onClose)
    const id = req.headers['x-request-id']
    res.requestId = typeof id === 'string' && requestIdPattern.test(id) ? id : randomUUID()
    res.setHeader('x-request-id', res.requestId)
    res.setHeader('x-content-type-options', 'nosniff')
    if (draining) res.shouldKeepAlive = false

    const url = req.url ?? '/'
    const query = url.indexOf('?')
    const route = table.get(query === -1 ? url : url.slice(0, query))
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
    { ServerResponse: TrackedResponse },
    onRequest,
  )

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
      server.close()
      server.closeIdleConnections()
      await closed
    },
    destroy() {
      closing = true
      server.close()
      server.closeAllConnections()
    },
  }
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
