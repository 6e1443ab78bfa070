// The benchmark's process handling: start a server as a child process (pinned to a CPU, stdout to a
// file or a pipe, under valgrind if asked), wait for its first 200, read its resident memory from
// outside, stop it with SIGTERM, and count the access-log lines it wrote.
import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import {
  closeSync,
  createReadStream,
  existsSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
} from 'node:fs'
import { type IncomingHttpHeaders, get } from 'node:http'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import type { Readable } from 'node:stream'

/** ServerOptions says how to start one server process. */
export interface ServerOptions {
  /** script is the JavaScript file node runs, followed by args. */
  script: string
  args?: string[]
  /** nodeArgs go to node before the script: `--import`, `--cpu-prof`... */
  nodeArgs?: string[]
  /** env is added to PATH and, unless inheritNodeOptions is false, the bench's own NODE_OPTIONS. */
  env?: Record<string, string>
  inheritNodeOptions?: boolean
  /** stdoutFile receives the process's stdout, as in production; without it stdout is discarded. */
  stdoutFile?: string | undefined
  /** stdoutPipe makes stdout a pipe the caller reads (child.stdout), as a container runtime's is. */
  stdoutPipe?: boolean
  /** cpu pins the process with taskset; undefined leaves it unpinned. */
  cpu?: number | undefined
  /** node is the Node binary to run; the bench's own by default. */
  node?: string | undefined
  /** wrapper is a command and its arguments that run node (valgrind, say). */
  wrapper?: string[] | undefined
}

/** Exit is how a child process ended. */
export interface Exit {
  code: number | null
  signal: NodeJS.Signals | null
}

/** ServerProcess is a running server. */
export interface ServerProcess {
  child: ChildProcess
  pid: number
  exited: Promise<Exit>
  /** stderr returns what the process wrote to stderr so far. */
  stderr(): string
}

/** HealthResponse is one response read in full. */
export interface HealthResponse {
  status: number
  headers: IncomingHttpHeaders
  body: string
}

/**
 * startServer spawns node with options, through `taskset -c CPU` when a CPU is given (taskset
 * execs node, so the pid is node's) and then options.wrapper (whose pid it is then). It throws
 * when the process cannot be spawned at all.
 */
export function startServer(options: ServerOptions): ServerProcess {
  const [command = '', ...args] = [
    ...(options.cpu === undefined ? [] : ['taskset', '-c', String(options.cpu)]),
    ...(options.wrapper ?? []),
    options.node ?? process.execPath,
    ...(options.nodeArgs ?? []),
    options.script,
    ...(options.args ?? []),
  ]
  const stdout = options.stdoutPipe
    ? 'pipe'
    : options.stdoutFile === undefined
      ? 'ignore'
      : openSync(options.stdoutFile, 'w')
  const child = spawn(command, args, {
    // PATH alone, so nothing inherited changes start-up (NODE_EXTRA_CA_CERTS costs node 30 ms here),
    // and NODE_OPTIONS when set, to measure the flags the image runs with (Dockerfile).
    env: {
      PATH: process.env.PATH ?? '',
      ...(options.inheritNodeOptions === false ? {} : nodeOptions()),
      ...options.env,
    },
    stdio: ['ignore', stdout, 'pipe'],
  })
  if (typeof stdout === 'number') closeSync(stdout) // the child holds its own copy
  if (child.pid === undefined) throw new Error(`cannot spawn ${command} ${args.join(' ')}`)
  let stderr = ''
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
  const exited = once(child, 'exit').then(([code, signal]) => ({ code, signal }) as Exit)
  return { child, pid: child.pid, exited, stderr: () => stderr }
}

/**
 * waitForOK polls url until it answers 200 and returns that response. It retries refused
 * connections every millisecond (the poll interval bounds the spawn-time resolution), and throws
 * when the server exits first or timeoutMs passes.
 */
