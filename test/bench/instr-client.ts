// The instruction count's client: raw node:net sockets, so the bench knows exactly how many
// requests reached the server and that each was answered in full before the next went out. It runs
// outside valgrind; only the server's instructions are counted.
import { once } from 'node:events'
import { type Socket, connect } from 'node:net'

/** ParsedResponse is one HTTP/1.1 response found at the start of a buffer. */
export interface ParsedResponse {
  status: number
  /** length is the response's size in bytes, head and body. */
  length: number
  /** close is true when the server announced it closes the connection after this response. */
  close: boolean
}

const headEnd = Buffer.from('\r\n\r\n')

/**
 * parseResponse returns the complete response at the start of data, or undefined while more bytes
 * are needed. It reads what /health answers: a status line and a Content-Length body; it throws on
 * a response it cannot delimit (chunked, no length), since the count would then be guessed.
 */
export function parseResponse(data: Buffer): ParsedResponse | undefined {
  const end = data.indexOf(headEnd)
  if (end === -1) return undefined
  const head = data.toString('latin1', 0, end)
  const status = /^HTTP\/1\.1 (\d{3}) /.exec(head)?.[1]
  if (status === undefined) throw new Error(`not an HTTP/1.1 response: ${JSON.stringify(head.slice(0, 80))}`)
  const contentLength = /\r\ncontent-length: *(\d+)/i.exec(head)?.[1]
  if (contentLength === undefined) throw new Error(`a response without Content-Length: ${JSON.stringify(head)}`)
  const length = end + headEnd.length + Number(contentLength)
  if (data.length < length) return undefined
  return { status: Number(status), length, close: /\r\nconnection: *close/i.test(head) }
}

/**
 * getSequentially sends count `GET path` requests on socket, each after the previous response was
 * read in full, and resolves once the last is in. It rejects on anything but a 200 kept alive, and
 * on bytes nobody asked for.
 */
export async function getSequentially(socket: Socket, host: string, path: string, count: number): Promise<void> {
  const request = `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n\r\n`
  let pending: Buffer = Buffer.alloc(0)
  let answered = 0
  if (count === 0) return
  await new Promise<void>((resolve, reject) => {
    const fail = (err: Error) => {
      socket.destroy()
      reject(new Error(`${err.message}, after ${answered} of ${count} responses on one connection`))
    }
    const onClose = () => fail(new Error('connection closed'))
    const onData = (chunk: Buffer) => {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk])
      let response: ParsedResponse | undefined
      try {
        response = parseResponse(pending)
      } catch (err) {
        return fail(err as Error)
      }
      if (response === undefined) return
      if (pending.length !== response.length) return fail(new Error('bytes after a response, before a request'))
      if (response.status !== 200) return fail(new Error(`status ${response.status} for GET ${path}`))
      if (response.close) return fail(new Error('the server announced it closes a keep-alive connection'))
      pending = Buffer.alloc(0)
      if (++answered < count) return void socket.write(request)
      // Done: 'error' stays handled (a reset now only destroys the socket), the rest is the caller's.
      socket.off('data', onData).off('close', onClose)
      resolve()
    }
    socket.on('error', fail).on('close', onClose).on('data', onData)
    socket.write(request)
  })
}

/** openConnection connects to 127.0.0.1:port, Nagle off (each request is one small write). */
export async function openConnection(port: number): Promise<Socket> {
  const socket = connect({ host: '127.0.0.1', port, noDelay: true })
  await once(socket, 'connect') // rejects on 'error', ECONNREFUSED included
  return socket
}

/** closeConnection ends socket and resolves once it is closed, so the server saw the close before it is stopped. */
export async function closeConnection(socket: Socket): Promise<void> {
  socket.end()
  if (!socket.closed) await once(socket, 'close')
}

/**
 * sendRequests sends requests `GET path` to 127.0.0.1:port over connections keep-alive
 * connections, opened together, each sending its share one after the other (the first ones take
 * one more when the division leaves a remainder). It resolves once every response was read and
 * every connection closed; it rejects on the first error.
 */
export async function sendRequests(port: number, path: string, requests: number, connections: number): Promise<void> {
  const sockets = await Promise.all(Array.from({ length: connections }, () => openConnection(port)))
  const host = `127.0.0.1:${port}`
  try {
    await Promise.all(
      sockets.map((socket, i) =>
        getSequentially(socket, host, path, Math.floor(requests / connections) + (i < requests % connections ? 1 : 0)),
      ),
    )
  } catch (err) {
    for (const socket of sockets) socket.destroy()
    throw err
  }
  await Promise.all(sockets.map(closeConnection))
}

/**
 * waitForReady polls listening() every pollMs until the server listens, then sends one `GET path`
 * on a new connection and closes it: exactly one request reaches the server however long it took
 * to start. It throws when alive() turns false first, or timeoutMs passes.
 */
export async function waitForReady(
  port: number,
  path: string,
  server: { listening: () => boolean; alive: () => boolean },
  timeoutMs: number,
  pollMs = 20,
): Promise<void> {
  const deadline = performance.now() + timeoutMs
  while (!server.listening()) {
    if (!server.alive()) throw new Error(`the server exited before it listened on port ${port}`)
    if (performance.now() > deadline)
      throw new Error(`the server did not listen on port ${port} within ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, pollMs))
  }
  const socket = await openConnection(port)
  await getSequentially(socket, `127.0.0.1:${port}`, path, 1)
  await closeConnection(socket)
}
