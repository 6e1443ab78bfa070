import type { AsyncLocalStorage } from 'node:async_hooks'
import { createServer, type IncomingMessage, type ServerOptions } from 'node:http'
import { newAccessLog } from './access-log.ts'
import { handleClientError, handleConnect } from './client-error.ts'
import type { Config } from './config.ts'
import { type Connections, type HTTPServer, latestResponse, newConnections } from './connections.ts'
import { sendProblem } from './json.ts'
import type { Logger, LogOutput, Warn } from './log.ts'
import { TrackedResponse } from './response.ts'
import { newRouter, type Routes } from './router.ts'
import { newIdSource, parseTraceparent } from './trace.ts'

/** RequestHooks let add-ons see every request; they run on the hot path, so they must be cheap. */
export interface RequestHooks {
  /** admit runs once the route is known; false means it answered the request itself (503, say). */
  admit?: (res: TrackedResponse) => boolean
  done?: (res: TrackedResponse) => void // when the response finished or was aborted
}

/** ServerDeps is what newServer needs; context makes the request's response reachable from any code it runs. */
export interface ServerDeps {
  log: Logger
  output: LogOutput
  routes: Routes
  context: AsyncLocalStorage<TrackedResponse>
  config: Pick<Config, 'headersTimeoutMs' | 'requestTimeoutMs' | 'keepAliveTimeoutMs' | 'maxHeaderBytes'>
  hooks?: RequestHooks[]
  warn: Warn // lines about misbehaving clients, within a shared budget
}

/** Listener is a node:http server with the connections it keeps and drains. */
export interface Listener extends Connections {
  readonly server: HTTPServer
}

const requestIdPattern = /^[\w.:-]{1,128}$/
const absoluteForm = /^https?:\/\/[^/?#]*/i

/**
 * newServer returns the HTTP server: it gives every request its ids, routes it, answers 400, 404,
 * 405 and malformed requests itself, runs the handler in the request's log context, turns a throw
 * into a logged 500, and writes one access-log line per request.
 */
export function newServer({ log, output, routes, context, config, hooks = [], warn }: ServerDeps): Listener {
  const route = newRouter(routes)
  const ids = newIdSource()
  const logAccess = newAccessLog(log, output)
  const admit = hooks.flatMap((hook) => hook.admit ?? [])
  const done = hooks.flatMap((hook) => hook.done ?? [])

  const server = createServer(options(config), onRequest)
  const connections = newConnections(server, log, warn, (res) => {
    logAccess(res)
    for (const hook of done) hook(res)
  })
  server.on('clientError', handleClientError(warn, ids.spanId))
  server.on('connect', handleConnect(warn, ids.spanId))

  function onRequest(req: IncomingMessage, res: TrackedResponse) {
    if (!connections.track(res)) return
    const parent = parseTraceparent(req.headers.traceparent)
    res.trace = { traceId: parent?.traceId ?? ids.traceId(), spanId: ids.spanId(), flags: parent?.flags ?? '00' }
    // Without a usable X-Request-Id the span id serves: unique per request, and already made.
    const id = req.headers['x-request-id']
    res.requestId = typeof id === 'string' && requestIdPattern.test(id) ? id : res.trace.spanId
    // While draining, only the latest request of a connection announces its close: handling waits
    // for a microtask, by which time Node has parsed every request pipelined in the same read.
    if (connections.draining) queueMicrotask(() => context.run(res, dispatch, req, res))
    else context.run(res, dispatch, req, res)
  }

  /** dispatch answers 400 for a target or Host it cannot take, 404 and 405, else runs the hooks and the handler. */
  function dispatch(req: IncomingMessage, res: TrackedResponse) {
    if (connections.draining && latestResponse(req.socket) === res) res.shouldKeepAlive = false
    const path = pathOf(req.url ?? '')
    res.path = path ?? req.url ?? ''
    const invalid = path === undefined ? 'The request target must be a path.' : checkHost(req)
    if (invalid !== undefined) {
      res.shouldKeepAlive = false
      return sendProblem(res, 400, invalid)
    }
    const match = route(res.path)
    if (match === undefined) return sendProblem(res, 404, 'There is nothing at this path.')
    if (match === 'malformed') return sendProblem(res, 400, 'The path holds a malformed percent-encoding.')
    res.route = match.route.template
    const handler = match.route.handlers.get(req.method ?? '')
    const { allow } = match.route
    if (handler === undefined) return sendProblem(res, 405, `This path answers ${allow}.`, { allow })
    for (const hook of admit) if (!hook(res)) return void (res.refused = true)
    try {
      const result = handler(req, res, match.params)
      if (result !== undefined) result.catch((err: unknown) => fail(log, res, err))
    } catch (err) {
      fail(log, res, err)
    }
  }

  return Object.assign(connections, { server })
}

/** options are node:http's: timeouts and size limits from config, and responses tracked. */
function options(config: ServerDeps['config']): ServerOptions<typeof IncomingMessage, typeof TrackedResponse> {
  return {
    ServerResponse: TrackedResponse,
    headersTimeout: config.headersTimeoutMs,
    requestTimeout: config.requestTimeoutMs,
    keepAliveTimeout: config.keepAliveTimeoutMs,
    maxHeaderSize: config.maxHeaderBytes,
    requireHostHeader: false, // answered in dispatch, as problem+json and logged
    // Node enforces the timeouts above only when it checks, every 30 s by default: check often
    // enough that a 1 s header timeout bites within about 1.5 s.
    connectionsCheckingInterval: Math.min(1000, Math.max(100, config.headersTimeoutMs / 2)),
  }
}

/** fail logs what a handler threw and answers 500, or cuts a response already under way. */
function fail(log: Logger, res: TrackedResponse, err: unknown) {
  log.error({ err, requestId: res.requestId, method: res.req.method, path: res.path }, 'handler failed')
  if (res.headersSent) {
    if (!res.writableEnded) res.destroy() // a half-sent response must not look complete
    return
  }
  for (const name of res.getHeaderNames()) res.removeHeader(name) // the 500 keeps none of the handler's
  sendProblem(res, 500, 'The server could not complete the request.')
}

/**
 * pathOf returns a request target's path without its query string, accepting the absolute-form
 * (`GET http://host/path`) as RFC 9112 says servers must; undefined for `*` and `host:port`.
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

/** checkHost returns why the Host header is unacceptable (RFC 9112 §3.2: exactly one in HTTP/1.1), or undefined. */
function checkHost(req: IncomingMessage): string | undefined {
  // Node keeps the first of several; only the raw list shows them all.
  let count = 0
  const raw = req.rawHeaders
  for (let i = 0; i < raw.length; i += 2) if (raw[i]?.length === 4 && raw[i]?.toLowerCase() === 'host') count++
  if (count > 1) return 'The request has more than one Host header.'
  if (count === 0 && req.httpVersion === '1.1') return 'The Host header is missing.'
  return undefined
}
