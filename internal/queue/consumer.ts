// The connection to RabbitMQ: open it, declare the topology, consume; when it is lost, reconnect
// with capped, jittered backoff; at shutdown, stop consuming, let handlers finish, close.
import { type Channel, type ChannelModel, type ConsumeMessage, connect } from 'amqplib'
import { type DeliveryOptions, type Handler, handleDelivery, type Logger } from './delivery.ts'

/** ConsumerOptions is what a consumer needs: the broker, the queues with their handlers, the limits. */
export interface ConsumerOptions {
  /** url is AMQP_URL: a secret, so it never reaches a log line or an error message. */
  url: string
  handlers: ReadonlyMap<string, Handler>
  prefetch: number
  maxRetries: number
  retryDelayMs: number
  log: Logger
  /** stopping aborts when shutdown begins: the consumer then takes no new message. */
  stopping: AbortSignal
}

/** Consumer is a connection to the broker that consumes queues, and keeps coming back. */
export interface Consumer {
  /** connect makes the first attempt; when it fails, it logs why and keeps trying in the background. */
  connect(): Promise<void>
  /** check throws, saying why, while the consumer is not connected: the readiness check. */
  check(): void
  /** close waits for the handlers in flight (aborting them when signal does), then closes the connection. */
  close(signal: AbortSignal): Promise<void>
}

// Reconnect delays: doubled from the first to the cap, each drawn from its upper half, so that
// instances that lost the broker together do not all come back at the same instant.
const reconnectFirstMs = 200
const reconnectMaxMs = 5000
// How long an attempt may take to reach the broker and open the connection.
const connectTimeoutMs = 5000

