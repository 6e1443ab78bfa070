// The metrics tests' shared helpers: the service with metrics on, its samples read from a scrape, a poll.
import type { Routes } from '../router.ts'
import { type Service, startService, withRoutes } from '../../test/service.ts'
import { addOn as metrics } from './metrics.ts'

/** MetricsService is the service under test with its metrics listener; scrape returns GET /metrics's text. */
export interface MetricsService extends Service {
  metricsUrl: string
  scrape: () => Promise<string>
}

/** startMetricsService starts the service, with routes added, and metrics on a free loopback port. */
export async function startMetricsService(t: { after(fn: () => Promise<void>): void }, routes?: Routes) {
  const options = { addOns: [metrics], routes: routes && withRoutes(routes) }
  const service = await startService(t, { METRICS_ADDR: '127.0.0.1:0' }, options)
  const port = service.logs.find((l) => l.msg === 'metrics listening')?.port as number
  const metricsUrl = `http://127.0.0.1:${port}/metrics`
  return { ...service, metricsUrl, scrape: async () => (await fetch(metricsUrl)).text() }
}

/**
 * waitUntil polls check every 20 ms until it returns something other than undefined, and returns
 * that; it fails after 15 s saying what it waited for. Tests never wait for time to pass as such.
 */
export async function waitUntil<T>(check: () => Promise<T | undefined>, what: () => string): Promise<T> {
  const deadline = performance.now() + 15_000
  for (;;) {
    const found = await check()
    if (found !== undefined) return found
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what()}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

/** scrapeUntil scrapes service until ready holds for the text, and returns that text. */
export function scrapeUntil(service: MetricsService, ready: (text: string) => boolean, what = ready.toString()) {
  let text = ''
  return waitUntil(
    async () => (ready((text = await service.scrape())) ? text : undefined),
    () => `${what} in\n${text}`,
  )
}

/** samples returns the samples called name in text, by their labels as written (`{a="x"}`, '' for none). */
export function samples(text: string, name: string): Record<string, number> {
  const found: Record<string, number> = {}
  for (const [, labels = '', value] of text.matchAll(new RegExp(`^${name}(\\{.*\\})? (\\S+)$`, 'gm'))) {
    found[labels] = Number(value)
  }
  return found
}

/** makeGarbage allocates a few megabytes dropped at once, for a minor garbage collection. */
export function makeGarbage(): number {
  return Array.from({ length: 100_000 }, (_, i) => ({ i, text: String(i) })).length
}
