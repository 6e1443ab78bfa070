// The queue add-on: its variables and README table, then the service in-process against a real
// RabbitMQ, one broker for the file (its own ports, node name and data): topology, acks, retries
// and dead letters, shutdown, a broker out of reach, lost and restarted. Without rabbitmq-server
// the broker tests skip, saying why; under CI=true that is a failure.
import assert from 'node:assert/strict'
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { readFileSync } from 'node:fs'
import { after, before, describe, it, type TestContext } from 'node:test'
import { connect } from 'amqplib'
import { parseConfig } from '../config.ts'
import { declaredRows, type LogLine, newGate, readmeTable, type Service, startService } from '../../test/service.ts'
import { type Broker, findRabbitMQ, newProxy, newPublisher, password, type Publisher, startBroker } from './broker.ts'
import { type Handler, MalformedMessage } from './delivery.ts'
import { newQueueAddOn, newQueueVars } from './queue.ts'

describe('queue variables', () => {
  it('parse with defaults, and refuse what they cannot use, never echoing AMQP_URL', () => {
    const vars = newQueueVars(['emails', 'thumbnails'])
    const parse = (env: Record<string, string>) => parseConfig(env, vars)
    assert.deepEqual(parse({}), {
      config: { amqpUrl: null, queues: ['emails', 'thumbnails'], prefetch: 10, maxRetries: 5, retryDelayMs: 1000 },
      problems: [],
    })
    const env = {
      AMQP_URL: 'amqps://u:p@rabbitmq:5671/orders',
      QUEUES: 'thumbnails, emails,thumbnails',
      QUEUE_PREFETCH: '65535',
      QUEUE_MAX_RETRIES: '0',
      QUEUE_RETRY_DELAY: '250ms',
    }
    assert.deepEqual(parse(env).config, {
      amqpUrl: 'amqps://u:p@rabbitmq:5671/orders',
      queues: ['thumbnails', 'emails'],
      prefetch: 65535,
      maxRetries: 0,
      retryDelayMs: 250,
    })
    const url = 'an amqp:// or amqps:// URL, like amqp://user:password@rabbitmq:5672/vhost'
    const cases: [Record<string, string>, string][] = [
      [{ AMQP_URL: 'http://u:hunter2@rabbitmq' }, `Expected \`AMQP_URL\` to be ${url}, got a value that is not`],
      [{ AMQP_URL: 'amqp://' }, `Expected \`AMQP_URL\` to be ${url}, got a value that is not`],
      [
        { QUEUES: 'emails,videos' },
        'Expected `QUEUES` to be a comma-separated list of queues from internal/queue/handlers.ts (emails, thumbnails), got `emails,videos`',
      ],
      [{ QUEUE_PREFETCH: '0' }, 'Expected `QUEUE_PREFETCH` to be an integer from 1 to 65535, got `0`'],
      [{ QUEUE_PREFETCH: '65536' }, 'Expected `QUEUE_PREFETCH` to be an integer from 1 to 65535, got `65536`'],
      [{ QUEUE_MAX_RETRIES: '101' }, 'Expected `QUEUE_MAX_RETRIES` to be an integer from 0 to 100, got `101`'],
      [{ QUEUE_MAX_RETRIES: '-1' }, 'Expected `QUEUE_MAX_RETRIES` to be an integer from 0 to 100, got `-1`'],
      [
        { QUEUE_RETRY_DELAY: '5' },
        'Expected `QUEUE_RETRY_DELAY` to be a duration with a unit, like 500ms, 10s, 1m or 1m30s, got `5`',
      ],
    ]
    for (const [given, problem] of cases) assert.deepEqual(parse(given).problems, [problem], JSON.stringify(given))
  })

  it("hold the README's variable table to the declaration", () => {
    const readme = readFileSync(new URL('README.md', import.meta.url), 'utf8')
    assert.deepEqual(readmeTable(readme, '## Configuration'), declaredRows(newQueueVars(['emails'])))
  })
})

// A broker restart on a loaded machine takes up to a minute; each wait has its own bound.
const timeout = 240_000

