// The debug listener add-on: its routes on DEBUG_ADDR only, held to debug.openapi.yaml and to
// the README table of its variable, and the runtime state and profiles it serves.
import assert from 'node:assert/strict'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { mkdir, readdir } from 'node:fs/promises'
import { type IncomingMessage, request } from 'node:http'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it, type TestContext } from 'node:test'
import { buildDir, readBuild } from '../build-info.ts'
import { coreVars, parseConfig, redactConfig } from '../config.ts'
import type { Routes } from '../router.ts'
import { newRoutes, type RouteDeps } from '../routes.ts'
import { assertProblem, declaredRows, pkg, readmeTable, type Service, startService } from '../../test/service.ts'
import { checkListenerSpec, loadSpec } from '../../test/spec.ts'
import { addOn as debug, debugVars } from './debug.ts'

const { build } = readBuild(buildDir)
const spec = loadSpec(new URL('debug.openapi.yaml', import.meta.url))
const fileName = (extension: string) => new RegExp(`^attachment; filename="${pkg.name}-\\d{8}T\\d{6}Z\\.${extension}"$`)

/** startDebugService starts the service with the debug listener on a free loopback port. */
async function startDebugService(
  t: TestContext | undefined,
  env: Record<string, string> = {},
  routes?: (deps: RouteDeps) => Promise<Routes>,
): Promise<Service & { debugUrl: string }> {
  const service = await startService(t, { DEBUG_ADDR: '127.0.0.1:0', ...env }, { addOns: [debug], routes })
  const line = service.logs.find((l) => l.msg === 'debug listening')
  return { ...service, debugUrl: `http://127.0.0.1:${line?.port as number}` }
}

/** Vars is what the tests read of /debug/vars; the drift tests check the rest against openapi.yaml. */
interface Vars extends Record<string, unknown> {
  uptimeSeconds: number
  memory: Record<string, number>
  heap: Record<string, number>
  eventLoop: { delayMs: Record<string, number>; utilization: Record<string, Record<string, number>> }
  activeResources: Record<string, number>
  server: { connections: number; inflight: number; draining: boolean }
}

async function getJSON<T>(url: string, headers: Record<string, string> = {}) {
  const res = await fetch(url, { headers })
  assert.equal(res.status, 200, url)
  return { res, body: (await res.json()) as T }
}

async function readVars(service: { debugUrl: string }): Promise<Vars> {
  return (await getJSON<Vars>(`${service.debugUrl}/debug/vars`)).body
}

describe('the debug listener', () => {
  it('is off by default, and the public port never serves its routes', async (t) => {
    for (const env of [{}, { DEBUG_ADDR: '127.0.0.1:0' }]) {
      const service = await startService(t, env, { addOns: [debug] })
      assert.equal(
        service.logs.some((l) => l.msg === 'debug listening'),
        'DEBUG_ADDR' in env,
      )
      for (const path of ['/debug/vars', '/debug/pprof/profile', '/debug/pprof/heap']) {
        await assertProblem(await fetch(`${service.url}${path}`), 404)
      }
      assert.equal(await service.stop(), 0)
    }
  })

  it('has its own route table: the public routes are not on it', async (t) => {
    const service = await startDebugService(t)
    for (const path of ['/health', '/ready', '/openapi.yaml', '/']) {
      await assertProblem(await fetch(`${service.debugUrl}${path}`), 404)
    }
    const res = await fetch(`${service.debugUrl}/debug/vars`, { method: 'POST' })
    assert.equal(res.headers.get('allow'), 'GET, HEAD')
    await assertProblem(res, 405)
  })

  it('logs where it listens before the listening line, and warns only when other machines can reach it', async (t) => {
    const local = await startDebugService(t)
    const messages = local.logs.map((l) => l.msg)
    assert.deepEqual(messages, ['debug listening', 'listening'])
    const line = local.logs[0]
    assert.equal(line?.level, 'info')
    assert.equal(line?.address, '127.0.0.1')
    assert.equal(line?.listener, 'debug')
    assert.notEqual(line?.port, local.port)
    assert.equal(await local.stop(), 0)

    const open = await startService(t, { DEBUG_ADDR: ':0' }, { addOns: [debug] })
    const warning = open.logs.find((l) => l.level === 'warn')
    assert.match(String(warning?.msg), /reachable from other machines/)
    assert.equal(await open.stop(), 0)
  })

  it('fails the start with exit code 1 and one line when its port is taken', async () => {
    const blocker = createServer().listen(0, '127.0.0.1')
    await once(blocker, 'listening')
    const port = (blocker.address() as { port: number }).port
    try {
      await assert.rejects(
        startService(undefined, { DEBUG_ADDR: `127.0.0.1:${port}` }, { addOns: [debug] }),
        (err: Error) => {
          const logs = JSON.parse(err.message.slice(err.message.indexOf('\n') + 1)) as { level: string; msg: string }[]
          assert.equal(logs.length, 1, err.message)
          assert.equal(logs[0]?.level, 'fatal')
          assert.equal(
            logs[0]?.msg,
            `cannot start debug: cannot listen (DEBUG_ADDR): listen EADDRINUSE: address already in use 127.0.0.1:${port}`,
          )
          return true
        },
      )
    } finally {
      blocker.close()
    }
  })
})

