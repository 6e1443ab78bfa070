// haproxy as the load balancer in front of the instances: installed from Debian when missing, its
// config generated from the check settings, run in the foreground, and read through its stats
// socket (per-server state and counters).
import { spawnSync } from 'node:child_process'
import { existsSync, writeFileSync } from 'node:fs'
import { createConnection } from 'node:net'
import { delimiter, join } from 'node:path'
import { type Child, type Workspace, within } from './workspace.ts'

/** Checks are haproxy's active health checks: GET /ready, which answers 503 once shutdown begins. */
export interface Checks {
  /** interMs is the time between two checks of one server. */
  interMs: number
  /** fall failed checks in a row mark a server DOWN. */
  fall: number
  /** rise passed checks in a row mark it UP again. */
  rise: number
  /** timeoutMs bounds one check once connected (`timeout check`). */
  timeoutMs: number
}

/**
 * detectionMs returns the longest haproxy can keep sending requests to a server whose /ready turned
 * 503: up to inter until the next check, fall failing checks inter apart, the last one taking up
 * to its timeout. A service must keep serving at least this long after SIGTERM (SHUTDOWN_DELAY).
 */
export function detectionMs(checks: Checks): number {
  return checks.interMs * checks.fall + checks.timeoutMs
}

/** BalancerOptions says how to put haproxy in front of servers. */
export interface BalancerOptions {
  binary: string
  port: number
  servers: { name: string; port: number }[]
  /** checks are the active health checks; null leaves only passive failure handling, like nginx open source. */
  checks: Checks | null
  /** retries is how often haproxy retries a failed connection or an empty response on another server. */
  retries: number
}

/** ServerStats is what haproxy's stats say about one backend server. */
export interface ServerStats {
  name: string
  /** status is UP, DOWN, 'UP 1/2' (going down), 'DOWN 1/2' (going up) or 'no check'. */
  status: string
  /** lastCheck is the result of the last check: L7OK when it answered 200, L7STS for another status, L4CON when refused. */
  lastCheck: string
  /** forwarded counts the requests sent to the server (stot: one stream per request). Checks are not counted. */
  forwarded: number
  responses5xx: number
  connectErrors: number
  responseErrors: number
  retries: number
  redispatches: number
}

/** Balancer is a running haproxy. */
export interface Balancer {
  child: Child
  /** logFile receives haproxy's log: abnormal requests and health-check transitions. */
  logFile: string
  /** stats returns the current stats of every backend server. */
  stats(): Promise<ServerStats[]>
  /**
   * waitForStatus polls until server has status and returns the time it saw it (Date.now()). UP
   * counts only once a check has passed: haproxy takes a server to be UP before its first check.
   */
  waitForStatus(server: string, status: 'UP' | 'DOWN', timeoutMs: number): Promise<number>
  /** waitForForwarded polls until haproxy has sent server at least count requests in all. */
  waitForForwarded(server: string, count: number, timeoutMs: number): Promise<void>
  /** stop ends haproxy and resolves once it is gone. */
  stop(): Promise<void>
}

// How often the stats are read while waiting: the resolution of the detection times reported.
const pollMs = 20

/**
 * findHaproxy returns the path of haproxy. It installs nothing (.ci/run does, visibly): where it is
 * missing it throws, saying how to install it.
 */
export function findHaproxy(): string {
  const found = whichHaproxy()
  if (found === undefined) throw new Error('haproxy is missing: apt-get install -y haproxy (Debian)')
  return found
}

function whichHaproxy(): string | undefined {
  // /usr/sbin is where Debian puts it and is not on every user's PATH.
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/local/sbin']
  return dirs
    .filter((dir) => dir !== '')
    .map((dir) => join(dir, 'haproxy'))
    .find((path) => existsSync(path))
}

/** readVersion returns haproxy's version, e.g. 2.6.12-1+deb12u3. */
export function readVersion(binary: string): string {
  const out = spawnSync(binary, ['-v'], { encoding: 'utf8' }).stdout
  return /version (\S+)/.exec(out)?.[1] ?? 'unknown'
}

/**
 * newConfig writes haproxy's configuration: keep-alive on both sides (idle server connections
 * reused by any request), round robin, no retries unless asked, and only abnormal requests logged
 * (5xx, retries, connection errors), with the client's X-Request-Id so a failure can be traced.
 */
