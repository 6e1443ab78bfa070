// exchange talks HTTP over a raw socket, for requests no HTTP client library would send.
import { connect } from 'node:net'
import { readBody } from '../internal/json.ts'
import type { Routes } from '../internal/router.ts'
import { newRoutes, type RouteDeps } from '../internal/routes.ts'

/** Exchange is what came back on one raw connection. */
export interface Exchange {
  /** text is every byte received, as latin1. */
  text: string
  /** statuses lists the status code of every response in text, in order. */
  statuses: number[]
  /** closed is false when the server neither answered nor closed within the bound. */
  closed: boolean
}

/**
 * exchange connects, writes each part (waiting pauseMs between parts), half-closes unless told
 * to keep writing, and collects what the server sends until it closes the connection or
 * timeoutMs passes.
 */
export function exchange(
  port: number,
  parts: (string | Buffer)[],
  { timeoutMs = 5000, pauseMs = 0, halfClose = true } = {},
): Promise<Exchange> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    const timer = setTimeout(() => finish(false), timeoutMs)
    function finish(closed: boolean) {
      clearTimeout(timer)
      socket.destroy()
      const text = Buffer.concat(chunks).toString('latin1')
      resolve({ text, statuses: parseStatuses(text), closed })
    }
    socket.on('data', (chunk: Buffer) => chunks.push(chunk))
    socket.on('error', () => {}) // a reset shows up as a close
    socket.on('close', () => finish(true))
    socket.on('connect', async () => {
      for (const [i, part] of parts.entries()) {
        if (i > 0 && pauseMs > 0) await new Promise((resolve) => setTimeout(resolve, pauseMs))
        if (socket.destroyed) return
        socket.write(part)
      }
      if (halfClose) socket.end()
    })
  })
}

/** parseStatuses walks the responses in text, one after another, by their Content-Length. */
function parseStatuses(text: string): number[] {
  const statuses: number[] = []
  let rest = text
  while (/^HTTP\/1\.1 \d{3} /.test(rest)) {
    statuses.push(Number(rest.slice(9, 12)))
    const end = rest.indexOf('\r\n\r\n')
    if (end === -1) break
    const length = /\r\ncontent-length: (\d+)/i.exec(rest.slice(0, end))?.[1] ?? '0'
    rest = rest.slice(end + 4 + Number(length))
  }
  return statuses
}

/** routesWithUpload adds POST /upload, which reads its body within MAX_BODY_SIZE and echoes its size. */
export async function routesWithUpload(deps: RouteDeps): Promise<Routes> {
  return {
    ...(await newRoutes(deps)),
    '/upload': {
      POST: async (req, res) => {
        const body = await readBody(req, res, deps.config.maxBodyBytes)
        if (body === undefined) return
        res.writeHead(200, { 'content-type': 'text/plain' }).end(`received ${body.byteLength} bytes`)
      },
    },
  }
}