describe('GET /debug/vars', () => {
  it('reports memory, heap, versions, build, config and a growing uptime', async (t) => {
    const service = await startDebugService(t, { SHUTDOWN_TIMEOUT: '7s' })
    const { res, body } = await getJSON<Vars>(`${service.debugUrl}/debug/vars`)
    assert.equal(res.headers.get('cache-control'), 'no-store')
    assert.equal(body.service, pkg.name)
    assert.deepEqual(body.build, { commit: build.commit, commitTime: build.commitTime, dirty: build.dirty })
    assert.equal(body.pid, process.pid)
    assert.equal(body.node, process.version)
    assert.equal(body.v8, process.versions.v8)
    // Every variable's effective value, by owner: the core's and this add-on's.
    const env = { PORT: '0', DEBUG_ADDR: '127.0.0.1:0', SHUTDOWN_TIMEOUT: '7s' }
    assert.deepEqual(body.config, {
      core: JSON.parse(JSON.stringify(redactConfig(parseConfig(env, coreVars).config, coreVars))),
      debug: { debugAddr: { host: '127.0.0.1', port: 0 } },
    })
    assert.equal((body.config as { core: { shutdownTimeoutMs: number } }).core.shutdownTimeoutMs, 7000)
    const { heapUsed = 0, rss = 0 } = body.memory
    assert.ok(heapUsed > 0 && rss >= heapUsed, JSON.stringify(body.memory))
    const { usedHeapSize = 0, heapSizeLimit = 0 } = body.heap
    assert.ok(usedHeapSize > 0 && heapSizeLimit > usedHeapSize, JSON.stringify(body.heap))
    assert.ok((body.activeResources.TCPServerWrap ?? 0) >= 2, 'both listeners')

    let later = body
    while (later.uptimeSeconds === body.uptimeSeconds) later = await readVars(service) // poll, not sleep
    assert.ok(later.uptimeSeconds > body.uptimeSeconds)
  })

  it('reports event-loop delay percentiles and utilisation', async (t) => {
    const service = await startDebugService(t)
    let vars = await readVars(service)
    // The histogram takes its first sample 10 ms after the listener starts; ask until it has.
    while (vars.eventLoop.delayMs.samples === 0) vars = await readVars(service)
    const { delayMs, utilization } = vars.eventLoop
    const { min = -1, p50 = -1, p90 = -1, p99 = -1, max = -1 } = delayMs
    assert.ok(min >= 0 && min <= p50 && p50 <= p90 && p90 <= p99 && p99 <= max, JSON.stringify(delayMs))
    for (const window of ['sinceStart', 'sinceLastCall']) {
      const u = utilization[window] ?? {}
      assert.ok(u.utilization !== undefined && u.utilization >= 0 && u.utilization <= 1, JSON.stringify(u))
      assert.ok((u.activeMs ?? -1) > 0 && (u.idleMs ?? -1) >= 0, JSON.stringify(u))
    }
  })

  it("counts the main server's connections and requests in flight, and sees the drain", async (t) => {
    let release: () => void = () => {}
    let arrived: () => void = () => {}
    const handled = new Promise<void>((resolve) => (arrived = resolve))
    const service = await startDebugService(t, { SHUTDOWN_DELAY: '1m' }, async (deps) => ({
      ...(await newRoutes(deps)),
      '/stall': {
        GET: (_req, res) => {
          release = () => res.end('done')
          arrived()
        },
      },
    }))
    const idle = (await readVars(service)).server
    assert.deepEqual(idle, { connections: 0, inflight: 0, draining: false })

    const req = request(`${service.url}/stall`)
    req.end()
    await handled
    assert.deepEqual((await readVars(service)).server, { connections: 1, inflight: 1, draining: false })
    release()
    const [res] = (await once(req, 'response')) as [IncomingMessage]
    res.resume()
    await once(res, 'end')

    service.events.emit('SIGTERM', 'SIGTERM')
    await service.waitForLog((l) => l.msg === 'shutdown started')
    const draining = (await readVars(service)).server
    assert.equal(draining.inflight, 0)
    assert.equal(draining.draining, true, 'the debug listener stays up while the service shuts down')
    service.events.emit('SIGINT', 'SIGINT')
    assert.equal(await service.exited, 130)
  })
})

