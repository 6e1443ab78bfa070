// One counted run of `npm run bench:instr`: a server under valgrind's callgrind, one readiness
// request, then a number of keep-alive requests from instr-client.ts, then SIGTERM. The `summary:`
// line of callgrind's output is every user-space instruction the process ran, start to exit; two
// runs that differ only in their number of requests give the cost of one request.
import { spawnSync } from 'node:child_process'
import { closeSync, openSync, readSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { sendRequests, waitForReady } from './instr-client.ts'
import {
  type LogCount,
  type ServerOptions,
  type ServerProcess,
  countLogLines,
  listensOn,
  startServer,
  stopServer,
} from './servers.ts'

/** CountedRun is what countInstructions runs. */
export interface CountedRun {
  /** label names the run in messages and files: letters, digits, '-', '.'. */
  label: string
  /** options start the server; the wrapper and stdout are countInstructions'. */
  options: ServerOptions
  port: number
  requests: number
  connections: number
  /** idleMs keeps the server running this long, idle, after the requests: what it does meanwhile is driven by time alone. */
  idleMs: number
  stdout: 'pipe' | 'file' | 'none'
  /** accessLog says whether the server writes one access line per request (LOG_LEVEL info). */
  accessLog: boolean
  dir: string
  /** servers collects the running server, so that a failure elsewhere can kill it. */
  servers: Set<ServerProcess>
}

// Under callgrind, node starts in 5 to 30 s here (more while another callgrind runs); the bounds
// are generous because a slow machine is not a failure, only a hung server is.
const startTimeoutMs = 300_000
const stopTimeoutMs = 120_000

/**
 * NotListening is thrown when the server exited before it listened: most likely another process
 * took the port between findFreePort and the slow start under valgrind, and a new port will do.
 */
export class NotListening extends Error {}

/** valgrindVersion returns `valgrind --version`'s answer, or undefined when valgrind is not installed. */
export function valgrindVersion(): string | undefined {
  const result = spawnSync('valgrind', ['--version'], { encoding: 'utf8' })
  return result.status === 0 ? result.stdout.trim() : undefined
}

/** Counted is what one run counted: callgrind's summary, and the seconds from spawn to exit. */
export interface Counted {
  instructions: number
  seconds: number
}

/**
 * countInstructions runs run.options under callgrind, sends one readiness request and then
 * run.requests `GET /health` over run.connections connections, leaves it idle for run.idleMs,
 * stops it with SIGTERM, and returns callgrind's summary: the instructions the process ran. It
 * throws when the server fails, exits other than 0, or wrote an access-log line more or less than
 * one per request received.
 */
export async function countInstructions(run: CountedRun): Promise<Counted> {
  const started = performance.now()
  const outFile = join(run.dir, `${run.label}.callgrind`)
  const logFile = join(run.dir, `${run.label}.log`)
  const server = startServer({
    ...run.options,
    wrapper: ['valgrind', '--tool=callgrind', '--quiet', `--callgrind-out-file=${outFile}`],
    stdoutPipe: run.stdout === 'pipe',
    stdoutFile: run.stdout === 'file' ? logFile : undefined,
  })
  run.servers.add(server)
  // A pipe is read as it fills, as a container runtime does: a reader that stalled would make the
  // service queue its lines (internal/log.ts), another code path.
  const piped = server.child.stdout === null ? undefined : countLogLines(server.child.stdout)
  const alive = () => server.child.exitCode === null && server.child.signalCode === null
  const listening = () => listensOn(server.pid, run.port)
  try {
    await waitForReady(run.port, '/health', { listening, alive }, startTimeoutMs)
    await sendRequests(run.port, '/health', run.requests, run.connections)
    // Not a wait for anything: the idle time is what this run measures (timers, V8's own tasks).
    if (run.idleMs > 0) await sleep(run.idleMs)
  } catch (err) {
    server.child.kill('SIGKILL')
    run.servers.delete(server)
    const message = `${run.label}: ${(err as Error).message}\n${server.stderr()}`
    throw server.child.exitCode !== null && !listening() ? new NotListening(message) : new Error(message)
  }
  const exit = await stopServer(server, stopTimeoutMs)
  const seconds = (performance.now() - started) / 1000
  run.servers.delete(server)
  if (exit.code !== 0) {
    throw new Error(`${run.label}: exited with code ${exit.code} signal ${exit.signal}; stderr:\n${server.stderr()}`)
  }
  const lines = piped ?? (run.stdout === 'file' ? countLogLines(logFile) : undefined)
  if (lines !== undefined) checkAccessLog(run, await lines)
  return { instructions: readSummary(outFile), seconds } // the file stays in run.dir, for callgrind_annotate
}

/** checkAccessLog throws unless every line is JSON and the access lines match the requests sent, readiness included. */
function checkAccessLog(run: CountedRun, lines: LogCount): void {
  const expected = run.accessLog ? run.requests + 1 : 0
  if (lines.invalid > 0) throw new Error(`${run.label}: ${lines.invalid} log lines are not JSON: torn or interleaved`)
  if (lines.requests !== expected) {
    throw new Error(
      `${run.label}: ${run.requests + 1} requests sent (readiness included) but ${lines.requests} access-log lines written, expected ${expected}`,
    )
  }
}

/** readSummary returns the `summary:` figure of a callgrind output file, which is in its header. */
export function readSummary(file: string): number {
  const fd = openSync(file, 'r')
  const head = Buffer.alloc(64 * 1024)
  const length = readSync(fd, head, 0, head.length, 0)
  closeSync(fd)
  return parseSummary(head.toString('utf8', 0, length), file)
}

/** parseSummary reads the `summary:` line of callgrind output text; it throws when there is none. */
export function parseSummary(text: string, file = 'callgrind output'): number {
  const summary = /^summary: (\d+)$/m.exec(text)?.[1]
  if (summary === undefined) throw new Error(`no summary: line in ${file}`)
  return Number(summary)
}
