import { STATUS_CODES, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { lastResponse } from './connections.ts'
import type { Logger } from './log.ts'

// What Node's parser reports, and what the client is told. Everything else is a 400.
const statusByCode: Record<string, number> = {
  ERR_HTTP_REQUEST_TIMEOUT: 408, // HEADERS_TIMEOUT or REQUEST_TIMEOUT ran out (slowloris)
  HPE_HEADER_OVERFLOW: 431, // request line plus headers above MAX_HEADER_SIZE, long URLs included
  HPE_CHUNK_EXTENSIONS_OVERFLOW: 413,
}

const details: Record<number, string> = {
  400: 'The request is not valid HTTP/1.1.',
  405: 'CONNECT is not supported.',
  408: 'The request took too long to arrive.',
  413: 'The request is too large.',
  431: 'The request line or headers are too large.',
}

/** LogLimiter lets through at most `limit` lines per window and counts the rest. */
export interface LogLimiter {
  /** take returns undefined when the line must be dropped, else how many were dropped before it. */
  take(): number | undefined
  /** dropped returns the count dropped since the last line let through, and resets it. */
  dropped(): number
}

/**
 * newLogLimiter returns a fixed-window limiter: a flood of bad requests costs at most `limit` log
 * lines per window, and the next line let through says how many were dropped.
 */
export function newLogLimiter(limit: number, windowMs: number, now = () => performance.now()): LogLimiter {
  let windowStart = -Infinity
  let used = 0
  let dropped = 0
  return {
    take() {
      const t = now()
      if (t - windowStart >= windowMs) {
        windowStart = t
        used = 0
      }
      if (used >= limit) {
        dropped++
        return undefined
      }
      used++
      return this.dropped()
    },
    dropped() {
      const before = dropped
      dropped = 0
      return before
    },
  }
}

/**
 * handleClientError answers what Node's parser rejects outside a handler (malformed syntax,
 * oversized headers, header timeouts) with a problem+json response written straight to the socket,
 * then releases the socket whatever the client does. It writes nothing where an answer would be one
 * the client cannot expect: in the middle of a response, after the answer to the request the bad
 * bytes belong to, or after a response that announced the connection's close. Clients that reset
 * or leave mid-request are dropped quietly; the rest are logged through warn. It never throws.
 */
export function handleClientError(warn: Warn, newId: () => string) {
  return (err: NodeJS.ErrnoException, socket: Duplex): void => {
    if (err.code === 'ECONNRESET' || err.code === 'EPIPE' || !socket.writable) return void socket.destroy()
    const status = statusByCode[err.code ?? ''] ?? 400
    const requestId = newId()
    if (isUnexpected(lastResponse(socket as Socket))) socket.destroy()
    else respond(socket, rawProblem(status, requestId))
    // A client that closes in the middle of its request went away; like a reset, that is not news.
    if (err.code === 'HPE_INVALID_EOF_STATE') return
    warn(
      { status, code: err.code, requestId, remoteAddr: (socket as Socket).remoteAddress },
      'rejected malformed request',
    )
  }
}

/**
 * isUnexpected tells whether an answer now, after last (the latest request on the connection),
 * is one the client cannot expect: a second status line in the middle of a response, an answer to
 * a request already answered (the bad bytes are its body), or an answer on a connection whose
 * close was announced, where no further request is processed (RFC 9112 §9.6).
 */
function isUnexpected(last: ServerResponse | undefined): boolean {
  if (last === undefined) return false
  if (last.headersSent && (!last.writableEnded || !last.req.complete)) return true
  return last.req.complete && !last.shouldKeepAlive
}

/** handleConnect refuses CONNECT, which Node hands to a separate event instead of the router. */
export function handleConnect(warn: Warn, newId: () => string) {
  return (_req: unknown, socket: Duplex): void => {
    const requestId = newId()
    respond(socket, rawProblem(405, requestId, 'Allow: GET, HEAD\r\n'))
    const remoteAddr = (socket as Socket).remoteAddress
    warn({ status: 405, code: 'CONNECT', requestId, remoteAddr }, 'rejected malformed request')
  }
}

/**
 * respond writes answer and releases the socket once it is handed to the kernel: the server's
 * sockets are half-open, so end() alone would keep the descriptor until the client closes, which
 * an attacker never does.
 */
function respond(socket: Duplex, answer: string) {
  socket.write(answer)
  ;(socket as Socket).destroySoon()
}

/** Warn logs a warning about a misbehaving client, within a limiter's budget of lines. */
export type Warn = (fields: Record<string, unknown>, message: string) => void

/** newWarn returns a Warn whose line, when let through, says how many were dropped before it. */
export function newWarn(log: Logger, limiter: LogLimiter): Warn {
  return (fields, message) => {
    const dropped = limiter.take()
    if (dropped !== undefined) log.warn({ ...fields, dropped: dropped || undefined }, message)
  }
}

function rawProblem(status: number, requestId: string, extraHeaders = ''): string {
  const title = STATUS_CODES[status] ?? 'Error'
  const body = JSON.stringify({ type: 'about:blank', title, status, detail: details[status] ?? title })
  return (
    `HTTP/1.1 ${status} ${title}\r\n` +
    `Date: ${new Date().toUTCString()}\r\n` +
    'Content-Type: application/problem+json\r\n' +
    `Content-Length: ${Buffer.byteLength(body)}\r\n` +
    'Connection: close\r\n' +
    'X-Content-Type-Options: nosniff\r\n' +
    `X-Request-Id: ${requestId}\r\n` +
    extraHeaders +
    `\r\n${body}`
  )
}
