// One message's way from delivery to its verdict, without a broker: a fake channel records the
// acks and nacks, a log sink the message's line, a subscriber the diagnostics channel.
import assert from 'node:assert/strict'
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import { describe, it, type TestContext } from 'node:test'
import type { ConsumeMessage } from 'amqplib'
import { pino } from 'pino'
import { newLogSink } from '../../test/service.ts'
import { type DeliveryOptions, type Handler, handleDelivery, MalformedMessage, retryDelayMs } from './delivery.ts'

function newMessage(deliveryCount?: number): ConsumeMessage {
  const headers = deliveryCount === undefined ? {} : { 'x-delivery-count': deliveryCount }
  return {
    content: Buffer.from('{}'),
    fields: {
      deliveryTag: 1,
      redelivered: deliveryCount !== undefined,
      exchange: '',
      routingKey: 'jobs',
      consumerTag: 't',
    },
    properties: { messageId: 'm-1', correlationId: 'c-1', headers } as unknown as ConsumeMessage['properties'],
  }
}

/** newFakeChannel records settlements as 'ack' or 'nack requeue' / 'nack'; closed makes them throw, as amqplib does. */
function newFakeChannel(closed = false) {
  const settled: string[] = []
  const check = () => {
    if (closed) throw new Error('Channel closed')
  }
  return {
    settled,
    ack: () => (check(), void settled.push('ack')),
    nack: (_message: unknown, _allUpTo?: boolean, requeue?: boolean) => (
      check(),
      void settled.push(requeue ? 'nack requeue' : 'nack')
    ),
  }
}

function newOptions(handler: Handler, overrides: Partial<DeliveryOptions> = {}) {
  const sink = newLogSink()
  const log = pino({ base: null, timestamp: false, formatters: { level: (label) => ({ level: label }) } }, sink)
  const options: DeliveryOptions = {
    queue: 'jobs',
    handler,
    log,
    maxRetries: 2,
    retryDelayMs: 0,
    stopping: new AbortController().signal,
    ...overrides,
  }
  return { options, sink }
}

/** listen collects what the kickstart.queue channel carries during test t. */
function listen(t: TestContext): unknown[] {
  const told: unknown[] = []
  const onMessage = (message: unknown) => told.push(message)
  subscribe('kickstart.queue', onMessage)
  t.after(() => void unsubscribe('kickstart.queue', onMessage))
  return told
}

const succeed: Handler = async () => {}
const fail: Handler = async () => {
  throw new Error('the mail server is down')
}

