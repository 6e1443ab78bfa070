import type { IncomingMessage } from 'node:http'
import { sendProblem } from './problem.ts'
import type { TrackedResponse } from './response.ts'

/**
 * readBody reads the request body of at most limit bytes (MAX_BODY_SIZE). It resolves with the
 * body, or with undefined once the request has been answered or abandoned: 413 when the body is
 * larger than limit (checked against Content-Length first, so nothing is read), or nothing when
 * the client went away. Every route that reads a body goes through here, so none forgets a limit.
 *
 *   const body = await readBody(req, res, deps.config.maxBodyBytes)
 *   if (body === undefined) return
 */
export function readBody(req: IncomingMessage, res: TrackedResponse, limit: number): Promise<Buffer | undefined> {
  if (Number(req.headers['content-length'] ?? 0) > limit) return Promise.resolve(tooLarge(req, res, limit))
  return new Promise((resolve) => {
    const chunks: Buffer[] = []
    let size = 0
    function settle(body: Buffer | undefined) {
      req.off('data', onData).off('end', onEnd).off('error', onGone).off('close', onGone)
      resolve(body)
    }
    function onData(chunk: Buffer) {
      size += chunk.byteLength
      if (size > limit) settle(tooLarge(req, res, limit))
      else chunks.push(chunk)
    }
    function onEnd() {
      settle(Buffer.concat(chunks, size))
    }
    function onGone() {
      settle(undefined) // the client went away, or the parser rejected the body and answered already
    }
    req.on('data', onData).on('end', onEnd).on('error', onGone).on('close', onGone)
  })
}

// Not a for-await loop: leaving it early destroys the request, and with it the socket the 413 needs.
function tooLarge(req: IncomingMessage, res: TrackedResponse, limit: number): undefined {
  req.resume() // discard the rest as it arrives; the connection closes after the answer
  res.shouldKeepAlive = false
  sendProblem(res, 413, `The request body is larger than ${limit} bytes.`)
  return undefined
}
