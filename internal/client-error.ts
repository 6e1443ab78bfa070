import { STATUS_CODES } from 'node:http'
import type { Duplex } from 'node:stream'
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
      const before = dropped
      dropped = 0
      return before
    },
    dropped() {
      const before = dropped
      dropped = 0
      return before
    },
  }
}

/**
 * handleClientError answers what Node's parser rejects before a request exists (malformed syntax,
 * oversized headers, header timeouts), writing a problem+json response straight to the socket with
 * `Connection: close`, then closing it. Clients that reset or close mid-request are dropped
 * quietly; the rest are logged, one line each, through limiter so a flood cannot flood the logs.
 * It never throws.
 */
export function handleClientError(log: Logger, limiter: LogLimiter, newId: () => string) {
  return (err: NodeJS.ErrnoException, socket: Duplex): void => {
    if (err.code === 'ECONNRESET' || err.code === 'EPIPE' || !socket.writable) {
      socket.destroy()
      return
    }
    const status = statusByCode[err.code ?? ''] ?? 400
    // A response may be under way on this socket (a bad chunk in a body the handler is reading):
    // a second status line in the middle of it would corrupt it, and closing is the only clean
    // answer. After a complete response, the error answer can follow it.
    const current = (socket as Duplex & { _httpMessage?: { headersSent: boolean; writableEnded: boolean } | null })
      ._httpMessage
    const requestId = newId()
    if (current?.headersSent && !current.writableEnded) socket.destroy()
    else socket.end(rawProblem(status, requestId))
    // A client that closes in the middle of its request went away; like a reset, that is not news.
    if (err.code === 'HPE_INVALID_EOF_STATE') return
    logRejected(log, limiter, socket, { status, code: err.code, requestId })
  }
}

/** handleConnect refuses CONNECT, which Node hands to a separate event instead of the router. */
export function handleConnect(log: Logger, limiter: LogLimiter, newId: () => string) {
  return (_req: unknown, socket: Duplex): void => {
    const requestId = newId()
    socket.end(rawProblem(405, requestId, 'Allow: GET, HEAD\r\n'))
    logRejected(log, limiter, socket, { status: 405, code: 'CONNECT', requestId })
  }
}

function logRejected(
  log: Logger,
  limiter: LogLimiter,
  socket: Duplex,
  fields: { status: number; code: string | undefined; requestId: string },
) {
  const dropped = limiter.take()
  if (dropped === undefined) return
  const remoteAddr = (socket as Duplex & { remoteAddress?: string }).remoteAddress
  log.warn({ ...fields, remoteAddr, dropped: dropped > 0 ? dropped : undefined }, 'rejected malformed request')
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
