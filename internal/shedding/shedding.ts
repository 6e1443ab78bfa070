import { channel } from 'node:diagnostics_channel'
import type { AddOn, AddOnContext } from '../addon.ts'
import { type ConfigOf, count, optional, parseDuration, positiveDuration, type Vars } from '../config.ts'
import { sendProblem } from '../json.ts'
import type { TrackedResponse } from '../response.ts'
import type { RequestHooks } from '../server.ts'
import { type EventLoopWatch, watchEventLoop } from './event-loop.ts'

/** sheddingVars declares the load-shedding variables; with neither limit set, it is off. */
export const sheddingVars = {
  maxInflight: {
    name: 'SHED_MAX_INFLIGHT',
    default: '',
    ...optional(count),
  },
  maxEventLoopDelayMs: {
    name: 'SHED_MAX_EVENT_LOOP_DELAY',
    default: '',
    ...optional(positiveDuration),
  },
  retryAfterSeconds: {
    name: 'SHED_RETRY_AFTER',
    default: '1s',
    parse: parseSeconds,
    expected: 'a whole number of seconds, like 1s, 5s or 1m',
  },
} satisfies Vars

/** SheddingConfig is the parsed configuration sheddingVars declares. */
export type SheddingConfig = ConfigOf<typeof sheddingVars>

/**
 * probeRoutes are the route templates never shed: a liveness probe that times out under load gets
 * a busy pod restarted, which sheds everything; a readiness probe that fails takes it out of the
 * Service and sends its load to the other replicas, which then fail the same way.
 */
export const probeRoutes: ReadonlySet<string> = new Set(['/health', '/ready'])

/**
 * shedChannel carries `{ reason, route }` for every request shed (node:diagnostics_channel): the
 * metrics add-on counts them as http_server_shed_requests_total.
 */
export const shedChannel = channel('kickstart.shed')

// How often the event-loop delay is refreshed, and over what window: short, so that shedding starts
// within a few turns of the event loop. The window's mean, not its max: under the benchmark's
// overload the two did the same (BENCHMARKS.md, Overload), and one long pause moves the mean less.
const windowMs = 50
const summaryMs = 1000

/**
 * shedding is the opt-in load shedding (README.md in this folder): past SHED_MAX_INFLIGHT requests
 * in flight, or while the event loop runs later than SHED_MAX_EVENT_LOOP_DELAY, requests to the
 * public port answer 503 with Retry-After at once, except the probes. Off unless one is set.
 */
export const addOn: AddOn<typeof sheddingVars> = {
  name: 'shedding',
  vars: sheddingVars,
  start: (ctx) => {
    const { maxInflight, maxEventLoopDelayMs, retryAfterSeconds } = ctx.config
    if (maxInflight === null && maxEventLoopDelayMs === null) return
    const watch = maxEventLoopDelayMs === null ? undefined : watchEventLoop(windowMs)
    if (watch !== undefined) ctx.lifecycle.onShutdown('event-loop watch', () => watch.stop())
    ctx.log.info({ maxInflight, maxEventLoopDelayMs, retryAfterSeconds }, 'load shedding on')
    const hooks = newSheddingHooks(ctx, watch)
    ctx.lifecycle.onShutdown('shed summary', () => hooks.summarise())
    return { hooks }
  },
}

/**
 * newSheddingHooks returns the admit hook, and summarise, which logs what was shed since it last
 * did. Per request the hook reads two numbers the service keeps anyway (the requests in flight,
 * the latest window's delay) and allocates nothing unless it sheds. The request being admitted is
 * already in flight, hence `>`. Shed requests are expected under overload, and many: the access
 * log leaves them out, and one line a second counts them, by reason.
 */
export function newSheddingHooks(
  ctx: Pick<AddOnContext<SheddingConfig>, 'config' | 'server' | 'log'>,
  watch: EventLoopWatch | undefined,
): Required<Pick<RequestHooks, 'admit'>> & { summarise(): void } {
  const maxInflight = ctx.config.maxInflight ?? Number.POSITIVE_INFINITY
  const maxDelayMs = ctx.config.maxEventLoopDelayMs ?? Number.POSITIVE_INFINITY
  const seconds = ctx.config.retryAfterSeconds
  const headers = { 'retry-after': String(seconds) }
  const detail = `The service is overloaded; try again in ${seconds} second${seconds === 1 ? '' : 's'}.`
  const server = ctx.server
  const reasons = { inflight: 0, event_loop_delay: 0 }
  let latest: object = {} // the figures behind the latest shed request
  let timer: NodeJS.Timeout | undefined

  function summarise() {
    clearTimeout(timer)
    timer = undefined
    const shed = reasons.inflight + reasons.event_loop_delay
    if (shed > 0) ctx.log.info({ shed, reasons: { ...reasons }, ...latest }, 'requests shed')
    reasons.inflight = reasons.event_loop_delay = 0
  }

  function shed(res: TrackedResponse, reason: keyof typeof reasons, fields: object): false {
    reasons[reason]++
    latest = fields
    timer ??= setTimeout(summarise, summaryMs).unref() // the shutdown hook writes the last one
    // Whoever counts requests (the metrics add-on) hears of it here, without either importing the other.
    if (shedChannel.hasSubscribers) shedChannel.publish({ reason, route: res.route })
    sendProblem(res, 503, detail, headers)
    return false
  }

  return {
    summarise,
    admit(res) {
      if (probeRoutes.has(res.route)) return true
      const inflight = server.inflight
      if (inflight > maxInflight) return shed(res, 'inflight', { inflight, maxInflight })
      const delayMs = watch === undefined ? 0 : watch.delayMs
      if (delayMs <= maxDelayMs) return true
      return shed(res, 'event_loop_delay', {
        eventLoopDelayMs: Math.round(delayMs * 10) / 10,
        maxEventLoopDelayMs: maxDelayMs,
      })
    },
  }
}

// Retry-After takes whole seconds (RFC 9110 §10.2.3): a value that would need rounding is refused.
function parseSeconds(raw: string): number | undefined {
  const ms = parseDuration(raw)
  return ms !== undefined && ms >= 1000 && ms % 1000 === 0 ? ms / 1000 : undefined
}
