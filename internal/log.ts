import type { AsyncLocalStorage } from 'node:async_hooks'
import { fstatSync, writeSync } from 'node:fs'
import { Socket } from 'node:net'
import { createRequire } from 'node:module'
import type { Logger } from 'pino'
import type { LogLevel } from './config.ts'
import type { TrackedResponse } from './response.ts'

export type { Logger }

// pino is CommonJS. require() loads it in about two thirds of the time import does: a named import
// first has Node analyse pino's exports. Start-up time is measured (BENCHMARKS.md).
const { pino } = createRequire(import.meta.url)('pino') as typeof import('pino')

// Credentials must never reach the logs, whatever a handler decides to log about a request.
const redactPaths = ['authorization', 'cookie', 'set-cookie'].flatMap((name) => [
  `headers["${name}"]`,
  `*.headers["${name}"]`,
])

/** LogOutput is where log lines go; run() hands it to pino and the access log. */
export interface LogOutput {
  write(line: string): void
  /** onDropped, when set, is told how many lines were dropped once the output keeps up again. */
  onDropped?: (count: number) => void
}

/**
 * newLogger returns the root logger: one JSON line per event on output, level as its label, ISO
 * time, and base (service, version) on every line. Create it once in run() and pass it down.
 *
 * Given the request context, it is also every request's logger: a line logged while a request is
 * being handled, however deep in the call stack, carries that request's requestId, traceId and
 * spanId, with no child logger created and nothing passed through the calls.
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

/** StdoutOutput is the process's LogOutput, with a bounded wait for what is still queued. */
export interface StdoutOutput extends LogOutput {
  /** flush resolves once every queued line is written, or after timeoutMs if stdout does not take them. */
  flush(timeoutMs: number): Promise<void>
}

/**
 * newStdoutOutput writes log lines to file descriptor fd without ever blocking the event loop. Each
 * line is written at once, one system call: a stream or a per-turn batch costs the request more
 * than the line itself (BENCHMARKS.md, Instructions). When fd is a pipe or socket, what a
 * container's stdout is, and its reader stalls, the kernel refuses the write (EAGAIN) and lines
 * queue in memory up to maxQueuedBytes, written in order once the reader is back; past the bound
 * new lines are dropped and counted, and the count is reported once stdout keeps up again:
 * serving, /ready and stop signals never wait for a log reader (README.md, Logs).
 */
export function newStdoutOutput(fd = 1, maxQueuedBytes = 16 * 1024 * 1024): StdoutOutput {
  const stat = fstatSync(fd)
  // A non-blocking stream on a pipe makes the descriptor non-blocking, so writeSync never waits:
  // it writes or fails with EAGAIN, and the stream queues the rest until the reader is back.
  const backlog = stat.isFIFO() || stat.isSocket() ? new Socket({ fd, readable: false, writable: true }) : undefined
  backlog?.on('error', () => {}) // EPIPE: nobody reads stdout any more, and nowhere is left to say so
  let dropped = 0
  let idle: (() => void)[] = []
  function onWritten() {
    if (backlog === undefined || backlog.writableLength > 0) return
    for (const resolve of idle) resolve()
    idle = []
    if (dropped > 0 && output.onDropped) {
      const count = dropped
      dropped = 0
      output.onDropped(count) // logs a line
    }
  }
  const output: StdoutOutput = {
    write(line) {
      let rest: string | Buffer = line
      if (backlog === undefined || backlog.writableLength === 0) {
        let written = 0
        try {
          written = writeSync(fd, line)
        } catch (err) {
          // A file or terminal that refuses the write, or a pipe nobody reads, loses the line.
          if (backlog === undefined || (err as NodeJS.ErrnoException).code !== 'EAGAIN') return
        }
        // A pipe takes a write of up to 4096 bytes whole or not at all (PIPE_BUF); a file, whole.
        if (backlog === undefined || (written > 0 && line.length <= 1024)) return
        const bytes = Buffer.from(line)
        if (written === bytes.length) return
        rest = bytes.subarray(written)
      }
      if (backlog.writableLength + rest.length > maxQueuedBytes) {
        dropped++
        return
      }
      backlog.write(rest, onWritten)
    },
    flush(timeoutMs) {
      if (backlog === undefined || backlog.writableLength === 0) return Promise.resolve()
      return new Promise((resolve) => {
        const timer = setTimeout(resolve, timeoutMs)
        idle.push(() => resolve(clearTimeout(timer)))
      })
    },
  }
  return output
}
