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

/** FieldError names one invalid part of a request, as RFC 9457's example does: a body's JSON pointer or a parameter. */
export type FieldError = { pointer: string; detail: string } | { parameter: string; detail: string }

/**
 * sendProblem answers with an RFC 9457 problem+json body: `title` is the status phrase, `detail`
 * says what went wrong, for the client: never an error's message or stack (kickstart.go's #86).
 * extensions add members, such as `errors` naming each invalid field.
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
 * readBody reads a request body of at most limit bytes (MAX_BODY_SIZE), or resolves undefined once
 * the request is answered (413, checked against Content-Length first) or abandoned.
 */
export async function readBody(req: IncomingMessage, res: TrackedResponse, limit: number): Promise<Buffer | undefined> {
  const tooLarge = () => refuse(req, res, 413, `The request body is larger than ${limit} bytes.`)
  if (Number(req.headers['content-length'] ?? 0) > limit) return tooLarge()
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
  return size > limit ? tooLarge() : undefined
}

/** refuse answers status without reading the rest of the body: it is discarded, and the connection closes. */
function refuse(req: IncomingMessage, res: TrackedResponse, status: number, detail: string): undefined {
  req.resume()
  res.shouldKeepAlive = false
  sendProblem(res, status, detail)
}

/**
 * readJSON reads a JSON body within limit, or answers 415, 413 or 400 (saying where) and resolves
 * undefined: `const body = await readJSON(req, res, limit); if (body === undefined) return`.
 */
export async function readJSON(req: IncomingMessage, res: TrackedResponse, limit: number): Promise<unknown> {
  const type = req.headers['content-type'] ?? ''
  if (!/^application\/json\s*(?:;|$)/i.test(type))
    return refuse(req, res, 415, `Expected a body of type application/json, got ${type === '' ? 'none' : type}.`)
  const body = await readBody(req, res, limit)
  if (body === undefined) return undefined
  try {
    return JSON.parse(body.toString('utf8'))
  } catch (err) {
    // V8's message says where ("at position 12 (line 1 column 13)"), from the client's input only.
    sendProblem(res, 400, `The body is not valid JSON: ${(err as Error).message}`)
    return undefined
  }
}