describe('the queue add-on against RabbitMQ', { timeout }, () => {
  let broker: Broker | undefined
  let skip: string | undefined
  let queues = 0
  before(async () => {
    skip = findRabbitMQ(process.env)
    if (skip === undefined) broker = await startBroker()
  })
  after(async () => {
    await broker?.stop()
    broker?.dispose()
  })

  /** setUp returns the broker, a publisher and a fresh queue name, or skips t when there is no broker. */
  async function setUp(t: TestContext): Promise<{ broker: Broker; publisher: Publisher; queue: string } | undefined> {
    if (broker === undefined) {
      t.skip(skip)
      return undefined
    }
    const publisher = await newPublisher(broker.url)
    t.after(() => publisher.close().catch(() => {})) // gone with a restarted broker
    return { broker, publisher, queue: `test-${++queues}` }
  }

  /** startConsumer starts the service in-process consuming queue with handler. */
  function startConsumer(t: TestContext, queue: string, handler: Handler, env: Record<string, string> = {}) {
    const addOn = newQueueAddOn({ [queue]: () => handler })
    return startService(t, { AMQP_URL: broker?.url ?? '', QUEUE_RETRY_DELAY: '10ms', ...env }, { addOns: [addOn] })
  }

  it('declares each queue and its dead-letter queue as quorum queues, idempotently, and acks each message after its handler', async (t) => {
    const setup = await setUp(t)
    if (setup === undefined) return
    const { broker, publisher, queue } = setup
    const told = listen(t)
    const handled: string[] = []
    const service = await startConsumer(t, queue, async (message) => void handled.push(message.content.toString()))
    const connected = await service.waitForLog((l) => l.msg === 'queue connected')
    assert.deepEqual(connected.queues, [queue])
    // A second instance declares the same topology, as every instance of a deployment does.
    const second = await startConsumer(t, queue, async () => assert.fail('the first instance takes every message'))
    assert.equal(await second.stop(), 0)

    await publisher.publish(queue, 'one', { messageId: 'a-1', correlationId: 'order-7' })
    await publisher.publish(queue, 'two', { messageId: 'a-2' })
    const line = await waitForOutcome(service, 'a-1', 'acked')
    assert.deepEqual(
      { level: line.level, queue: line.queue, correlationId: line.correlationId, attempt: line.attempt },
      { level: 'info', queue, correlationId: 'order-7', attempt: 1 },
    )
    assert.equal(typeof line.durationMs, 'number')
    await waitForOutcome(service, 'a-2', 'acked')
    assert.deepEqual(handled, ['one', 'two'])
    assert.deepEqual(
      told.filter((report) => report.queue === queue).map(({ queue, outcome }) => ({ queue, outcome })),
      [
        { queue, outcome: 'acked' },
        { queue, outcome: 'acked' },
      ],
    )
    assert.equal((await fetch(`${service.url}/ready`)).status, 200)
    await waitForCounts(publisher, queue, 0, 0)
    const stats = (await broker.queues()).filter((q) => q.name.startsWith(queue))
    assert.deepEqual(
      stats.map(({ name, type, messages, messages_unacknowledged }) => [name, type, messages, messages_unacknowledged]),
      [
        [queue, 'quorum', 0, 0],
        [`${queue}.dlq`, 'quorum', 0, 0],
      ],
    )
    assertNoPassword(service, password)
  })

  it('retries a failing message QUEUE_MAX_RETRIES times then dead-letters it, and a malformed one at once', async (t) => {
    const setup = await setUp(t)
    if (setup === undefined) return
    const { broker, publisher, queue } = setup
    const service = await startConsumer(
      t,
      queue,
      async (message) => {
        if (message.content.toString() === 'bad') throw new MalformedMessage('not an order')
        throw new Error('planned failure')
      },
      { QUEUE_MAX_RETRIES: '2' },
    )
    await publisher.publish(queue, 'fail', { messageId: 'f-1' })
    await publisher.publish(queue, 'bad', { messageId: 'b-1' })
    await waitForOutcome(service, 'f-1', 'dead-lettered')
    await waitForOutcome(service, 'b-1', 'dead-lettered')
    const attempts = (id: string) =>
      service.logs
        .filter((l) => l.msg === 'message' && l.messageId === id)
        .map((l) => `${String(l.attempt)} ${String(l.outcome)}`)
    assert.deepEqual(attempts('f-1'), ['1 retried', '2 retried', '3 dead-lettered'])
    assert.deepEqual(attempts('b-1'), ['1 dead-lettered'])

    await waitForCounts(publisher, queue, 0, 2)
    const dead = await readAll(broker.url, `${queue}.dlq`)
    assert.deepEqual(
      dead.map((m) => [m.messageId, m.reason, m.queue]),
      [
        ['b-1', 'rejected', queue],
        ['f-1', 'rejected', queue],
      ],
    )
  })

  it('stops consuming when shutdown begins, lets the handler in flight finish and ack, and leaves the rest queued', async (t) => {
    const setup = await setUp(t)
    if (setup === undefined) return
    const { publisher, queue } = setup
    const entered = newGate()
    const finish = newGate()
    let abortedSignal: boolean | undefined
    const service = await startConsumer(t, queue, async (_message, signal) => {
      entered.open()
      await finish.opened
      abortedSignal = signal.aborted
    })
    await publisher.publish(queue, 'slow', { messageId: 's-1' })
    await entered.opened
    const exited = service.stop()
    const stopped = await service.waitForLog((l) => l.msg === 'queue stopped consuming')
    assert.equal(stopped.inflight, 1)
    await publisher.publish(queue, 'after', { messageId: 's-2' })
    finish.open()
    assert.equal(await exited, 0)
    assert.equal(abortedSignal, false)
    await waitForOutcome(service, 's-1', 'acked')
    assert.ok(!service.logs.some((l) => l.messageId === 's-2'), 'nothing consumed once stopping')
    await waitForCounts(publisher, queue, 1, 0, true)
  })

  it('aborts the handler at the shutdown deadline, and its message returns to the queue', async (t) => {
    const setup = await setUp(t)
    if (setup === undefined) return
    const { publisher, queue } = setup
    const entered = newGate()
    const service = await startConsumer(
      t,
      queue,
      (_message, signal) => {
        entered.open()
        return new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason)))
      },
      { SHUTDOWN_TIMEOUT: '300ms' },
    )
    await publisher.publish(queue, 'stuck', { messageId: 'd-1' })
    await entered.opened
    assert.equal(await service.stop(), 1, 'a hook past SHUTDOWN_TIMEOUT fails the shutdown')
    await waitForOutcome(service, 'd-1', 'returned')
    await waitForCounts(publisher, queue, 1, 0, true)
  })

  it('starts not ready while the broker is out of reach, connects when it can, and comes back after a loss', async (t) => {
    const setup = await setUp(t)
    if (setup === undefined) return
    const { broker, publisher, queue } = setup
    const proxy = await newProxy(broker.port)
    t.after(() => proxy.close())
    const url = broker.url.replace(`:${broker.port}`, `:${proxy.port}`)
    const service = await startConsumer(t, queue, async () => {}, { AMQP_URL: url })
    const down = await service.waitForLog((l) => l.msg === 'queue disconnected')
    assert.equal(down.reason, `connect ECONNREFUSED 127.0.0.1:${proxy.port}`)
    const notReady = await waitForReady(service, 503)
    assert.deepEqual(notReady.checks, [
      { name: 'queue', reason: `not connected to the broker: connect ECONNREFUSED 127.0.0.1:${proxy.port}` },
    ])

    await proxy.listen()
    const connected = await service.waitForLog((l) => l.msg === 'queue connected')
    assert.ok((connected.attempts as number) > 1)
    await waitForReady(service, 200)
    await publisher.publish(queue, 'one', { messageId: 'p-1' })
    await waitForOutcome(service, 'p-1', 'acked')

    await proxy.close() // the network goes: connections cut, no new ones
    const lost = await service.waitForLog((l) => l.msg === 'queue disconnected' && l !== down)
    // The proxy destroys both sides: the consumer reads a close, or a reset when bytes were in flight.
    assert.match(String(lost.reason), /^(?:Unexpected close|read ECONNRESET)$/)
    await waitForReady(service, 503)
    await publisher.publish(queue, 'two', { messageId: 'p-2' }) // the publisher's own connection is direct
    await proxy.listen()
    const back = await service.waitForLog((l) => l.msg === 'queue reconnected')
    assert.equal(typeof back.downMs, 'number')
    await waitForReady(service, 200)
    await waitForOutcome(service, 'p-2', 'acked')
    const states = service.logs.filter((l) => l.msg.startsWith('queue ')).map((l) => l.msg)
    assert.deepEqual(states, ['queue disconnected', 'queue connected', 'queue disconnected', 'queue reconnected'])
    assertNoPassword(service, password)
  })

  it('names no password when the broker refuses it, in logs or /ready', async (t) => {
    const setup = await setUp(t)
    if (setup === undefined) return
    const { broker, queue } = setup
    const wrong = 'not-the-pass%2Fword-7'
    const service = await startConsumer(t, queue, async () => {}, { AMQP_URL: broker.url.replace(password, wrong) })
    const down = await service.waitForLog((l) => l.msg === 'queue disconnected')
    assert.match(down.reason as string, /^Handshake terminated by server: 403 \(ACCESS-REFUSED\)/)
    const body = await waitForReady(service, 503)
    assert.match(JSON.stringify(body), /ACCESS-REFUSED/)
    for (const secret of [wrong, 'not-the-pass/word-7']) {
      assert.ok(!JSON.stringify(body).includes(secret), '/ready names no password')
      assertNoPassword(service, secret)
    }
  })

  // Last: it restarts the broker the other tests share.
  it('survives a broker restart mid-run: disconnected, /ready 503, reconnected, nothing lost', async (t) => {
    const setup = await setUp(t)
    if (setup === undefined) return
    const { broker, publisher, queue } = setup
    const handled = new Set<string>()
    const service = await startConsumer(t, queue, async (message) => {
      await new Promise(setImmediate) // a little work, so that messages are in flight at the stop
      handled.add(message.properties.messageId as string)
    })
    const ids = Array.from({ length: 300 }, (_, i) => `r-${i}`)
    for (const id of ids.slice(0, 200)) await publisher.publish(queue, id, { messageId: id })
    await waitForOutcome(service, 'r-20', 'acked')

    await broker.stop()
    const down = await service.waitForLog((l) => l.msg === 'queue disconnected')
    // The broker's goodbye, or a reset socket when the machine is too busy for it to say it.
    assert.match(down.reason as string, /CONNECTION_FORCED|ECONNRESET|Unexpected close/)
    await waitForReady(service, 503)
    await broker.start()
    await service.waitForLog((l) => l.msg === 'queue reconnected')
    await waitForReady(service, 200)
    const again = await newPublisher(broker.url)
    t.after(() => again.close())
    for (const id of ids.slice(200)) await again.publish(queue, id, { messageId: id })

    for (const id of ids) await waitForOutcome(service, id, 'acked')
    assert.equal(handled.size, ids.length)
    await waitForCounts(again, queue, 0, 0)
    assertNoPassword(service, password)
  })
})

