import type { AsyncLocalStorage } from 'node:async_hooks'
import { createRequire } from 'node:module'
import type { DestinationStream, Logger } from 'pino'
import type { BuildInfo } from './build-info.ts'
import type { LogLevel } from './config.ts'
import type { TrackedResponse } from './response.ts'

export type { Logger }

// pino is CommonJS. require() loads it in about two thirds of the time import does: a named import
// first has Node analyse pino's exports. Start-up time is measured (BENCHMARKS.md).
const { pino } = createRequire(import.meta.url)('pino') as typeof import('pino')

// Credentials must never reach the logs, whatever a handler decides to log about a request.
const redactPaths = ['authorization', 'cookie', 'set-cookie'].flatMap((name) =>
  ['headers', 'req.headers', 'res.headers'].map((parent) => `${parent}["${name}"]`),
)

/**
 * newLogger returns the root logger: one JSON line per event on stream, level as its label, ISO
 * time, and the service and version on every line. Create it once in run() and pass it down.
 *
 * Given the request context, it is also every request's logger: a line logged while a request is
 * being handled, however deep in the call stack, carries that request's requestId, traceId and
 * spanId, with no child logger created and nothing passed through the calls.
 */
export function newLogger(
  stream: DestinationStream,
  level: LogLevel,
  build: Pick<BuildInfo, 'service' | 'version'>,
  context?: AsyncLocalStorage<TrackedResponse>,
): Logger {
  return pino(
    {
      level,
      base: { service: build.service, version: build.version },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: redactPaths, censor: '[REDACTED]' },
      // pino merges the call's fields into what mixin returns, so it must be a new object each
      // time: logFields builds one per call.
      mixin: context && (() => context.getStore()?.logFields ?? {}),
    },
    stream,
  )
}

/** LogOutput is where the log lines go: a pino destination that can be flushed before exit. */
export type LogOutput = DestinationStream & { flushSync(): void }

/**
 * newLogOutput returns the destination for the service's log lines on file descriptor fd (stdout):
 * the lines written during one turn of the event loop are joined and written together at its end,
 * in one system call, through pino's own synchronous destination, which retries a full pipe rather
 * than drop lines. Under load that batches dozens of access lines per write; when idle a line
 * waits for nothing but the end of the current turn. flushSync writes whatever is pending: main
 * calls it before the process exits, so no line is lost on any exit that goes through run().
 */
export function newLogOutput(fd = 1): LogOutput {
  const destination = pino.destination({ dest: fd, sync: true })
  // A closed stdout (EPIPE) leaves nowhere to report anything; it must not crash the service.
  destination.on('error', () => {})
  let pending: string[] = []
  let scheduled = false
  function flush() {
    scheduled = false
    if (pending.length === 0) return
    const data = pending.length === 1 ? (pending[0] ?? '') : pending.join('')
    pending = []
    destination.write(data)
  }
  return {
    write(line: string) {
      pending.push(line)
      if (!scheduled) {
        scheduled = true
        setImmediate(flush)
      }
    },
    flushSync() {
      flush()
      destination.flushSync()
    },
  }
}

type Internals = Record<symbol, unknown>

/**
 * newAccessLog returns the function that writes the access-log line of a finished or aborted
 * response: error for 5xx, warn for 4xx and aborts, info otherwise. The path is logged without its
 * query string, which may carry tokens. A response aborted before its status was sent is logged as
 * 499 (nginx's "client closed request"), never as a status that was not sent.
 *
 * The line is the one pino would write for log[level](fields, 'request'), built directly: fixed
 * shape, the logger's bindings already serialised, the time string made once per millisecond, and
 * JSON escaping only for the two fields a client controls (path and user agent; the others are
 * validated or come from Node). It goes to the logger's own stream, so ordering and flushing stay
 * pino's. That cuts the per-request cost of logging by more than half (BENCHMARKS.md).
 */
export function newAccessLog(log: Logger): (res: TrackedResponse) => void {
  const bindings = (log as unknown as Internals)[pino.symbols.chindingsSym] as string
  const stream = (log as unknown as Internals)[pino.symbols.streamSym] as DestinationStream
  let lastMs = -1
  let time = ''
  return (res) => {
    const req = res.req
    const aborted = res.aborted
    const status = !aborted || res.headersSent ? res.statusCode : 499
    const level = status >= 500 ? 'error' : status >= 400 || aborted ? 'warn' : 'info'
    if (!log.isLevelEnabled(level)) return
    const now = Date.now()
    if (now !== lastMs) {
      lastMs = now
      time = new Date(now).toISOString()
    }
    const remoteAddr = req.socket.remoteAddress
    const userAgent = req.headers['user-agent']
    stream.write(
      `{"level":"${level}","time":"${time}"${bindings},"method":"${req.method}","path":${JSON.stringify(res.path)}` +
        `,"status":${status},"bytes":${res.bodyBytes}` +
        `,"durationMs":${Math.round((performance.now() - res.startedAt) * 1000) / 1000}` +
        `,"requestId":"${res.requestId}","traceId":"${res.trace.traceId}","spanId":"${res.trace.spanId}"` +
        (remoteAddr === undefined ? '' : `,"remoteAddr":"${remoteAddr}"`) +
        (userAgent === undefined ? '' : `,"userAgent":${JSON.stringify(userAgent)}`) +
        (aborted ? ',"aborted":true' : '') +
        ',"msg":"request"}\n',
    )
  }
}
