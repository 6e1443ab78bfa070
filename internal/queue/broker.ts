// A RabbitMQ broker of the tests' own: Debian's rabbitmq-server run as the current user on free
// loopback ports, with its own node name, data directory, cookie and epmd, and no plugins; stopped,
// with every process it started, however the test ends. The tests never install it: .ci/run does.
import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { once } from 'node:events'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createConnection, createServer, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { connect } from 'amqplib'
import { within } from '../../test/rolling/workspace.ts'

// Debian's scripts, not the /usr/sbin wrappers, which would switch to the rabbitmq user and its
// data in /var/lib/rabbitmq.
const tools = {
  server: '/usr/lib/rabbitmq/bin/rabbitmq-server',
  ctl: '/usr/lib/rabbitmq/bin/rabbitmqctl',
  epmd: '/usr/bin/epmd',
}

/** user and password are the broker's only account; the tests check that the password is never logged. */
export const user = 'kickstart'
export const password = 'never-logged-5ecret'

// Bounds for failures only. A broker starts in about 5 s, slower on a loaded CI machine.
const startTimeoutMs = 90_000
const stopTimeoutMs = 60_000

/**
 * findRabbitMQ returns why the broker tests cannot run here, or undefined when they can. Under
 * CI=true there is no skipping: it throws, and the tests fail with the reason.
 */
export function findRabbitMQ(env: Readonly<Record<string, string | undefined>>): string | undefined {
  const missing = Object.values(tools).filter((path) => !existsSync(path))
  if (missing.length === 0) return undefined
  const reason = `RabbitMQ is not installed (missing ${missing.join(', ')}): apt-get install -y rabbitmq-server`
  if (env.CI === 'true') throw new Error(`${reason}; under CI=true the broker tests must run, so this is a failure`)
  return reason
}

/** QueueStats is one queue as `rabbitmqctl list_queues` sees it. */
export interface QueueStats {
  name: string
  type: string
  messages: number
  messages_ready: number
  messages_unacknowledged: number
  consumers: number
}

/** Broker is a running (or stopped) broker of the tests' own. */
export interface Broker {
  /** url connects as the broker's one user; the password is in it. */
  url: string
  port: number
  node: string
  /**
   * queues lists every queue with its message counts, from the broker itself: statistics, up to
   * 250 ms old.
   */
  queues(): Promise<QueueStats[]>
  /** stop stops the broker gracefully (SIGTERM) and resolves once it is gone; start starts it again, same data. */
  stop(): Promise<void>
  start(): Promise<void>
  /** output is the end of the broker's log, for failure messages. */
  output(): string
  /** dispose kills whatever still runs and removes the data. Synchronous, so it can run on 'exit'. */
  dispose(): void
}

/** startBroker starts a broker and resolves once it accepts AMQP connections. */
export async function startBroker(): Promise<Broker> {
  const dir = mkdtempSync(join(tmpdir(), 'kickstart-rabbitmq-'))
  const [port = 0, distPort = 0, epmdPort = 0] = await findFreePorts(3)
  const node = `kickstart-test-${process.pid}-${port}@localhost`
  writeFileSync(join(dir, 'enabled_plugins'), '[].\n') // no management or prometheus plugin: faster
  // rabbitmqctl list_queues reads statistics the queues emit every collect_statistics_interval
  // (5 s by default): every 250 ms, the counts a test waits for are current sooner.
  const conf = [`default_user = ${user}`, `default_pass = ${password}`, 'collect_statistics_interval = 250']
  writeFileSync(join(dir, 'rabbitmq.conf'), `${conf.join('\n')}\n`)
  const env = {
    PATH: process.env.PATH ?? '',
    HOME: dir, // where the Erlang cookie goes, for rabbitmqctl to find
    ERL_EPMD_PORT: String(epmdPort),
    RABBITMQ_NODENAME: node,
    RABBITMQ_NODE_IP_ADDRESS: '127.0.0.1',
    RABBITMQ_NODE_PORT: String(port),
    RABBITMQ_DIST_PORT: String(distPort),
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: '-kernel inet_dist_use_interface {127,0,0,1}',
    RABBITMQ_MNESIA_BASE: join(dir, 'mnesia'),
    RABBITMQ_LOG_BASE: join(dir, 'log'),
    RABBITMQ_LOGS: '-', // on stdout, where startup complete is awaited
    RABBITMQ_ENABLED_PLUGINS_FILE: join(dir, 'enabled_plugins'),
    RABBITMQ_CONFIG_FILE: join(dir, 'rabbitmq.conf'),
    RABBITMQ_ADVANCED_CONFIG_FILE: join(dir, 'advanced.config'),
    RABBITMQ_CONF_ENV_FILE: join(dir, 'rabbitmq-env.conf'), // absent: not /etc/rabbitmq's
  }
  let log: string[] = []
  // epmd in the foreground, a child of ours on a port of ours, rather than the daemon Erlang
  // would start and leave behind.
  const epmd = spawn(tools.epmd, ['-port', String(epmdPort), '-address', '127.0.0.1'], { env, stdio: 'ignore' })
  let server: ChildProcess | undefined

  async function start() {
    // detached: a process group of its own (the script, beam, its helpers), killed as one.
    const child = spawn(tools.server, [], { env, cwd: dir, detached: true, stdio: ['ignore', 'pipe', 'pipe'] })
    server = child
    const exited = once(child, 'exit')
    let text = '' // this start's output: the line it waits for may come in two chunks
    const started = new Promise<void>((resolve) => {
      const onData = (chunk: string) => {
        log = [...log, ...chunk.split('\n')].slice(-100)
        text = (text + chunk).slice(-1000)
        if (text.includes('Server startup complete')) resolve()
      }
      child.stdout.setEncoding('utf8').on('data', onData)
      child.stderr.setEncoding('utf8').on('data', onData)
    })
    await within(
      Promise.race([started, exited.then(() => Promise.reject(new Error(`rabbitmq-server exited:\n${output()}`)))]),
      startTimeoutMs,
      'rabbitmq-server to start',
    )
  }

  async function stop() {
    const child = server
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return
    const exited = once(child, 'exit')
    child.kill('SIGTERM') // the script's trap stops the node gracefully
    await within(exited, stopTimeoutMs, 'rabbitmq-server to stop').catch((err: unknown) => {
      killGroup(child)
      throw err
    })
  }

  function output() {
    return log.join('\n')
  }

  function dispose() {
    if (server !== undefined) killGroup(server)
    epmd.kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  }
  process.once('exit', dispose)

  try {
    await start()
  } catch (err) {
    dispose()
    throw err
  }
  return {
    url: `amqp://${user}:${password}@127.0.0.1:${port}`,
    port,
    node,
    async queues() {
      const args = ['-n', node, '-q', 'list_queues', 'name', 'type', 'messages', 'messages_ready']
      args.push('messages_unacknowledged', 'consumers', '--formatter', 'json')
      const { stdout } = await promisify(execFile)(tools.ctl, args, { env, cwd: dir, timeout: stopTimeoutMs })
      return JSON.parse(stdout) as QueueStats[]
    },
    stop,
    start,
    output,
    dispose() {
      process.off('exit', dispose)
      dispose()
    },
  }
}