describe('GET /debug/pprof/profile', () => {
  it('returns a 1-second CPU profile that parses, and logs who asked and how long it took', async (t) => {
    const service = await startDebugService(t)
    const headers = { 'x-request-id': 'cpu-1', 'user-agent': 'profile-test/1.0' }
    const { res, body: profile } = await getJSON<{
      nodes: { id: number; callFrame: Record<string, unknown> }[]
      samples: number[]
      timeDeltas: number[]
      startTime: number
      endTime: number
    }>(`${service.debugUrl}/debug/pprof/profile?seconds=1`, headers)
    assert.equal(res.headers.get('content-type'), 'application/json')
    assert.match(res.headers.get('content-disposition') ?? '', fileName('cpuprofile'))
    assert.ok(profile.nodes.length > 0)
    for (const node of profile.nodes) assert.equal(typeof node.callFrame.functionName, 'string')
    assert.ok(profile.nodes.some((node) => node.callFrame.functionName === '(root)'))
    assert.equal(profile.samples.length, profile.timeDeltas.length)
    assert.ok(profile.startTime < profile.endTime)
    assert.ok(profile.endTime - profile.startTime >= 900_000, 'about a second, in microseconds')

    const started = await service.waitForLog((l) => l.msg === 'profile started' && l.requestId === 'cpu-1')
    assert.equal(started.profile, 'cpu')
    assert.equal(started.seconds, 1)
    assert.equal(started.userAgent, 'profile-test/1.0')
    assert.match(String(started.remoteAddr), /127\.0\.0\.1$/)
    const finished = await service.waitForLog((l) => l.msg === 'profile finished' && l.requestId === 'cpu-1')
    assert.ok((finished.durationMs as number) >= 900 && (finished.durationMs as number) < 30_000)
    assert.equal(finished.bytes, Number(res.headers.get('content-length')))
  })

  it('answers 400 for seconds that are not an integer from 1 to 60', async (t) => {
    const service = await startDebugService(t)
    for (const seconds of ['0', '61', '100', '-1', '1.5', '1e1', '10s', 'abc', '', ' 1']) {
      const res = await fetch(`${service.debugUrl}/debug/pprof/profile?seconds=${encodeURIComponent(seconds)}`)
      await assertProblem(res, 400, /Expected `seconds` to be an integer from 1 to 60/)
    }
    assert.ok(!service.logs.some((l) => l.msg === 'profile started'))
  })

  it('answers HEAD without taking a profile', async (t) => {
    const service = await startDebugService(t)
    const res = await fetch(`${service.debugUrl}/debug/pprof/profile?seconds=60`, { method: 'HEAD' })
    assert.equal(res.status, 200)
    assert.match(res.headers.get('content-disposition') ?? '', fileName('cpuprofile'))
    assert.ok(!service.logs.some((l) => l.msg === 'profile started'))
  })

  it('refuses a second profile with 409 while one runs, and takes one again once it is abandoned', async (t) => {
    const service = await startDebugService(t)
    const client = new AbortController()
    const first = fetch(`${service.debugUrl}/debug/pprof/profile?seconds=60`, {
      signal: client.signal,
      headers: { 'x-request-id': 'long' },
    }).catch((err: unknown) => err)
    await service.waitForLog((l) => l.msg === 'profile started' && l.requestId === 'long')
    for (const path of [
      '/debug/pprof/profile?seconds=1',
      '/debug/pprof/heap',
      '/debug/pprof/heap?sampling=1&seconds=1',
    ]) {
      await assertProblem(await fetch(`${service.debugUrl}${path}`), 409, /one runs at a time/)
    }
    client.abort() // the client goes away: the profile is abandoned and the lock released
    assert.ok((await first) instanceof Error)
    const abandoned = await service.waitForLog((l) => l.msg === 'profile abandoned' && l.requestId === 'long')
    assert.ok((abandoned.durationMs as number) < 30_000)
    const next = await fetch(`${service.debugUrl}/debug/pprof/profile?seconds=1`)
    assert.equal(next.status, 200)
    await next.arrayBuffer()
  })

  it('does not hold up shutdown: the profile is abandoned and the service exits promptly', async (t) => {
    const service = await startDebugService(t)
    const profile = fetch(`${service.debugUrl}/debug/pprof/profile?seconds=60`, { headers: { 'x-request-id': 'cut' } })
      .then((res) => res.arrayBuffer())
      .catch((err: unknown) => err)
    await service.waitForLog((l) => l.msg === 'profile started' && l.requestId === 'cut')
    const stopping = performance.now()
    assert.equal(await service.stop(), 0)
    const atExit = [...service.logs] // what a real process, exiting right now, has written
    const tookMs = performance.now() - stopping
    assert.ok(tookMs < 10_000, `stopped in ${Math.round(tookMs)} ms, not after the 60-second profile`)
    assert.ok((await profile) instanceof Error, 'the client sees the connection cut')
    assert.ok(atExit.some((l) => l.msg === 'profile abandoned' && l.requestId === 'cut'))
    const access = atExit.find((l) => l.msg === 'request' && l.requestId === 'cut')
    assert.equal(access?.aborted, true, 'the access line of the cut request')
  })
})

