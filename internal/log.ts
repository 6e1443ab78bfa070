import type { AsyncLocalStorage } from 'node:async_hooks'
import { fstatSync, writeSync } from 'node:fs'
import { createRequire } from 'node:module'
import { Socket } from 'node:net'
import type { Logger } from 'pino'
import type { LogLevel } from './config.ts'
import type { TrackedResponse } from './response.ts'

export type { Logger }

// pino is CommonJS: require() loads it in about two thirds of the time a named import takes.
const { pino } = createRequire(import.meta.url)('pino') as typeof import('pino')

// Credentials never reach the logs, whatever a handler logs about a request.
const redactPaths = ['authorization', 'cookie', 'set-cookie'].flatMap((h) => [`headers["${h}"]`, `*.headers["${h}"]`])

/** LogOutput is where log lines go; onDropped hears how many it dropped, once it keeps up again. */
export interface LogOutput {
  write(line: string): void
  onDropped?: (count: number) => void
}

/**
 * newLogger returns the root logger: JSON lines with the level's label, ISO time and base. A line
 * logged while a request is handled (context), however deep the call, carries the request's ids.
 */
export function newLogger(
  output: LogOutput,
  level: LogLevel,
  base: Record<string, unknown>,
  context?: AsyncLocalStorage<TrackedResponse>,
): Logger {
  return pino(
    {
      level,
      base,
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: redactPaths, censor: '[REDACTED]' },
      // pino merges the call's fields into what mixin returns, so it must be a new object each time.
      mixin: context && (() => context.getStore()?.logFields ?? {}),
    },
    output,
  )
}

/**
 * newStdoutOutput writes log lines to fd without blocking the event loop; flush waits, at most
 * timeoutMs, for what is queued. A line a millisecond or more after the last write goes out at
 * once; under load, lines wait for one write at their event-loop turn's end, as a system call per
 * line would cost more than the line (BENCHMARKS.md).
 */
export function newStdoutOutput(fd = 1, maxQueuedBytes = 16 * 1024 * 1024, now = () => performance.now()) {
  const writer = newWriter(fd, maxQueuedBytes, (count) => output.onDropped?.(count))
  let batch = '' // the lines of this turn, waiting for its end
  let lastWrite = -Infinity
  function writeBatch() {
    const data = batch
    batch = ''
    lastWrite = now()
    writer.write(data)
  }
  const output: LogOutput & { flush(timeoutMs: number): Promise<void> } = {
    write(line) {
      if (batch === '') {
        const t = now()
        if (t - lastWrite >= 1) {
          lastWrite = t
          return writer.write(line)
        }
        setImmediate(writeBatch)
      }
      batch += line
    },
    flush(timeoutMs) {
      if (batch !== '') writeBatch()
      return writer.flush(timeoutMs)
    },
  }
  return output
}

/**
 * newWriter writes to fd without waiting. When fd is a pipe (a container's stdout) whose reader
 * stalls, lines queue up to maxQueuedBytes and go out in order once it is back; past the bound they
 * are dropped, and onDropped hears the count once the queue is empty (README.md, Logs).
 */
function newWriter(fd: number, maxQueuedBytes: number, onDropped: (count: number) => void) {
  const stat = fstatSync(fd)
  // A stream on a pipe makes the descriptor non-blocking: writeSync then writes or fails with
  // EAGAIN, never waits, and the stream queues the rest until the reader is back.
  const backlog = stat.isFIFO() || stat.isSocket() ? new Socket({ fd, readable: false, writable: true }) : undefined
  backlog?.on('error', () => {}) // EPIPE: nobody reads stdout any more, and nowhere is left to say so
  let dropped = 0
  function reportDropped() {
    if (dropped === 0 || backlog?.writableLength !== 0) return
    onDropped(dropped)
    dropped = 0
  }
  return {
    write(data: string) {
      let rest: string | Buffer = data
      if (!backlog?.writableLength) {
        let written = 0
        try {
          written = writeSync(fd, data)
        } catch (err) {
          // A file or terminal that refuses the write, or a pipe nobody reads, loses the lines.
          if (backlog === undefined || (err as NodeJS.ErrnoException).code !== 'EAGAIN') return
        }
        // A file takes it all; a pipe takes up to 4096 bytes whole or not at all (PIPE_BUF), and
        // more as far as it has room.
        if (backlog === undefined || (written > 0 && (data.length <= 1024 || written === Buffer.byteLength(data))))
          return
        rest = Buffer.from(data).subarray(written)
      }
      // Whole lines that fit under the bound are queued; the rest are dropped and counted.
      const room = maxQueuedBytes - backlog.writableLength
      const fits = rest.length <= room ? rest.length : rest.lastIndexOf('\n', room - 1) + 1
      if (fits > 0) backlog.write(rest.slice(0, fits))
      for (let i = rest.indexOf('\n', fits); i !== -1; i = rest.indexOf('\n', i + 1)) dropped++
      // An empty write's callback runs once all before it is written: the last says the queue is empty.
      if (dropped > 0) backlog.write('', reportDropped)
    },
    flush(timeoutMs: number): Promise<void> {
      if (!backlog?.writableLength) return Promise.resolve()
      return new Promise((resolve) => {
        const timer = setTimeout(resolve, timeoutMs)
        backlog.write('', () => resolve(clearTimeout(timer)))
      })
    },
  }
}

/** Warn logs a warning about a misbehaving client, within the service's budget of such lines. */
export type Warn = (fields: Record<string, unknown>, message: string) => void

/**
 * newWarnings returns the budget every listener shares for lines about misbehaving clients: at most
 * limit a window. The next line let through says how many were dropped; dropped() says it at the end.
 */
export function newWarnings(limit = 10, windowMs = 1000, now = () => performance.now()) {
  let windowStart = -Infinity
  let used = 0
  let dropped = 0
  const take = () => {
    const count = dropped
    dropped = 0
    return count
  }
  return {
    for:
      (log: Logger): Warn =>
      (fields, message) => {
        const t = now()
        if (t - windowStart >= windowMs) [windowStart, used] = [t, 0]
        if (used++ >= limit) return void dropped++
        log.warn({ ...fields, dropped: take() || undefined }, message)
      },
    dropped: take,
  }
}
