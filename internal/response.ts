import { type OutgoingHttpHeader, type OutgoingHttpHeaders, ServerResponse } from 'node:http'
import type { TraceContext } from './trace.ts'

type Callback = (err?: Error | null) => void
type Headers = OutgoingHttpHeaders | OutgoingHttpHeader[]

/**
 * TrackedResponse is the response decorator (a Go ResponseWriter wrapper's counterpart) that node:http
 * itself creates, so it costs no wrapper: it counts body bytes, keeps what the access log reads, and
 * adds the headers every response carries.
 */
export class TrackedResponse extends ServerResponse {
  /** startedAt is performance.now() when the request's headers were parsed. */
  readonly startedAt = performance.now()
  /** closedAt is performance.now() when the response finished or was aborted; 0 until then. */
  closedAt = 0
  /** requestId names the request in logs and X-Request-Id; '' adds no headers. */
  requestId = ''
  /** path is the target's path, without the query string. */
  path = ''
  /** route is the matched template ('/items/{id}'), '' for none. */
  route = ''
  /** refused is true when an admit hook answered (shed) the request, and logged it. */
  refused = false
  /** trace is the W3C trace context: formatTraceparent(res.trace) continues it downstream. */
  trace: TraceContext = noTrace
  #written = 0

  /** logFields returns the ids every log line of this request carries, a new object each time. */
  get logFields(): { requestId: string; traceId: string; spanId: string } {
    return { requestId: this.requestId, traceId: this.trace.traceId, spanId: this.trace.spanId }
  }

  /** bodyBytes is the number of body bytes sent: 0 for HEAD, 1xx, 204 and 304 (Node drops their body). */
  get bodyBytes(): number {
    const status = this.statusCode
    if (this.req.method === 'HEAD' || status < 200 || status === 204 || status === 304) return 0
    return this.#written
  }

  /** aborted is true once the response closed before it finished. */
  get aborted(): boolean {
    return this.destroyed && !this.writableFinished
  }

  /** sentStatus is the status the client got: 499 (nginx's "client closed request") if none went out. */
  get sentStatus(): number {
    return !this.aborted || (this.headersSent && this.socket !== null) ? this.statusCode : 499
  }

  /** writeHead adds X-Request-Id and nosniff, into a copy of a headers object: setHeader() costs more than routing. */
  override writeHead(statusCode: number, reasonOrHeaders?: string | Headers, maybeHeaders?: Headers): this {
    const reason = typeof reasonOrHeaders === 'string' ? reasonOrHeaders : undefined
    let headers = reason === undefined ? (reasonOrHeaders as Headers | undefined) : maybeHeaders
    if (this.requestId !== '') {
      if (headers !== undefined && !Array.isArray(headers)) {
        headers = { ...headers, 'x-request-id': this.requestId, 'x-content-type-options': 'nosniff' }
      } else {
        this.setHeader('x-request-id', this.requestId)
        this.setHeader('x-content-type-options', 'nosniff')
      }
    }
    return reason === undefined ? super.writeHead(statusCode, headers) : super.writeHead(statusCode, reason, headers)
  }

  // One signature for every overload: Node sorts out which optional argument is which.
  override write(chunk: unknown, encoding?: BufferEncoding | Callback, callback?: Callback): boolean {
    if (!this.writableEnded && !this.destroyed) this.#written += byteLength(chunk, encoding)
    return super.write(chunk, encoding as BufferEncoding, callback)
  }

  override end(chunk?: unknown, encoding?: BufferEncoding | Callback, callback?: Callback): this {
    // end() writes its chunk through Node's internal write, not this.write: it is counted once.
    if (typeof chunk !== 'function' && !this.writableEnded && !this.destroyed) {
      this.#written += byteLength(chunk, encoding)
    }
    return super.end(chunk, encoding as BufferEncoding, callback)
  }
}

const noTrace: TraceContext = Object.freeze({ traceId: '', spanId: '', flags: '00' })

function byteLength(chunk: unknown, encoding: BufferEncoding | Callback | undefined): number {
  if (typeof chunk === 'string') return Buffer.byteLength(chunk, typeof encoding === 'string' ? encoding : 'utf8')
  return chunk instanceof Uint8Array ? chunk.byteLength : 0
}