export function newConfig(options: BalancerOptions, socket: string): string {
  const { checks, retries } = options
  const check = checks === null ? '' : ` check inter ${checks.interMs}ms fall ${checks.fall} rise ${checks.rise}`
  const lines = [
    'global',
    `  stats socket ${socket} mode 600 level user`,
    '  log stdout format raw local0 info',
    'defaults',
    '  mode http',
    '  log global',
    '  option httplog',
    '  option dontlog-normal',
    '  option log-health-checks',
    '  timeout connect 2s',
    '  timeout client 30s',
    '  timeout server 30s',
    '  timeout http-keep-alive 30s',
    `  timeout check ${checks?.timeoutMs ?? 1000}ms`,
    // haproxy retries a refused connection 3 times by default; 0 shows every failure the service causes.
    `  retries ${retries}`,
    ...(retries > 0 ? ['  option redispatch 1', '  retry-on conn-failure empty-response'] : []),
    'frontend web',
    `  bind 127.0.0.1:${options.port}`,
    '  option http-keep-alive',
    '  capture request header X-Request-Id len 64',
    '  default_backend service',
    'backend service',
    '  balance roundrobin',
    // always: even a client's first request may take an idle server connection, the harshest reuse.
    '  http-reuse always',
    '  option httpchk',
    '  http-check send meth GET uri /ready ver HTTP/1.1 hdr Host haproxy',
    '  http-check expect status 200',
    ...options.servers.map((server) => `  server ${server.name} 127.0.0.1:${server.port}${check}`),
  ]
  return `${lines.join('\n')}\n`
}

/**
 * startBalancer writes the config into the workspace, runs haproxy in the foreground (its log on
 * haproxy.log) and resolves once its stats socket answers. It throws when haproxy exits first.
 */
export async function startBalancer(workspace: Workspace, options: BalancerOptions): Promise<Balancer> {
  const socket = join(workspace.dir, 'haproxy.sock')
  const config = join(workspace.dir, 'haproxy.cfg')
  writeFileSync(config, newConfig(options, socket))
  const logFile = join(workspace.dir, 'haproxy.log')
  const child = workspace.spawn(options.binary, ['-db', '-f', config], {}, logFile)

  async function stats(): Promise<ServerStats[]> {
    if (!child.running()) throw new Error(`haproxy exited: ${child.stderr().trim()}`)
    return parseStats(await ask(socket, 'show stat'))
  }
  async function poll(what: string, timeoutMs: number, done: (server: ServerStats) => boolean, name: string) {
    const deadline = performance.now() + timeoutMs
    for (;;) {
      const server = (await stats()).find((row) => row.name === name)
      if (server === undefined) throw new Error(`haproxy has no server ${name}`)
      if (done(server)) return Date.now()
      if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
      await new Promise((resolve) => setTimeout(resolve, pollMs))
    }
  }

  const deadline = performance.now() + 10_000
  for (;;) {
    try {
      await stats()
      break
    } catch (err) {
      if (!child.running() || performance.now() > deadline) throw err
      await new Promise((resolve) => setTimeout(resolve, pollMs))
    }
  }
  return {
    child,
    logFile,
    stats,
    waitForStatus: (name, status, timeoutMs) =>
      poll(
        `haproxy to report ${name} ${status}`,
        timeoutMs,
        (server) => server.status === status && (status === 'DOWN' || server.lastCheck === 'L7OK'),
        name,
      ),
    async waitForForwarded(name, count, timeoutMs) {
      const what = `haproxy to send ${name} ${count} requests`
      await poll(what, timeoutMs, (server) => server.forwarded >= count, name)
    },
    async stop() {
      if (!child.running()) return
      child.process.kill('SIGTERM') // a hard stop: nothing is in flight any more
      await within(child.exited, 5000, 'haproxy to exit after SIGTERM')
    },
  }
}

/** ask sends one command to haproxy's stats socket and resolves with the whole answer. */
function ask(socket: string, command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let answer = ''
    const connection = createConnection(socket, () => connection.end(`${command}\n`))
    connection.setEncoding('utf8')
    connection.on('data', (chunk: string) => (answer += chunk))
    connection.on('end', () => resolve(answer))
    connection.on('error', reject)
  })
}

/** parseStats reads the backend servers out of `show stat` CSV, by column name. */
export function parseStats(csv: string): ServerStats[] {
  const [header = '', ...rows] = csv.split('\n')
  const columns = header.replace(/^# /, '').split(',')
  const servers: ServerStats[] = []
  for (const row of rows) {
    const values = row.split(',')
    const field = (name: string) => values[columns.indexOf(name)] ?? ''
    const count = (name: string) => Number(field(name) || 0)
    if (field('pxname') !== 'service' || field('svname') === 'BACKEND' || field('svname') === '') continue
    servers.push({
      name: field('svname'),
      status: field('status'),
      lastCheck: field('check_status'),
      forwarded: count('stot'),
      responses5xx: count('hrsp_5xx'),
      connectErrors: count('econ'),
      responseErrors: count('eresp'),
      retries: count('wretr'),
      redispatches: count('wredis'),
    })
  }
  return servers
}