describe('GET /debug/pprof/heap', () => {
  it('streams a heap snapshot that parses', async (t) => {
    const service = await startDebugService(t)
    const { res, body: snapshot } = await getJSON<{
      snapshot: { meta: { node_fields: string[]; edge_fields: string[] }; node_count: number; edge_count: number }
      nodes: number[]
      edges: number[]
      strings: string[]
    }>(`${service.debugUrl}/debug/pprof/heap`, { 'x-request-id': 'snap' })
    assert.match(res.headers.get('content-disposition') ?? '', fileName('heapsnapshot'))
    assert.equal(res.headers.get('content-length'), null, 'streamed, so its length is not known up front')
    const { meta, node_count, edge_count } = snapshot.snapshot
    assert.ok(meta.node_fields.includes('self_size'))
    assert.ok(node_count > 0)
    assert.equal(snapshot.nodes.length, node_count * meta.node_fields.length)
    assert.equal(snapshot.edges.length, edge_count * meta.edge_fields.length)
    assert.ok(snapshot.strings.length > 0)
    const finished = await service.waitForLog((l) => l.msg === 'profile finished' && l.requestId === 'snap')
    assert.equal(finished.profile, 'heap')
    assert.ok((finished.bytes as number) > 100_000)
  })

  it('streams it from the temp directory, leaving nothing behind', async (t) => {
    const service = await startDebugService(t)
    const before = (await readdir(tmpdir())).filter((name) => name.startsWith('heapsnapshot-'))
    const res = await fetch(`${service.debugUrl}/debug/pprof/heap`, { headers: { 'x-request-id': 'from-file' } })
    assert.equal(res.status, 200)
    assert.ok((await res.arrayBuffer()).byteLength > 100_000)
    await service.waitForLog((l) => l.msg === 'profile finished' && l.requestId === 'from-file')
    const after = (await readdir(tmpdir())).filter((name) => name.startsWith('heapsnapshot-'))
    assert.deepEqual(after, before)
    assert.equal(
      service.logs.find((l) => l.msg.startsWith('no writable temp directory')),
      undefined,
    )
  })

  it('falls back to queueing the chunks when no temp directory is writable', async (t) => {
    const service = await startDebugService(t)
    const saved = process.env.TMPDIR
    process.env.TMPDIR = '/nonexistent/tmp' // os.tmpdir() reads it on every call
    t.after(() => {
      if (saved === undefined) delete process.env.TMPDIR
      else process.env.TMPDIR = saved
    })
    const res = await fetch(`${service.debugUrl}/debug/pprof/heap`)
    const snapshot = JSON.parse(await res.text()) as { snapshot: { node_count: number } }
    assert.ok(snapshot.snapshot.node_count > 0)
    const warning = await service.waitForLog(
      (l) => l.msg === 'no writable temp directory: heap snapshot queued in memory',
    )
    assert.equal(warning.level, 'warn')
  })

  it('returns a sampling heap profile with sampling=1', async (t) => {
    const service = await startDebugService(t)
    const { res, body: profile } = await getJSON<{
      head: { callFrame: { functionName: string }; children: unknown[] }
      samples: unknown[]
    }>(`${service.debugUrl}/debug/pprof/heap?sampling=1&seconds=1`)
    assert.match(res.headers.get('content-disposition') ?? '', fileName('heapprofile'))
    assert.equal(profile.head.callFrame.functionName, '(root)')
    assert.ok(Array.isArray(profile.head.children))
    assert.ok(Array.isArray(profile.samples))
  })

  it('answers 400 for a sampling or seconds it does not take', async (t) => {
    const service = await startDebugService(t)
    for (const [query, detail] of [
      ['sampling=2', /`sampling` to be 0 or 1/],
      ['sampling=yes', /`sampling` to be 0 or 1/],
      ['seconds=5', /takes no `seconds`/],
      ['sampling=0&seconds=5', /takes no `seconds`/],
      ['sampling=1&seconds=0', /`seconds` to be an integer from 1 to 60/],
    ] as const) {
      await assertProblem(await fetch(`${service.debugUrl}/debug/pprof/heap?${query}`), 400, detail)
    }
  })
})