describe('handleDelivery', () => {
  it('acks after the handler succeeds, logs one line with the ids and tells the channel', async (t) => {
    const told = listen(t)
    const channel = newFakeChannel()
    const { options, sink } = newOptions(succeed)
    assert.equal(await handleDelivery(channel, newMessage(), options, new AbortController().signal), 'acked')
    assert.deepEqual(channel.settled, ['ack'])
    assert.equal(sink.logs.length, 1)
    const { durationMs, ...line } = sink.logs[0]!
    assert.deepEqual(line, {
      level: 'info',
      queue: 'jobs',
      messageId: 'm-1',
      correlationId: 'c-1',
      attempt: 1,
      outcome: 'acked',
      msg: 'message',
    })
    assert.equal(typeof durationMs, 'number')
    assert.equal(told.length, 1)
    const { durationSeconds, ...report } = told[0] as { durationSeconds: number }
    assert.deepEqual(report, { queue: 'jobs', outcome: 'acked' })
    assert.ok(durationSeconds >= 0 && durationSeconds < 1, String(durationSeconds))
  })

  it('acks only once the handler has finished', async () => {
    const channel = newFakeChannel()
    let finish = () => {}
    const { options } = newOptions(() => new Promise<void>((resolve) => (finish = resolve)))
    const outcome = handleDelivery(channel, newMessage(), options, new AbortController().signal)
    await new Promise(setImmediate)
    assert.deepEqual(channel.settled, [], 'nothing settled while the handler runs')
    finish()
    assert.equal(await outcome, 'acked')
    assert.deepEqual(channel.settled, ['ack'])
  })

  it('requeues a failed message while retries are left, numbering its attempt from x-delivery-count', async (t) => {
    const told = listen(t)
    const channel = newFakeChannel()
    const { options, sink } = newOptions(fail)
    assert.equal(await handleDelivery(channel, newMessage(1), options, new AbortController().signal), 'retried')
    assert.deepEqual(channel.settled, ['nack requeue'])
    const line = sink.logs[0]!
    assert.equal(line.level, 'warn')
    assert.equal(line.attempt, 2)
    assert.equal(line.outcome, 'retried')
    assert.equal((line.err as { message: string }).message, 'the mail server is down')
    assert.equal((told[0] as { outcome: string }).outcome, 'retried')
  })

  it('dead-letters a failed message once its retries are used up', async () => {
    const channel = newFakeChannel()
    const { options, sink } = newOptions(fail)
    assert.equal(await handleDelivery(channel, newMessage(2), options, new AbortController().signal), 'dead-lettered')
    assert.deepEqual(channel.settled, ['nack'])
    assert.equal(sink.logs[0]!.level, 'error')
    assert.equal(sink.logs[0]!.attempt, 3)
  })

  it('dead-letters a malformed message at once, on its first attempt', async () => {
    const channel = newFakeChannel()
    const { options, sink } = newOptions(async () => {
      throw new MalformedMessage('the body is not JSON')
    })
    assert.equal(await handleDelivery(channel, newMessage(), options, new AbortController().signal), 'dead-lettered')
    assert.deepEqual(channel.settled, ['nack'])
    assert.equal((sink.logs[0]!.err as { type: string }).type, 'MalformedMessage')
  })

  it('dead-letters without running the handler a message delivered more often than its attempts allow', async () => {
    // Deliveries that ended without a verdict count: a message whose handler kills the process.
    const channel = newFakeChannel()
    let ran = false
    const { options, sink } = newOptions(async () => void (ran = true))
    assert.equal(await handleDelivery(channel, newMessage(3), options, new AbortController().signal), 'dead-lettered')
    assert.equal(ran, false)
    assert.deepEqual(channel.settled, ['nack'])
    assert.match((sink.logs[0]!.err as { message: string }).message, /^delivered 4 times/)
  })

  it('waits before a retry: the delay doubles at each, up to a minute', () => {
    const delays = [0, 1, 2, 5, 6, 20].map((retries) => retryDelayMs(1000, retries))
    assert.deepEqual(delays, [1000, 2000, 4000, 32_000, 60_000, 60_000])
  })

  it('holds a failed message for the delay, and cuts the wait short when shutdown begins', async () => {
    const channel = newFakeChannel()
    const stopping = new AbortController()
    const { options } = newOptions(fail, { retryDelayMs: 3_600_000, stopping: stopping.signal })
    const outcome = handleDelivery(channel, newMessage(1), options, new AbortController().signal)
    await new Promise(setImmediate)
    assert.deepEqual(channel.settled, [], 'held, not requeued at once')
    stopping.abort()
    assert.equal(await outcome, 'retried')
    assert.deepEqual(channel.settled, ['nack requeue'])
  })

  it('returns a message whose channel closed under its handler, which the broker delivers again', async () => {
    const channel = newFakeChannel(true)
    const { options, sink } = newOptions(succeed)
    assert.equal(await handleDelivery(channel, newMessage(), options, new AbortController().signal), 'returned')
    assert.equal(sink.logs[0]!.level, 'warn')
  })

  it('returns, without counting a failure, a message whose handler was aborted', async () => {
    const channel = newFakeChannel()
    const aborted = new AbortController()
    const { options } = newOptions(async (_message, signal) => {
      aborted.abort(new Error('shutdown timed out'))
      signal.throwIfAborted()
    })
    assert.equal(await handleDelivery(channel, newMessage(2), options, aborted.signal), 'returned')
    assert.deepEqual(channel.settled, ['nack requeue'], 'back to the queue, not dead-lettered')
  })
})