function waitForOutcome(service: Service, id: string, outcome: string): Promise<LogLine> {
  return service.waitForLog(
    (l) => l.msg === 'message' && l.messageId === id && l.outcome === outcome,
    `message ${id} ${outcome}`,
  )
}

/** listen collects what the kickstart.queue channel carries during test t. */
function listen(t: TestContext): { queue: string; outcome: string; durationSeconds: number }[] {
  const told: { queue: string; outcome: string; durationSeconds: number }[] = []
  const onMessage = (message: unknown) => told.push(message as (typeof told)[number])
  subscribe('kickstart.queue', onMessage)
  t.after(() => void unsubscribe('kickstart.queue', onMessage))
  return told
}

function assertNoPassword(service: Service, secret: string): void {
  const leaked = service.logs.filter((l) => JSON.stringify(l).includes(secret))
  assert.deepEqual(leaked, [], 'no log line names the password')
}

/** waitForReady GETs /ready until it answers status (its outcome is reused for a second), and returns the body. */
async function waitForReady(service: Service, status: number): Promise<Record<string, unknown>> {
  let body: Record<string, unknown> = {}
  await waitUntil(async () => {
    const res = await fetch(`${service.url}/ready`)
    body = (await res.json()) as Record<string, unknown>
    return res.status === status
  }, `/ready ${status}`)
  return body
}

