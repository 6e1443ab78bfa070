import type { AddOn } from '../addon.ts'
import { address, type Vars } from '../config.ts'
import type { Handler } from '../router.ts'
import { contentType } from './exposition.ts'
import { newRecorder, type Recorder } from './series.ts'

/** metricsVars declares the metrics listener's one variable. */
export const metricsVars = {
  metricsAddr: {
    name: 'METRICS_ADDR',
    default: '',
    ...address,
  },
} satisfies Vars

/**
 * metrics serves the public server's requests (rate, errors, duration), what other add-ons tell
 * on their diagnostics channels, and the process's own series, for Prometheus to scrape (README.md
 * in this folder; series.ts lists every series): `GET /metrics` on a listener of its own on
 * METRICS_ADDR, off unless set. Its successful scrapes stay out of the access log.
 */
export const addOn: AddOn<typeof metricsVars> = {
  name: 'metrics',
  vars: metricsVars,
  start: async (ctx) => {
    const addr = ctx.config.metricsAddr
    if (addr === null) return
    const recorder = await newRecorder(ctx)
    const routes = { '/metrics': { GET: handleMetrics(recorder) } }
    await ctx.serve('metrics', addr, routes, 'METRICS_ADDR', { quiet: true }).catch((err: unknown) => {
      recorder.stop()
      throw err
    })
    // The listener stays up through the drain, so the drain shows in the last scrapes.
    ctx.lifecycle.onShutdown('metrics', () => recorder.stop())
    return { hooks: { done: recorder.record } }
  },
}

/** handleMetrics answers with every series in the Prometheus text format, never cached. */
function handleMetrics(recorder: Recorder): Handler {
  return async (_req, res) => {
    const body = await recorder.format()
    const headers = {
      'content-type': contentType,
      'content-length': Buffer.byteLength(body),
      'cache-control': 'no-store',
    }
    res.writeHead(200, headers).end(body)
  }
}