export async function waitForOK(server: ServerProcess, url: string, timeoutMs = 10_000): Promise<HealthResponse> {
  const deadline = performance.now() + timeoutMs
  for (;;) {
    if (server.child.exitCode !== null || server.child.signalCode !== null) {
      throw new Error(
        `server exited (${server.child.exitCode ?? server.child.signalCode}) before answering ${url}: ${server.stderr()}`,
      )
    }
    try {
      const res = await readURL(url)
      if (res.status === 200) return res
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ECONNREFUSED') throw err
    }
    if (performance.now() > deadline) throw new Error(`no 200 from ${url} within ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, 1))
  }
}

/** readURL GETs url on a fresh connection (no keep-alive agent) and reads the whole body. */
export function readURL(url: string): Promise<HealthResponse> {
  return new Promise((resolve, reject) => {
    const req = get(url, { agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => (body += chunk))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
      res.on('error', reject)
    })
    req.setTimeout(5000, () => req.destroy(new Error(`timed out reading ${url}`)))
    req.on('error', reject)
  })
}

/** stopServer sends SIGTERM and resolves with the exit once the process is gone; SIGKILL after timeoutMs. */
export async function stopServer(server: ServerProcess, timeoutMs = 15_000): Promise<Exit> {
  if (server.child.exitCode !== null || server.child.signalCode !== null) return server.exited
  server.child.kill('SIGTERM')
  const timer = setTimeout(() => server.child.kill('SIGKILL'), timeoutMs)
  const exit = await server.exited
  clearTimeout(timer)
  return exit
}

/** readRSS returns the process's resident set size in MiB, read from /proc (Linux only). */
export function readRSS(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kB = /^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1]
  if (kB === undefined) throw new Error(`no VmRSS in /proc/${pid}/status`)
  return Number(kB) / 1024
}

// Linux reports process CPU time in clock ticks of 1/100 s on every mainstream architecture.
const ticksPerSecond = 100

/** readCPUSeconds returns the user + system CPU time the process (all its threads) has used, from /proc. */
export function readCPUSeconds(pid: number): number {
  // Fields after the parenthesised command name, which may itself hold spaces: utime is the 12th.
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(') ') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond
}

/**
 * listensOn tells whether process pid listens on TCP port, from /proc (Linux only): a listening
 * socket on that port whose inode is one of the process's file descriptors. A port chosen free
 * earlier may be taken by another process before a slow server listens on it; this tells which.
 */
export function listensOn(pid: number, port: number): boolean {
  try {
    const inodes = new Set<string>()
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      const inode = /^socket:\[(\d+)\]$/.exec(readLink(`/proc/${pid}/fd/${fd}`))?.[1]
      if (inode !== undefined) inodes.add(inode)
    }
    // sl local_address rem_address st ... inode: state 0A is LISTEN; an address ends in :PORT, hex.
    const lines = ['tcp', 'tcp6'].flatMap((table) => readFileSync(`/proc/${pid}/net/${table}`, 'utf8').split('\n'))
    return lines.some((line) => {
      const fields = line.trim().split(/\s+/)
      return (
        fields[3] === '0A' &&
        inodes.has(fields[9] ?? '') &&
        Number.parseInt(fields[1]?.split(':')[1] ?? '', 16) === port
      )
    })
  } catch {
    return false // the process is gone
  }
}

/** readLink returns where a link points, '' when it is gone (a descriptor closed since it was listed). */
function readLink(path: string): string {
  try {
    return readlinkSync(path)
  } catch {
    return ''
  }
}

/** LogCount is what countLogLines found in a log file. */
export interface LogCount {
  /**
   * requests counts the requests the log accounts for: an access line each (msg "request"), and
   * those the shedding add-on left out of the access log and counted in its summaries.
   */
  requests: number
  other: number
  /** invalid counts lines that are not a JSON object: torn or interleaved writes. */
  invalid: number
}

/** countLogLines reads JSON log lines, from a file or a stream to its end, and counts the access-log lines. */
export async function countLogLines(source: string | Readable): Promise<LogCount> {
  const count: LogCount = { requests: 0, other: 0, invalid: 0 }
  const input = typeof source === 'string' ? createReadStream(source) : source
  const lines = createInterface({ input, crlfDelay: Infinity })
  for await (const line of lines) {
    if (line === '') continue
    let parsed: unknown
    try {
      parsed = JSON.parse(line)
    } catch {
      count.invalid++
      continue
    }
    if (typeof parsed !== 'object' || parsed === null) count.invalid++
    else if ((parsed as { msg?: unknown }).msg === 'request') count.requests++
    else if ((parsed as { msg?: unknown }).msg === 'requests shed')
      count.requests += Number((parsed as { shed?: unknown }).shed)
    else count.other++
  }
  return count
}

/** readLogLines returns the first lines of a JSON-lines log file, parsed; lines that are not JSON are left out. */
export async function readLogLines(file: string, limit = 100): Promise<{ msg?: unknown; [field: string]: unknown }[]> {
  const parsed: { msg?: unknown }[] = []
  const lines = createInterface({ input: createReadStream(file), crlfDelay: Infinity })
  for await (const line of lines) {
    try {
      parsed.push(JSON.parse(line) as { msg?: unknown })
    } catch {
      // a torn line: countLogLines reports those
    }
    if (parsed.length >= limit) break
  }
  return parsed
}

/** findFreePort asks the kernel for a free TCP port (on every interface, as the servers listen). */
export async function findFreePort(): Promise<number> {
  const server = createServer()
  server.listen(0)
  await once(server, 'listening')
  const address = server.address()
  server.close()
  await once(server, 'close')
  if (address === null || typeof address === 'string') throw new Error('no port from the kernel')
  return address.port
}

/** nodeOptions passes the bench's own NODE_OPTIONS on to the servers it starts, when it has any. */
export function nodeOptions(): { NODE_OPTIONS?: string } {
  const value = process.env.NODE_OPTIONS
  return value ? { NODE_OPTIONS: value } : {}
}

/**
 * makeWorkDir makes a directory for the servers' stdout files and other scratch, in RAM (/dev/shm)
 * where there is one. A file on disk made the service's throughput depend on the kernel's
 * writeback of earlier runs' gigabytes of logs, which the bare server never sees; a container's
 * stdout is a pipe, which does not wait for a disk either. The write() per line is the same.
 */
export function makeWorkDir(prefix = 'kickstart-bench-'): string {
  try {
    if (existsSync('/dev/shm')) return mkdtempSync(join('/dev/shm', prefix))
  } catch {
    // not writable: fall through to the temporary directory
  }
  return mkdtempSync(join(tmpdir(), prefix))
}
