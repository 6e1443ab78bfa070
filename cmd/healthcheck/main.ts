// The container's HEALTHCHECK, so the image needs no curl: it GETs /health on the port and host the
// service reads from the same environment, and exits 0 on a 200 and 1 on anything else (Docker
// reserves 2). It gives up after timeoutMs, well inside the HEALTHCHECK's own --timeout.
import { coreVars, parseConfig } from '../../internal/config.ts'

const timeoutMs = 2000

const parsed = parseConfig(process.env, coreVars)
if (parsed.problems.length > 0) {
  process.stderr.write(`unhealthy: invalid configuration: ${parsed.problems.join('; ')}\n`)
  process.exitCode = 1
} else {
  const { host, port } = parsed.config
  // A service listening on every interface answers on loopback.
  const target = host === '' || host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host
  const url = `http://${target.includes(':') ? `[${target}]` : target}:${port}/health`
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) })
    await res.body?.cancel()
    process.stdout.write(`${res.status === 200 ? 'healthy' : 'unhealthy'}: GET ${url} answered ${res.status}\n`)
    process.exitCode = res.status === 200 ? 0 : 1
  } catch (err) {
    // fetch says only 'fetch failed'; the cause says why (ECONNREFUSED...).
    const cause = err instanceof Error && err.cause instanceof Error ? `: ${err.cause.message}` : ''
    process.stderr.write(`unhealthy: GET ${url} failed: ${err instanceof Error ? err.message : String(err)}${cause}\n`)
    process.exitCode = 1
  }
}
