// One message, from delivery to its ack: the handler, the retry or dead-letter verdict, the
// message's log line and its report on the `kickstart.queue` diagnostics channel.
import { channel } from 'node:diagnostics_channel'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Channel, ConsumeMessage } from 'amqplib'
import type { AddOnContext } from '../addon.ts'

/** Logger is the service's pino logger, as add-ons get it. */
export type Logger = AddOnContext<unknown>['log']

/**
 * Handler does the work one message asks for. The message is acked once the returned promise
 * resolves; a rejection retries it, up to QUEUE_MAX_RETRIES times, then dead-letters it, unless it
 * is a MalformedMessage, dead-lettered at once. signal aborts when the message can no longer be
 * acked (the connection to the broker was lost) or the shutdown deadline has passed.
 */
export type Handler = (message: ConsumeMessage, signal: AbortSignal) => Promise<void>

/** HandlerMakers lists the queues to consume, each with the maker of its handler (handlers.ts). */
export type HandlerMakers = Readonly<Record<string, (deps: { log: Logger }) => Handler>>

/** MalformedMessage is what a handler throws for a message it cannot parse: retrying cannot help. */
export class MalformedMessage extends Error {
  override name = 'MalformedMessage'
}

/**
 * Outcome is what became of a message: acked; sent back to the queue for a retry; moved to the
 * dead-letter queue; or returned, left unsettled because its channel closed (the broker delivers
 * it again).
 */
export type Outcome = 'acked' | 'retried' | 'dead-lettered' | 'returned'

/**
 * queueChannel carries `{ queue, outcome, durationSeconds }` for every message handled
 * (node:diagnostics_channel): whoever counts messages, such as the metrics add-on, subscribes to
 * `kickstart.queue` without either add-on importing the other.
 */
export const queueChannel = channel('kickstart.queue')

/** DeliveryOptions is how one queue's messages are handled. */
export interface DeliveryOptions {
  queue: string
  handler: Handler
  log: Logger
  maxRetries: number
  retryDelayMs: number
  /** stopping aborts when shutdown begins: a failed message then goes back without waiting. */
  stopping: AbortSignal
}

// A retry waits QUEUE_RETRY_DELAY, doubled at each retry, but never longer than this.
const maxRetryDelayMs = 60_000

/** retryDelayMs returns how long a message that failed after retries earlier deliveries waits: first, doubled at each. */
export function retryDelayMs(first: number, retries: number): number {
  return Math.min(first * 2 ** retries, maxRetryDelayMs)
}

/**
 * handleDelivery runs the handler on message and settles it on channel, the one it came from, then
 * logs one line and publishes on queueChannel. It resolves with the outcome and never rejects.
 * signal is the handler's: abort it when the channel is lost or time is up.
 */
export async function handleDelivery(
  channel: Pick<Channel, 'ack' | 'nack'>,
  message: ConsumeMessage,
  options: DeliveryOptions,
  signal: AbortSignal,
): Promise<Outcome> {
  // Quorum queues count the earlier deliveries of a message, failed ones and those whose consumer
  // went away (a crash, a lost connection) alike.
  const retries = Number(message.properties.headers?.['x-delivery-count'] ?? 0)
  const started = performance.now()
  let outcome: Outcome
  let err: unknown
  if (retries > options.maxRetries) {
    // Every attempt ended without a verdict: a message that kills its consumer goes no further.
    err = new Error(`delivered ${retries + 1} times, its handler never finished`)
    outcome = settle(channel, message, 'dead-lettered')
  } else {
    try {
      await options.handler(message, signal)
      outcome = settle(channel, message, 'acked')
    } catch (caught) {
      err = caught
      outcome = await settleFailure(channel, message, options, signal, caught instanceof MalformedMessage, retries)
    }
  }
  const durationMs = performance.now() - started
  logMessage(options, message, { outcome, retries, durationMs, err })
  if (queueChannel.hasSubscribers) {
    queueChannel.publish({ queue: options.queue, outcome, durationSeconds: durationMs / 1000 })
  }
  return outcome
}

async function settleFailure(
  channel: Pick<Channel, 'ack' | 'nack'>,
  message: ConsumeMessage,
  options: DeliveryOptions,
  signal: AbortSignal,
  malformed: boolean,
  retries: number,
): Promise<Outcome> {
  // A handler cut short by a lost connection or the shutdown deadline did not fail on its own.
  if (signal.aborted) return settle(channel, message, 'returned')
  if (malformed || retries >= options.maxRetries) return settle(channel, message, 'dead-lettered')
  // Waiting here, rather than requeueing at once, keeps a failing message from coming straight
  // back, and holds back this consumer while a dependency is down (README.md, Retries).
  await sleep(retryDelayMs(options.retryDelayMs, retries), undefined, {
    signal: AbortSignal.any([signal, options.stopping]),
  }).catch(() => {})
  return settle(channel, message, 'retried')
}

/** settle acks, requeues or dead-letters message; on a closed channel it is already on its way back. */
function settle(channel: Pick<Channel, 'ack' | 'nack'>, message: ConsumeMessage, outcome: Outcome): Outcome {
  try {
    if (outcome === 'acked') channel.ack(message)
    else channel.nack(message, false, outcome !== 'dead-lettered')
    return outcome
  } catch {
    // amqplib throws on a closed channel: the broker took the message back when it closed.
    return 'returned'
  }
}

const levels = { acked: 'info', retried: 'warn', returned: 'warn', 'dead-lettered': 'error' } as const

function logMessage(
  options: DeliveryOptions,
  message: ConsumeMessage,
  { outcome, retries, durationMs, err }: { outcome: Outcome; retries: number; durationMs: number; err: unknown },
): void {
  const { messageId, correlationId } = message.properties as { messageId?: string; correlationId?: string }
  const fields = {
    queue: options.queue,
    messageId,
    correlationId,
    attempt: retries + 1,
    outcome,
    durationMs: Math.round(durationMs * 1000) / 1000,
    err,
  }
  options.log[levels[outcome]](fields, 'message')
}
