import type { BuildInfo } from './build-info.ts'
import { sendProblem } from './json.ts'
import type { Readiness } from './lifecycle.ts'
import type { Handler } from './router.ts'

const json = { 'content-type': 'application/json', 'cache-control': 'no-store' }

/**
 * handleHealth answers liveness probes and people: the service, its build and uptime. It never asks a
 * dependency (a restart cures no database outage) and stays 200 while draining.
 */
export function handleHealth(build: BuildInfo, startedAt: Date): Handler {
  const { service, version, commit, commitTime, dirty } = build
  const head = JSON.stringify({
    status: 'ok',
    service,
    version,
    startedAt: startedAt.toISOString(),
    build: { commit, commitTime, dirty },
  }).slice(0, -1)
  // Only the uptime changes, once a second: the requests of a second share a body.
  let last = -1
  let body = ''
  let headers = {}
  return (_req, res) => {
    const seconds = Math.floor((Date.now() - startedAt.getTime()) / 1000)
    if (seconds !== last) {
      last = seconds
      body = `${head},"uptime":"${formatUptime(seconds)}","uptimeSeconds":${seconds}}`
      headers = { ...json, 'content-length': Buffer.byteLength(body) }
    }
    res.writeHead(200, headers).end(body)
  }
}

/** handleReady answers 503 from the moment shutdown begins, so load balancers stop sending; else the checks' outcome. */
export function handleReady(lifecycle: { readonly stopping: AbortSignal; readiness(): Promise<Readiness> }): Handler {
  const body = '{"status":"ready"}'
  const headers = { ...json, 'content-length': body.length }
  const noStore = { 'cache-control': 'no-store' }
  return async (_req, res) => {
    if (lifecycle.stopping.aborted) return sendProblem(res, 503, 'The service is shutting down.', noStore)
    const readiness = await lifecycle.readiness()
    if (readiness.ok) return void res.writeHead(200, headers).end(body)
    const names = readiness.failing.map((check) => check.name).join(', ')
    sendProblem(res, 503, `Not ready: ${names}.`, noStore, { checks: readiness.failing })
  }
}

/** handleOpenAPI serves spec, the bytes of the openapi.yaml the build wrote, unchanged. */
export function handleOpenAPI(spec: Buffer): Handler {
  const headers = { 'content-type': 'application/yaml', 'content-length': spec.byteLength }
  return (_req, res) => void res.writeHead(200, headers).end(spec)
}

/** formatUptime writes whole seconds the way Go prints a time.Duration: 1h2m3s, 4m0s, 5s. */
export function formatUptime(seconds: number): string {
  const [h, m, s] = [Math.floor(seconds / 3600), Math.floor(seconds / 60) % 60, seconds % 60]
  return h > 0 ? `${h}h${m}m${s}s` : m > 0 ? `${m}m${s}s` : `${s}s`
}
