// The test helpers every test file shares: the service in-process through run() or as a real
// child process, a log sink that parses lines, a gate, and assertions on problem answers.
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import type { Readable } from 'node:stream'
import { EventEmitter, once } from 'node:events'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type { AddOn } from '../internal/addon.ts'
import type { Env, Vars } from '../internal/config.ts'
import type { Routes } from '../internal/router.ts'
import { newRoutes, type RouteDeps } from '../internal/routes.ts'
import { run } from '../internal/run.ts'

/** pkg is package.json: tests read the service's name and version from it, never a literal. */
export const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
  name: string
  version: string
}

/** main is the service's entry point, run from the sources as `npm run dev` does. */
export const main = fileURLToPath(new URL('../cmd/server/main.ts', import.meta.url))

/** LogLine is one parsed JSON log line. */
export type LogLine = Record<string, unknown> & { level: string; msg: string }

// A bound for failures only: tests never wait for time to pass, they wait for events.
const timeoutMs = 15_000

/** LogSink keeps every JSON line written to it, whole lines or pieces of them, and tells waiters. */
export interface LogSink {
  logs: LogLine[]
  /** raw holds each line as written, without its newline, for what parsing hides (its size). */
  raw: string[]
  write(chunk: string): void
  /** waitForLog resolves with the first line (already written or still to come) that matches. */
  waitForLog: (match: (line: LogLine) => boolean, what?: string) => Promise<LogLine>
}