/** waitForCounts waits until the broker's ready messages in queue and its dead-letter queue are main and dead, with no consumer left on queue when idle. */
async function waitForCounts(publisher: Publisher, queue: string, main: number, dead: number, idle = false) {
  let seen: unknown
  await waitUntil(async () => {
    const [counts, deadCounts] = await Promise.all([publisher.count(queue), publisher.count(`${queue}.dlq`)])
    seen = { [queue]: counts, [`${queue}.dlq`]: deadCounts }
    return counts.messages === main && deadCounts.messages === dead && (!idle || counts.consumers === 0)
  }, `${main} messages in ${queue} and ${dead} in ${queue}.dlq`).catch((err: Error) => {
    throw new Error(`${err.message}; last seen: ${JSON.stringify(seen)}`)
  })
}

/** readAll takes every message off queue and returns its id and first death. */
async function readAll(url: string, queue: string) {
  const connection = await connect(url)
  try {
    const channel = await connection.createChannel()
    const read: { messageId: string; reason: string; queue: string }[] = []
    for (let message = await channel.get(queue); message !== false; message = await channel.get(queue)) {
      const headers = message.properties.headers ?? {}
      read.push({
        messageId: message.properties.messageId as string,
        reason: headers['x-first-death-reason'] as string,
        queue: headers['x-first-death-queue'] as string,
      })
      channel.ack(message)
    }
    return read.sort((a, b) => a.messageId.localeCompare(b.messageId))
  } finally {
    await connection.close()
  }
}

/** waitUntil polls check until it holds, and fails after 30 s naming what it waited for. */
async function waitUntil(check: () => Promise<boolean>, what: string): Promise<void> {
  const deadline = performance.now() + 30_000
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}
