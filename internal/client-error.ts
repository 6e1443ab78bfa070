import { channel } from 'node:diagnostics_channel'
import { STATUS_CODES, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { latestResponse } from './connections.ts'
import type { Warn } from './log.ts'

// What the client is told of what Node's parser reports; anything else is a 400.
const problems: Record<string, [status: number, detail: string, headers?: string]> = {
  // HEADERS_TIMEOUT or REQUEST_TIMEOUT ran out (slowloris)
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'The request took too long to arrive.'],
  // the request line plus headers above MAX_HEADER_SIZE, long URLs included
  HPE_HEADER_OVERFLOW: [431, 'The request line or headers are too large.'],
  HPE_CHUNK_EXTENSIONS_OVERFLOW: [413, 'The request is too large.'],
  CONNECT: [405, 'CONNECT is not supported.', 'Allow: GET, HEAD\r\n'],
}
const invalid: [number, string] = [400, 'The request is not valid HTTP/1.1.']

/** rejectedChannel carries `{ status }` for each request answered here, for whoever counts requests (metrics). */
export const rejectedChannel = channel('kickstart.http.rejected')

/**
 * handleClientError answers what Node's parser rejects (malformed syntax, oversized headers, header
 * timeouts) with problem+json straight to the socket, unless the client cannot expect an answer,
 * then releases the socket. Clients that reset or leave mid-request are dropped quietly.
 */
export function handleClientError(warn: Warn, newId: () => string) {
  return (err: NodeJS.ErrnoException, socket: Duplex): void => {
    if (err.code === 'ECONNRESET' || err.code === 'EPIPE' || !socket.writable) return void socket.destroy()
    const [status, detail, headers = ''] = problems[err.code ?? ''] ?? invalid
    const requestId = newId()
    const last = latestResponse(socket as Socket)
    if (isUnexpected(last)) socket.destroy()
    else respond(socket, status, detail, requestId, headers)
    // A request a handler still has (a body cut short) is counted, and logged, as its aborted response.
    const handled = last !== undefined && !last.req.complete && last.closedAt === 0
    if (rejectedChannel.hasSubscribers && !handled) rejectedChannel.publish({ status })
    // A client that closes in the middle of its request went away; like a reset, that is not news.
    if (err.code === 'HPE_INVALID_EOF_STATE') return
    const remoteAddr = (socket as Socket).remoteAddress
    warn({ status, code: err.code, requestId, remoteAddr }, 'rejected malformed request')
  }
}

/** handleConnect refuses CONNECT, which Node hands to an event of its own instead of the router. */
export function handleConnect(warn: Warn, newId: () => string) {
  const onClientError = handleClientError(warn, newId)
  return (_req: unknown, socket: Duplex): void => onClientError(Object.assign(new Error(), { code: 'CONNECT' }), socket)
}

/**
 * isUnexpected tells whether the client cannot expect an answer after last, its latest request: a
 * second status line mid-response, a second answer to one request (the bad bytes are its body), or
 * an answer after an announced close (RFC 9112 §9.6).
 */
function isUnexpected(last: ServerResponse | undefined): boolean {
  if (last === undefined) return false
  if (last.headersSent && (!last.writableEnded || !last.req.complete)) return true
  return last.req.complete && !last.shouldKeepAlive
}

/**
 * respond writes a problem answer and releases the socket once the kernel has it: the sockets are
 * half-open, so end() would keep it until the client closes, which an attacker never does.
 */
function respond(socket: Duplex, status: number, detail: string, requestId: string, headers: string) {
  const title = STATUS_CODES[status] ?? 'Error'
  const body = JSON.stringify({ type: 'about:blank', title, status, detail })
  socket.write(
    `HTTP/1.1 ${status} ${title}\r\nDate: ${new Date().toUTCString()}\r\n` +
      `Content-Type: application/problem+json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
      `Connection: close\r\nX-Content-Type-Options: nosniff\r\nX-Request-Id: ${requestId}\r\n${headers}\r\n${body}`,
  )
  ;(socket as Socket).destroySoon()
}