/** newConsumer returns a consumer that has not connected yet. */
export function newConsumer(options: ConsumerOptions): Consumer {
  const { log, stopping } = options
  const queues = [...options.handlers.keys()]
  const inflight = new Set<AbortController>()
  let current: { connection: ChannelModel; channel: Channel; tags: string[]; gone: Promise<unknown> } | undefined
  let reason = 'not connected yet'
  let connectedOnce = false
  let downSince = performance.now()
  let failures = 0
  let closed = false
  let attempting: Promise<void> = Promise.resolve()
  let timer: NodeJS.Timeout | undefined
  let idle = () => {}

  stopping.addEventListener('abort', () => stopConsuming(), { once: true })

  function attempt(): Promise<void> {
    attempting = open().then(up, (err: unknown) => {
      failures++
      if (failures === 1 && !connectedOnce) log.warn({ reason: describe(err) }, 'queue disconnected')
      reason = describe(err)
      retry()
    })
    return attempting
  }

  /** open connects, declares every queue and starts consuming them; on any failure it closes what it opened. */
  async function open() {
    const connection = await connect(options.url, { timeout: connectTimeoutMs })
    // amqplib emits every error again with 'close'; without a listener, an 'error' event would throw.
    connection.on('error', () => {})
    const gone = new Promise((resolve) => connection.once('close', resolve))
    let why: string | undefined
    connection.once('close', (err?: Error) => lost(connection, why ?? describe(err ?? 'connection closed')))
    try {
      const channel = await connection.createChannel()
      channel.on('error', (err: Error) => (why ??= describe(err)))
      // A channel the broker closed (a consumer timeout, an ack it refused) takes the connection
      // with it, so that one path, the reconnect, brings both back.
      channel.once('close', () => void connection.close().catch(() => {}))
      await channel.prefetch(options.prefetch)
      for (const queue of queues) await declareQueue(channel, queue)
      const tags: string[] = []
      for (const [queue, handler] of options.handlers) {
        const { maxRetries, retryDelayMs } = options
        const delivery: DeliveryOptions = { queue, handler, log, stopping, maxRetries, retryDelayMs }
        const onMessage = (message: ConsumeMessage | null) => {
          if (message !== null) return void deliver(channel, message, delivery)
          // The broker cancelled the consumer: the queue was deleted. Reconnecting declares it again.
          why = `the broker cancelled the consumer of ${queue}`
          void connection.close().catch(() => {})
        }
        tags.push((await channel.consume(queue, onMessage)).consumerTag)
      }
      return { connection, channel, tags, gone }
    } catch (err) {
      await connection.close().catch(() => {})
      throw err
    }
  }

  function up(opened: NonNullable<typeof current>) {
    if (closed) return void opened.connection.close().catch(() => {})
    current = opened
    // Down since the consumer was made, at first: then this is how long the start took to connect.
    const ms = Math.round(performance.now() - downSince)
    const attempts = failures + 1
    if (!connectedOnce) log.info({ queues, prefetch: options.prefetch, attempts, durationMs: ms }, 'queue connected')
    else log.info({ queues, downMs: ms, attempts }, 'queue reconnected')
    connectedOnce = true
    failures = 0
    if (stopping.aborted) stopConsuming()
  }

  function lost(connection: ChannelModel, why: string) {
    if (current?.connection !== connection) return // an attempt that failed, or the close at shutdown
    current = undefined
    reason = why
    downSince = performance.now()
    for (const controller of inflight) controller.abort(new Error('the connection to the broker was lost'))
    log.warn({ reason }, 'queue disconnected')
    retry()
  }

  function retry() {
    if (closed || stopping.aborted) return
    const ceilingMs = Math.min(reconnectMaxMs, reconnectFirstMs * 2 ** Math.max(0, failures - 1))
    timer = setTimeout(() => void attempt(), ceilingMs / 2 + (Math.random() * ceilingMs) / 2)
  }

  async function deliver(channel: Channel, message: ConsumeMessage, delivery: DeliveryOptions) {
    const controller = new AbortController()
    inflight.add(controller)
    try {
      await handleDelivery(channel, message, delivery, controller.signal)
    } finally {
      inflight.delete(controller)
      if (inflight.size === 0) idle()
    }
  }

  // cancelling resolves once the broker has confirmed the cancel, or the connection is gone.
  let cancelling = Promise.resolve()
  function stopConsuming() {
    clearTimeout(timer)
    const opened = current
    if (opened === undefined || opened.tags.length === 0) return
    const cancelled = opened.tags.splice(0).map((tag) => opened.channel.cancel(tag))
    cancelling = Promise.all(cancelled).then(
      () => {
        log.info({ inflight: inflight.size }, 'queue stopped consuming')
      },
      () => {}, // the connection went away meanwhile: nothing is consumed either way
    )
  }

  /** drain resolves once no message will come and no handler runs. */
  async function drain() {
    await attempting
    stopConsuming() // done already when shutdown began; not when a later add-on failed to start
    // Messages delivered before the broker confirms the cancel are in flight once it has.
    await cancelling
    if (inflight.size > 0) await new Promise<void>((resolve) => (idle = resolve))
  }

  /**
   * disconnect closes the channel, then the connection: the channel's close follows the acks on
   * the channel's own frame queue, and the broker answers it once it has taken them, whereas
   * amqplib sends a connection's close on a queue of its own, which can overtake acks given just
   * before (the broker ignores what follows a close). What is still unacked returns to its queue.
   */
  async function disconnect() {
    const opened = current
    current = undefined
    if (opened === undefined) return
    // A connection lost meanwhile never answers the channel's close: amqplib leaves it pending.
    await Promise.race([opened.channel.close().catch(() => {}), opened.gone])
    await opened.connection.close().catch(() => {}) // closed already: fine, the same holds
  }

  return {
    connect: attempt,
    check() {
      if (current === undefined) throw new Error(`not connected to the broker: ${reason}`)
    },
    async close(signal) {
      closed = true
      const aborted = new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }))
      signal.addEventListener('abort', () => {
        for (const controller of inflight) controller.abort(signal.reason)
      })
      await Promise.race([drain(), aborted])
      await disconnect()
    },
  }

  /** describe turns an error into a reason for logs and /ready, the URL and its password cut out. */
  function describe(err: unknown): string {
    return redact(err instanceof Error ? err.message : String(err), options.url)
  }
}

/**
 * declareQueue declares queue and its dead-letter queue `<queue>.dlq`, both quorum queues (README.md,
 * Topology). Declaring is idempotent; it fails, closing the channel, when a queue of that name
 * exists with other arguments.
 */
async function declareQueue(channel: Channel, queue: string): Promise<void> {
  await channel.assertQueue(`${queue}.dlq`, { durable: true, arguments: { 'x-queue-type': 'quorum' } })
  await channel.assertQueue(queue, {
    durable: true,
    arguments: {
      'x-queue-type': 'quorum',
      // Through the default exchange, which routes to the queue of that name.
      'x-dead-letter-exchange': '',
      'x-dead-letter-routing-key': `${queue}.dlq`,
      // The message leaves the queue only once the dead-letter queue has it (RabbitMQ 3.10+);
      // the broker requires reject-publish overflow for it.
      'x-dead-letter-strategy': 'at-least-once',
      'x-overflow': 'reject-publish',
    },
  })
}

/**
 * redact removes url, and its password in either encoding, from text. amqplib's and Node's error
 * messages name the host at most, but a reason reaches logs and /ready: no secret may.
 */
function redact(text: string, url: string): string {
  const password = URL.canParse(url) ? new URL(url).password : ''
  const secrets = [url, password, decode(password)].filter((s) => s !== '')
  return secrets.reduce((result, secret) => result.replaceAll(secret, '[REDACTED]'), text)
}

function decode(text: string): string {
  try {
    return decodeURIComponent(text)
  } catch {
    return text // not valid percent-encoding: amqplib's unescape keeps it as it is too
  }
}
