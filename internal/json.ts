import { type IncomingMessage, type OutgoingHttpHeaders, STATUS_CODES } from 'node:http'
import type { TrackedResponse } from './response.ts'
import type { Response } from './router.ts'

// What a Response<R> may answer: any status and body when its operation is untyped (R unknown),
// else only the statuses R documents, each with its own body.
type Status<R> = unknown extends R ? number : keyof R & number
type Body<R, S> = unknown extends R ? unknown : S extends keyof R ? R[S] : never

/** sendJSON answers with status and body as JSON, plus headers (Location, say). */
export function sendJSON<R = unknown, S extends Status<R> = Status<R>>(
  res: Response<R>,
  status: S,
  body: NoInfer<Body<R, S>>,
  headers?: OutgoingHttpHeaders,
): void {
  send(res, status, 'application/json', JSON.stringify(body), headers)
}

/**
 * FieldError names one invalid part of a request and says why, as RFC 9457's example does: a JSON
 * pointer into the body, or the name of a path or query parameter.
 */
export type FieldError = { pointer: string; detail: string } | { parameter: string; detail: string }

/**
 * sendProblem answers with an RFC 9457 problem+json body: `type` is about:blank, so `title` is the
 * status phrase, and `detail` says what went wrong in words meant for the client; extensions add
 * members, such as `errors: FieldError[]` naming each invalid field. Never put an error's message
 * or stack in `detail`: they are internals (kickstart.go's #86).
 */
export function sendProblem<R = unknown>(
  res: Response<R>,
  status: NoInfer<Status<R>>,
  detail: string,
  headers?: OutgoingHttpHeaders,
  extensions?: { errors?: FieldError[] } & Record<string, unknown>,
): void {
  const body = { type: 'about:blank', title: STATUS_CODES[status] ?? 'Error', status, detail, ...extensions }
  send(res, status, 'application/problem+json', JSON.stringify(body), headers)
}

function send(res: TrackedResponse, status: number, type: string, body: string, headers?: OutgoingHttpHeaders) {
  res.writeHead(status, { ...headers, 'content-type': type, 'content-length': Buffer.byteLength(body) }).end(body)
}

/**
 * readBody reads the request body of at most limit bytes (MAX_BODY_SIZE). It resolves with the
 * body, or with undefined once the request has been answered or abandoned: 413 when the body is
 * larger than limit (checked against Content-Length first, so nothing is read), or nothing when
 * the client went away. Every route that reads a body goes through here, so none forgets a limit.
 */
export async function readBody(req: IncomingMessage, res: TrackedResponse, limit: number): Promise<Buffer | undefined> {
  if (Number(req.headers['content-length'] ?? 0) > limit) return tooLarge(req, res, limit)
  const chunks: Buffer[] = []
  let size = 0
  // Not a for-await loop: leaving it early destroys the request, and with it the socket the 413 needs.
  const complete = await new Promise<boolean>((resolve) => {
    req.on('data', (chunk: Buffer) => {
      size += chunk.byteLength
      if (size <= limit) chunks.push(chunk)
      else resolve(false)
    })
    req
      .on('end', () => resolve(true))
      .on('error', () => resolve(false))
      .on('close', () => resolve(false))
  })
  if (complete) return Buffer.concat(chunks, size)
  // Else the client went away, or the parser rejected the body and answered already.
  return size > limit ? tooLarge(req, res, limit) : undefined
}

function tooLarge(req: IncomingMessage, res: TrackedResponse, limit: number): undefined {
  req.resume() // discard the rest as it arrives; the connection closes after the answer
  res.shouldKeepAlive = false
  sendProblem(res, 413, `The request body is larger than ${limit} bytes.`)
}

/**
 * readJSON reads a JSON request body within limit, answering itself when it cannot: 415 unless the
 * content type is application/json, 413 above limit, 400 for malformed JSON (saying where). It
 * resolves with the parsed value, unchecked, or with undefined once the request is answered:
 *
 *   const body = await readJSON(req, res, deps.config.maxBodyBytes)
 *   if (body === undefined) return
 */
export async function readJSON(req: IncomingMessage, res: TrackedResponse, limit: number): Promise<unknown> {
  const type = req.headers['content-type'] ?? ''
  if (!/^application\/json\s*(?:;|$)/i.test(type)) {
    req.resume()
    res.shouldKeepAlive = false // the body is not read, so the connection cannot carry another request
    sendProblem(res, 415, `Expected a body of type application/json, got ${type === '' ? 'none' : type}.`)
    return undefined
  }
  const body = await readBody(req, res, limit)
  if (body === undefined) return undefined
  try {
    return JSON.parse(body.toString('utf8'))
  } catch (err) {
    // V8's message says where ("... in JSON at position 12 (line 1 column 13)") and holds only the
    // client's own input: safe to send back.
    sendProblem(res, 400, `The body is not valid JSON: ${(err as Error).message}`)
    return undefined
  }
}