/** newLogSink returns an empty LogSink. */
export function newLogSink(): LogSink {
  const logs: LogLine[] = []
  const raw: string[] = []
  const waiters = new Set<(line: LogLine) => void>()
  let pending = ''
  return {
    logs,
    raw,
    write(chunk) {
      const text = pending + chunk
      const end = text.lastIndexOf('\n') + 1
      pending = text.slice(end)
      for (const line of text.slice(0, end).split('\n')) {
        if (line === '') continue
        const parsed = JSON.parse(line) as LogLine
        raw.push(line)
        logs.push(parsed)
        for (const waiter of waiters) waiter(parsed)
      }
    },
    waitForLog(match, what = 'a matching log line') {
      const found = logs.find(match)
      if (found) return Promise.resolve(found)
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(waiter)
          reject(new Error(`timed out waiting for ${what}; logs:\n${logs.map((l) => JSON.stringify(l)).join('\n')}`))
        }, timeoutMs)
        timer.unref() // a bound for failures only: it must not hold the process once the test is done
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

/** Service is a running service under test. */
export interface Service {
  url: string
  port: number
  logs: LogLine[]
  /** events is the fake process: emit 'SIGTERM', 'uncaughtException'... on it. */
  events: EventEmitter
  /** exited resolves with run()'s exit code. */
  exited: Promise<number>
  waitForLog: LogSink['waitForLog']
  /** stop sends the signal and resolves with the exit code. */
  stop(signal?: 'SIGTERM' | 'SIGINT'): Promise<number>
}

/** StartOptions are what a test changes in the service besides its environment. */
export interface StartOptions {
  routes?: (deps: RouteDeps) => Routes | Promise<Routes>
  addOns?: readonly AddOn<any>[]
}

/**
 * startService starts run() with env (PORT defaults to 0) and resolves once the 'listening' line
 * is logged. It stops the service after test t unless the test did; without t, that is the
 * caller's job.
 */
export async function startService(
  t: { after(fn: () => Promise<void>): void } | undefined,
  env: Env = {},
  options: StartOptions = {},
): Promise<Service> {
  const sink = newLogSink()
  const events = new EventEmitter()
  const exited = run({ env: { PORT: '0', ...env }, stdout: sink, events, ...options })
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
  const service: Service = {
    url: `http://127.0.0.1:${port}`,
    port,
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

/** withRoutes returns the service's routes plus extra, for startService's routes option. */
export function withRoutes(extra: Routes) {
  return async (deps: RouteDeps): Promise<Routes> => ({ ...(await newRoutes(deps)), ...extra })
}

/** Child is the service as a real process. */
export interface Child extends Pick<LogSink, 'logs' | 'raw' | 'waitForLog'> {
  pid: number
  kill(signal: NodeJS.Signals): void
  /** stdout is the log lines' pipe: pause it to be a log reader that stalls. */
  stdout: Readable
  stderr(): string
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

/** ChildOptions are how a process differs from a plain `node cmd/server/main.ts`. */
export interface ChildOptions {
  /** execArgv go to node before the script (`--max-old-space-size=64`). */
  execArgv?: string[]
  /** nofile limits open file descriptors (`ulimit -n`, applied by sh before it execs node). */
  nofile?: number
}

/** spawnService starts `node cmd/server/main.ts` with env alone (PORT defaults to 0) and parses its stdout. */
export function spawnService(env: Record<string, string> = {}, { execArgv = [], nofile }: ChildOptions = {}): Child {
  // Node 24 warns on stderr that node:sqlite is experimental (the items example); Node 22 and 26 do
  // not. The tests hold the service's own stderr to nothing, so that one warning is left out.
  const node = [process.execPath, '--disable-warning=ExperimentalWarning', ...execArgv, main]
  const [command = '', ...args] =
    nofile === undefined ? node : ['sh', '-c', `ulimit -n ${nofile} && exec "$@"`, 'sh', ...node]
  const child = spawn(command, args, {
    env: { PATH: process.env.PATH, PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const sink = newLogSink()
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => sink.write(chunk))
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
  const exit = once(child, 'exit').then(([code, signal]) => ({ code, signal }) as Awaited<Child['exit']>)
  return {
    pid: child.pid ?? 0,
    kill: (signal) => child.kill(signal),
    stdout: child.stdout,
    stderr: () => stderr,
    logs: sink.logs,
    raw: sink.raw,
    waitForLog: sink.waitForLog,
    exit,
  }
}

/**
 * startProcess spawns the service (spawnService), resolves once it listens, and kills it after
 * test t if it still runs.
 */
export async function startProcess(
  t: { after(fn: () => void): void },
  env: Record<string, string> = {},
  options: ChildOptions = {},
): Promise<Child & { port: number }> {
  const child = spawnService({ HOST: '127.0.0.1', ...env }, options)
  t.after(() => child.kill('SIGKILL'))
  const listening = await Promise.race([
    child.waitForLog((l) => l.msg === 'listening', 'the listening line'),
    child.exit.then(({ code }) => {
      throw new Error(`the service exited with ${code} before listening: ${child.stderr()}`)
    }),
  ])
  return { ...child, port: listening.port as number }
}

/** newGate returns a promise and the function that opens it. */
export function newGate() {
  let open: () => void = () => {}
  const opened = new Promise<void>((resolve) => (open = resolve))
  return { opened, open }
}

/** assertProblem checks that res is a problem+json answer with status, and returns its body. */
export async function assertProblem(res: Response, status: number, detail?: RegExp): Promise<Record<string, unknown>> {
  assert.equal(res.status, status)
  assert.equal(res.headers.get('content-type'), 'application/problem+json')
  const body = (await res.json()) as Record<string, unknown>
  assert.equal(body.type, 'about:blank')
  assert.equal(body.status, status)
  assert.equal(typeof body.title, 'string')
  assert.equal(typeof body.detail, 'string')
  if (detail) assert.match(body.detail as string, detail)
  assert.doesNotMatch(JSON.stringify(body), /at .*\.[jt]s:\d+|Error:/, 'no stack or internal message')
  return body
}

/**
 * readmeTable returns the first two cells, variable and default, of the rows of the first table
 * after heading in markdown, without the header.
 */
export function readmeTable(markdown: string, heading: string): string[][] {
  const lines = markdown.slice(markdown.indexOf(`\n${heading}\n`)).split('\n')
  const start = lines.findIndex((line) => line.startsWith('|'))
  const end = lines.findIndex((line, i) => i > start && !line.startsWith('|'))
  return lines.slice(start + 2, end).map((line) => line.slice(2, -2).split(' | ').slice(0, 2))
}

/** declaredRows renders declared variables as the first two cells of README rows: name, default (or unset). */
export function declaredRows(vars: Vars): string[][] {
  return Object.values(vars).map((v) => [`\`${v.name}\``, v.default === '' ? 'unset' : `\`${v.default}\``])
}
