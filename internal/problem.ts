import { STATUS_CODES } from 'node:http'
import type { TrackedResponse } from './response.ts'

/**
 * sendProblem answers with an RFC 9457 problem+json body: `type` is about:blank, so `title` is the
 * status phrase, and `detail` says what went wrong in words meant for the client. Never put an
 * error's message or stack in `detail`: they are internals (kickstart.go's #86).
 */
export function sendProblem(
  res: TrackedResponse,
  status: number,
  detail: string,
  headers?: Readonly<Record<string, string>>,
): void {
  const body = JSON.stringify({ type: 'about:blank', title: STATUS_CODES[status] ?? 'Error', status, detail })
  res.writeHead(status, {
    ...headers,
    'content-type': 'application/problem+json',
    'content-length': Buffer.byteLength(body),
  })
  res.end(body)
}
