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
 * newStdoutOutput writes log lines to file descriptor fd without ever blocking the event loop. The
 * lines of one event-loop turn are joined and written together at its end: under load that
 * batches dozens of access lines per system call. When the reader of stdout stalls, lines queue in
 * memory up to maxQueuedBytes, then new lines are dropped and counted, and the count is logged
 * once stdout keeps up again: serving, /ready and stop signals never wait for a log reader
 * (README.md, Logs).
 */
export function newStdoutOutput(fd = 1, maxQueuedBytes = 16 * 1024 * 1024): StdoutOutput {
  const send = newSender(fd)
  let pending: string[] = []
  let queued = 0 // bytes pending or being written, counted as UTF-16 units: close enough for a bound
  let writing = false
  let dropped = 0
  let idle: (() => void)[] = []

  function flush() {
    if (writing) return
    if (pending.length === 0) {
      for (const resolve of idle) resolve()
      idle = []
      if (dropped > 0 && output.onDropped) {
        const count = dropped
        dropped = 0
        output.onDropped(count) // logs a line, which schedules the next flush
      }
      return
    }
    const data = pending.length === 1 ? (pending[0] ?? '') : pending.join('')
    pending = []
    writing = true
    send(data, () => {
      writing = false
      queued = pending.reduce((sum, line) => sum + line.length, 0)
      flush()
    })
  }
  const output: StdoutOutput = {
    write(line) {
      if (queued + line.length > maxQueuedBytes) {
        dropped++
        return
      }
      queued += line.length
      if (pending.push(line) === 1 && !writing) setImmediate(flush)
    },
    flush(timeoutMs) {
      if (pending.length === 0 && !writing) return Promise.resolve()
      return new Promise((resolve) => {
        const timer = setTimeout(resolve, timeoutMs)
        idle.push(() => resolve(clearTimeout(timer)))
      })
    },
  }
  return output
}

/**
 * newSender returns how to write a chunk to fd and be called back once it is written or lost
 * (EPIPE: nobody reads stdout any more, and nowhere is left to report it). A pipe or socket, what a
 * container's stdout is, is written as a non-blocking stream: libuv never waits for the reader. A
 * file or terminal is written at once, in one system call per batch: it does not stall for long,
 * and a write through the thread pool costs several times more CPU (BENCHMARKS.md).
 */
function newSender(fd: number): (data: string, done: () => void) => void {
  const stat = fstatSync(fd)
  if (stat.isFIFO() || stat.isSocket()) {
    const stream = new Socket({ fd, readable: false, writable: true })
    stream.on('error', () => {})
    return (data, done) => void stream.write(data, () => done())
  }
  return (data, done) => {
    try {
      // A file or terminal takes the whole write: short writes are a pipe's, which goes above.
      writeSync(fd, data)
    } catch {
      // A terminal or file that refuses the write leaves nowhere to report it: the batch is lost.
    }
    done()
  }
}
