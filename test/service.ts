// startService runs the whole service in-process through run(), on a free port, the way
// cmd/server/main.ts does, with a fake process (an EventEmitter) and a log sink the test can read.
import { EventEmitter } from 'node:events'
import type { Env } from '../internal/config.ts'
import type { DebugRouteDeps } from '../internal/debug.ts'
import { run } from '../internal/run.ts'
import type { RouteDeps, Routes } from '../internal/routes.ts'

/** LogLine is one parsed JSON log line. */
export type LogLine = Record<string, unknown> & { level: string; msg: string }

/** Service is a running service under test. */
export interface Service {
  url: string
  port: number
  /** debugUrl is the debug listener's base URL when env sets DEBUG_ADDR, otherwise ''. */
  debugUrl: string
  /** logs holds every log line written so far. */
  logs: LogLine[]
  /** events is the fake process: emit 'SIGTERM', 'uncaughtException'... on it. */
  events: EventEmitter
  /** exited resolves with run()'s exit code. */
  exited: Promise<number>
  /** waitForLog resolves with the first line (already written or still to come) that matches. */
  waitForLog(match: (line: LogLine) => boolean, what?: string): Promise<LogLine>
  /** stop sends the signal and resolves with the exit code. */
  stop(signal?: 'SIGTERM' | 'SIGINT'): Promise<number>
}

// A bound for failures only: tests never wait for time to pass, they wait for events.
const timeoutMs = 15_000

/** newLogSink returns a pino destination that parses and keeps every line, and tells waiters. */
export function newLogSink() {
  const logs: LogLine[] = []
  const waiters = new Set<(line: LogLine) => void>()
  return {
    logs,
    write(chunk: string) {
      for (const text of chunk.split('\n')) {
        if (text === '') continue
        const line = JSON.parse(text) as LogLine
        logs.push(line)
        for (const waiter of waiters) waiter(line)
      }
    },
    waitForLog(this: void, match: (line: LogLine) => boolean, what = 'a matching log line'): Promise<LogLine> {
      const found = logs.find(match)
      if (found) return Promise.resolve(found)
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(waiter)
          reject(new Error(`timed out waiting for ${what}; logs:\n${logs.map((l) => JSON.stringify(l)).join('\n')}`))
        }, timeoutMs)
        const waiter = (line: LogLine) => {
          if (!match(line)) return
          clearTimeout(timer)
          waiters.delete(waiter)
          resolve(line)
        }
        waiters.add(waiter)
      })
    },
  }
}

/**
 * startService starts run() with env (PORT defaults to 0 and LOG_LEVEL to info) and resolves once
 * the 'listening' line is logged, which follows the 'debug listening' line when env sets
 * DEBUG_ADDR. It stops the service after test t unless the test did; without t, stopping is the
 * caller's job.
 */
export async function startService(
  t: { after(fn: () => Promise<void>): void } | undefined,
  env: Env = {},
  routes?: (deps: RouteDeps) => Routes,
  debugRoutes?: (deps: DebugRouteDeps) => Routes,
): Promise<Service> {
  const sink = newLogSink()
  const events = new EventEmitter()
  const exited = run({ env: { PORT: '0', ...env }, stdout: sink, events, routes, debugRoutes })
  let done = false
  void exited.finally(() => (done = true))
  const listening = await Promise.race([
    sink.waitForLog((line) => line.msg === 'listening', 'the listening line'),
    exited.then((code) => {
      throw new Error(`run() returned ${code} before listening; logs:\n${JSON.stringify(sink.logs)}`)
    }),
  ]).catch(async (err: unknown) => {
    events.emit('SIGINT', 'SIGINT') // a service that did start must not keep the test process alive
    events.emit('SIGINT', 'SIGINT')
    await exited
    throw err
  })
  const port = listening.port as number
  const debug = sink.logs.find((line) => line.msg === 'debug listening')
  const service: Service = {
    url: `http://127.0.0.1:${port}`,
    port,
    debugUrl: debug === undefined ? '' : `http://127.0.0.1:${debug.port as number}`,
    logs: sink.logs,
    events,
    exited,
    waitForLog: sink.waitForLog,
    stop(signal = 'SIGTERM') {
      events.emit(signal, signal)
      return exited
    },
  }
  t?.after(async () => {
    if (!done) await service.stop()
  })
  return service
}