describe('debug.openapi.yaml and README.md', () => {
  checkListenerSpec(spec, debug, { DEBUG_ADDR: '127.0.0.1:0' }, 'debug')

  it("hold the README's variable table to the declaration", () => {
    const readme = readFileSync(new URL('README.md', import.meta.url), 'utf8')
    assert.deepEqual(readmeTable(readme, '## Configuration'), declaredRows(debugVars))
  })
})

describe('heap snapshots cost', () => {
  it('is logged before it is paid, and leftovers of a killed process are removed at start-up', async (t) => {
    const leftover = join(tmpdir(), 'heapsnapshot-leftover-test')
    await mkdir(leftover, { recursive: true })
    const service = await startDebugService(t)
    assert.ok(!(await readdir(tmpdir())).includes('heapsnapshot-leftover-test'))
    const removed = service.logs.find((l) => l.msg === 'removed heap snapshots a previous process left behind')
    assert.ok((removed?.removed as string[] | undefined)?.includes('heapsnapshot-leftover-test'))
    const res = await fetch(`${service.debugUrl}/debug/pprof/heap`, { headers: { 'x-request-id': 'costly' } })
    await res.arrayBuffer()
    const warning = service.logs.find((l) => l.msg === 'heap snapshot: the process pauses while V8 writes it')
    assert.equal(warning?.level, 'warn')
    assert.ok((warning?.heapUsedBytes as number) > 0 && (warning?.estimatedPauseSeconds as number) >= 1)
    const started = service.logs.findIndex((l) => l.msg === 'profile started' && l.requestId === 'costly')
    assert.ok(service.logs.indexOf(warning as never) > started, 'the warning comes as the snapshot starts')
  })
})
