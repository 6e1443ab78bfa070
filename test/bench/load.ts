// The benchmark's load generators: wrk when it is installed (or can be), autocannon otherwise.
// Both run as a separate process, pinned to their own CPU, and report the same numbers.
import { execFile, spawnSync } from 'node:child_process'
import { accessSync, constants, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { delimiter, join } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)

/** Tool is a load generator. */
export type Tool = 'wrk' | 'autocannon'

/** LoadOptions describes one load run against url. */
export interface LoadOptions {
  tool: Tool
  url: string
  connections: number
  seconds: number
  /** cpu pins the load generator with taskset; undefined leaves it unpinned. */
  cpu: number | undefined
  /** wrkScript is the path of the Lua file writeWrkScript wrote. */
  wrkScript: string
}

/** LoadResult is what one load run measured. */
export interface LoadResult {
  /** requests counts the responses received in full. */
  requests: number
  /** seconds is how long the tool says it ran (wrk's -d1s runs 1.1 s). */
  seconds: number
  rps: number
  p50Ms: number
  p99Ms: number
}

// wrk calls done() once at the end; a script that defines no request() or response() keeps wrk's
// fast path, so this costs nothing during the run. Latencies are in microseconds.
const wrkScript = `done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests":%d,"durationUs":%d,"p50Us":%d,"p99Us":%d,"socketErrors":%d,"badStatus":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
`

/** writeWrkScript writes the Lua script that makes wrk report JSON, and returns its path. */
export function writeWrkScript(dir: string): string {
  const path = join(dir, 'report.lua')
  writeFileSync(path, wrkScript)
  return path
}

/**
 * runLoad drives url for the given seconds and returns what the tool measured. It throws when any
 * request failed (socket error, timeout, non-2xx status): numbers from a failing server mean nothing.
 */
export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const [command, args] = options.tool === 'wrk' ? wrkCommand(options) : autocannonCommand(options)
  const pinned: [string, string[]] =
    options.cpu === undefined ? [command, args] : ['taskset', ['-c', String(options.cpu), command, ...args]]
  const { stdout } = await run(pinned[0], pinned[1], { timeout: (options.seconds + 60) * 1000, maxBuffer: 16 << 20 })
  const { result, failures } = options.tool === 'wrk' ? parseWrk(stdout) : parseAutocannon(stdout)
  if (failures !== '') throw new Error(`${options.tool} against ${options.url}: ${failures}`)
  return result
}

function wrkCommand({ url, connections, seconds, wrkScript }: LoadOptions): [string, string[]] {
  return ['wrk', ['-t1', `-c${connections}`, `-d${seconds}s`, '--timeout', '10s', '-s', wrkScript, url]]
}

interface WrkReport {
  requests: number
  durationUs: number
  p50Us: number
  p99Us: number
  socketErrors: number
  badStatus: number
}

function parseWrk(stdout: string): { result: LoadResult; failures: string } {
  const line = stdout.split('\n').find((l) => l.startsWith('{"requests"'))
  if (line === undefined) throw new Error(`wrk printed no report:\n${stdout}`)
  const r = JSON.parse(line) as WrkReport
  const failures =
    r.socketErrors + r.badStatus > 0 ? `${r.socketErrors} socket errors, ${r.badStatus} non-2xx/3xx responses` : ''
  const seconds = r.durationUs / 1e6
  const result = {
    requests: r.requests,
    seconds,
    rps: r.requests / seconds,
    p50Ms: r.p50Us / 1000,
    p99Ms: r.p99Us / 1000,
  }
  return { result, failures }
}

function autocannonCommand({ url, connections, seconds }: LoadOptions): [string, string[]] {
  const autocannon = createRequire(import.meta.url).resolve('autocannon')
  return [process.execPath, [autocannon, '-c', String(connections), '-d', String(seconds), '--json', url]]
}

interface AutocannonReport {
  duration: number
  errors: number
  timeouts: number
  non2xx: number
  requests: { total: number }
  latency: { p50: number; p99: number }
}

function parseAutocannon(stdout: string): { result: LoadResult; failures: string } {
  const r = JSON.parse(stdout) as AutocannonReport
  const failures =
    r.errors + r.timeouts + r.non2xx > 0
      ? `${r.errors} errors, ${r.timeouts} timeouts, ${r.non2xx} non-2xx responses`
      : ''
  // autocannon records latency in whole milliseconds, so its p50 and p99 are coarse.
  const result = {
    requests: r.requests.total,
    seconds: r.duration,
    rps: r.requests.total / r.duration,
    p50Ms: r.latency.p50,
    p99Ms: r.latency.p99,
  }
  return { result, failures }
}

/** chooseTool returns wrk when it is on PATH (Debian's wrk: .ci/run installs it), else autocannon. */
export function chooseTool(): Tool {
  return onPath('wrk') ? 'wrk' : 'autocannon'
}

function onPath(command: string): boolean {
  return (process.env.PATH ?? '').split(delimiter).some((dir) => {
    try {
      accessSync(join(dir, command), constants.X_OK)
      return true
    } catch {
      return false
    }
  })
}

/** canPin tells whether taskset can place processes on CPUs 0 and 1. */
export function canPin(): boolean {
  if (!onPath('taskset')) return false
  return spawnSync('taskset', ['-c', '1', 'true'], { stdio: 'ignore' }).status === 0
}
