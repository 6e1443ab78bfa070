import type { AddOn } from '../addon.ts'
import { type ConfigOf, duration, optional, type Vars } from '../config.ts'
import { newConsumer } from './consumer.ts'
import type { HandlerMakers } from './delivery.ts'
import { handlers } from './handlers.ts'

/**
 * newQueueVars declares the queue variables; QUEUES may name only the given queues. With AMQP_URL
 * unset the add-on is off (cmd/server/main.ts does not even import it).
 */
export function newQueueVars(queues: readonly string[]) {
  return {
    amqpUrl: {
      name: 'AMQP_URL',
      default: '',
      ...optional({
        parse: parseAmqpUrl,
        expected: 'an amqp:// or amqps:// URL, like amqp://user:password@rabbitmq:5672/vhost',
      }),
      secret: true,
    },
    queues: {
      name: 'QUEUES',
      default: '',
      parse: (raw: string) => parseQueues(raw, queues),
      expected: `a comma-separated list of queues from internal/queue/handlers.ts (${queues.join(', ')})`,
    },
    prefetch: {
      name: 'QUEUE_PREFETCH',
      default: '10',
      parse: (raw: string) => parseInteger(raw, 1, 65535),
      expected: 'an integer from 1 to 65535',
    },
    maxRetries: {
      name: 'QUEUE_MAX_RETRIES',
      default: '5',
      parse: (raw: string) => parseInteger(raw, 0, 100),
      expected: 'an integer from 0 to 100',
    },
    retryDelayMs: {
      name: 'QUEUE_RETRY_DELAY',
      default: '1s',
      ...duration,
    },
  } satisfies Vars
}

/** QueueConfig is the parsed configuration the queue variables declare. */
export type QueueConfig = ConfigOf<ReturnType<typeof newQueueVars>>

/**
 * newQueueAddOn returns the queue add-on consuming the queues makers lists (README.md in this
 * folder). At start it connects, declares the queues and consumes them; with the broker down it
 * starts anyway, not ready, and keeps trying.
 */
export function newQueueAddOn(makers: HandlerMakers): AddOn<ReturnType<typeof newQueueVars>> {
  return {
    name: 'queue',
    vars: newQueueVars(Object.keys(makers)),
    async start(ctx) {
      const { config, log, lifecycle } = ctx
      if (config.amqpUrl === null) return
      const chosen = Object.entries(makers).filter(([queue]) => config.queues.includes(queue))
      const byQueue = new Map(chosen.map(([queue, make]) => [queue, make({ log })]))
      const { prefetch, maxRetries, retryDelayMs } = config
      const stopping = lifecycle.stopping
      const consumer = newConsumer({
        url: config.amqpUrl,
        handlers: byQueue,
        prefetch,
        maxRetries,
        retryDelayMs,
        log,
        stopping,
      })
      lifecycle.onShutdown('queue', (signal) => consumer.close(signal))
      lifecycle.addCheck('queue', () => consumer.check())
      await consumer.connect()
    },
  }
}

/** addOn is the queue add-on with the handlers of handlers.ts. */
export const addOn = newQueueAddOn(handlers)

function parseAmqpUrl(raw: string): string | undefined {
  if (!URL.canParse(raw)) return undefined
  const { protocol, hostname } = new URL(raw)
  return (protocol === 'amqp:' || protocol === 'amqps:') && hostname !== '' ? raw : undefined
}

function parseQueues(raw: string, known: readonly string[]): readonly string[] | undefined {
  if (raw === '') return known
  const names = raw.split(',').map((name) => name.trim())
  return names.every((name) => known.includes(name)) ? [...new Set(names)] : undefined
}

function parseInteger(raw: string, min: number, max: number): number | undefined {
  const value = Number(raw)
  return /^\d{1,6}$/.test(raw) && value >= min && value <= max ? value : undefined
}