function killGroup(child: ChildProcess): void {
  try {
    if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL')
  } catch {
    // gone already
  }
}

/** findFreePorts asks the kernel for count free loopback ports, held at once so they differ. */
async function findFreePorts(count: number): Promise<number[]> {
  const servers = Array.from({ length: count }, () => createServer())
  await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))))
  const ports = servers.map((server) => (server.address() as { port: number }).port)
  await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))))
  return ports
}

/** Publisher publishes test messages and waits for the broker's confirm of each. */
export interface Publisher {
  publish(queue: string, body: string, properties?: { messageId?: string; correlationId?: string }): Promise<void>
  /**
   * count asks the broker (a passive declare) for a queue's ready messages and consumers: a quick
   * look, unlike Broker.queues, which starts an Erlang VM for rabbitmqctl (about a second).
   */
  count(queue: string): Promise<{ messages: number; consumers: number }>
  close(): Promise<void>
}

/** newPublisher opens a connection with a confirm channel to url. */
export async function newPublisher(url: string): Promise<Publisher> {
  const connection = await connect(url)
  const channel = await connection.createConfirmChannel()
  return {
    publish: (queue, body, properties = {}) =>
      new Promise<void>((resolve, reject) => {
        // persistent, as a producer of jobs that must not be lost publishes them
        channel.sendToQueue(queue, Buffer.from(body), { persistent: true, ...properties }, (err: unknown) =>
          err ? reject(new Error(`the broker did not confirm a message to ${queue}`)) : resolve(),
        )
      }),
    async count(queue) {
      const { messageCount, consumerCount } = await channel.checkQueue(queue)
      return { messages: messageCount, consumers: consumerCount }
    },
    close: () => connection.close(),
  }
}

/** Proxy is a TCP relay to the broker that a test starts late or cuts, as a network would. */
export interface Proxy {
  port: number
  /** listen starts accepting connections, on the same port every time. */
  listen(): Promise<void>
  /** cut closes every relayed connection: each side sees its peer go away. */
  cut(): void
  close(): Promise<void>
}

/** newProxy returns a proxy to the broker on target, on a free port, not listening yet. */
export async function newProxy(target: number): Promise<Proxy> {
  const [port = 0] = await findFreePorts(1)
  const sockets = new Set<Socket>()
  const server = createServer((client) => {
    const upstream = createConnection({ host: '127.0.0.1', port: target })
    for (const socket of [client, upstream]) {
      sockets.add(socket)
      socket.on('error', () => {})
      socket.on('close', () => {
        sockets.delete(socket)
        client.destroy()
        upstream.destroy()
      })
    }
    client.pipe(upstream).pipe(client)
  })
  const cut = () => {
    for (const socket of sockets) socket.destroy()
  }
  return {
    port,
    listen: () => new Promise((resolve, reject) => server.once('error', reject).listen(port, '127.0.0.1', resolve)),
    cut,
    close() {
      cut()
      return new Promise((resolve) => server.close(() => resolve()))
    },
  }
}
