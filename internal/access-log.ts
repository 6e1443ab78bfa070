import type { Logger, LogOutput } from './log.ts'
import type { TrackedResponse } from './response.ts'

// Bounds on what a client controls, so a line stays far below the 16 KiB at which Docker and
// containerd split log lines (and with them the JSON): JSON escaping at most doubles these.
const maxPath = 2048
const maxUserAgent = 512
const milliseconds = Array.from({ length: 1000 }, (_, ms) => `${String(ms).padStart(3, '0')}Z`)

/**
 * newAccessLog returns the writer of a response's access line: error for 5xx, warn for 4xx and
 * aborts, info otherwise; the path without its query string, which may carry tokens.
 *
 * The line is the one log[level](fields, 'request') would write, built directly: pino's serialiser
 * costs more than the rest of the request (BENCHMARKS.md). Path and user agent are escaped; the rest
 * cannot need it (Node takes only token characters in a method, templates are URL characters, ids are checked).
 */
export function newAccessLog(log: Logger, output: LogOutput): (res: TrackedResponse) => void {
  const bindings = JSON.stringify(log.bindings()).slice(1, -1)
  const base = bindings === '' ? '' : `,${bindings}`
  let second = -1
  let prefix = '' // the time up to its second: '2026-12-04T04:05:39.'
  return (res) => {
    const req = res.req
    const status = res.sentStatus
    const aborted = res.aborted
    const level = status >= 500 ? 'error' : status >= 400 || aborted ? 'warn' : 'info'
    if (res.refused || !log.isLevelEnabled(level)) return
    // toISOString once a second, not per request: it would cost more than the rest of the line.
    const now = Date.now()
    if (now - second >= 1000 || now < second) {
      second = now - (now % 1000)
      prefix = new Date(second).toISOString().slice(0, 20)
    }
    const remoteAddr = req.socket.remoteAddress
    const userAgent = req.headers['user-agent']
    output.write(
      `{"level":"${level}","time":"${prefix}${milliseconds[now - second]}"${base},"method":"${req.method}"` +
        `,"path":${quote(res.path, maxPath)}${res.route === '' ? '' : `,"route":"${res.route}"`}` +
        `,"status":${status},"bytes":${res.bodyBytes},"durationMs":${Math.round((res.closedAt - res.startedAt) * 1000) / 1000}` +
        `,"requestId":"${res.requestId}","traceId":"${res.trace.traceId}","spanId":"${res.trace.spanId}"` +
        (remoteAddr === undefined ? '' : `,"remoteAddr":"${remoteAddr}"`) +
        (userAgent === undefined ? '' : `,"userAgent":${quote(userAgent, maxUserAgent)}`) +
        (aborted ? ',"aborted":true' : '') +
        ',"msg":"request"}\n',
    )
  }
}

/** quote returns value as a JSON string, cut to max characters with a marker saying so. */
function quote(value: string, max: number): string {
  return JSON.stringify(value.length <= max ? value : `${value.slice(0, max)}…[${value.length - max} more]`)
}
