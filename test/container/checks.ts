// The checks run.sh (this folder) runs against the built image with a real Docker engine. Not a
// *.test.ts file: `npm test` needs no engine, so it does not run these. The script passes the
// image and the build args it used as IMAGE and EXPECT_* variables, and runs it in the repository.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { totalmem } from 'node:os'
import { after, before, describe, it } from 'node:test'
import { promisify } from 'node:util'
import { parse } from 'yaml'
import type { LogLine } from '../service.ts'

function expect(name: string): string {
  const value = process.env[name]
  if (!value) throw new Error(`${name} is not set: run this through npm run test:container`)
  return value
}

const image = expect('IMAGE')
const name = 'kickstart-node-test'
const run = promisify(execFile)
// A bound for failures only: every wait below polls for a state and fails past it.
const timeoutMs = 30_000
// Long enough to see that the service keeps serving after SIGTERM, short enough for a quick test.
const shutdownDelayMs = 1000
const stopTimeoutSeconds = 30
const MiB = 1024 * 1024

/** docker runs the docker CLI and returns its stdout; it rejects on a non-zero exit. */
async function docker(...args: string[]): Promise<string> {
  const { stdout } = await run('docker', args, { maxBuffer: 16 * 1024 * 1024 })
  return stdout.trim()
}

/** exitCodeOf runs the docker CLI and resolves with its exit code instead of rejecting. */
async function exitCodeOf(...args: string[]): Promise<number> {
  try {
    await run('docker', args)
    return 0
  } catch (err) {
    return typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1
  }
}

/** poll calls check until it returns a value, and rejects after timeoutMs. */
async function poll<T>(what: string, check: () => Promise<T | undefined>): Promise<T> {
  const deadline = performance.now() + timeoutMs
  for (;;) {
    const value = await check().catch(() => undefined)
    if (value !== undefined) return value
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

/**
 * readMemoryLimit returns the Deployment's memory limit in bytes, the limit every container here
 * runs under, so the image is tested as the cluster runs it. It accepts Mi and Gi only.
 */
function readMemoryLimit(): number {
  const deployment = parse(readFileSync('deploy/kubernetes/deployment.yaml', 'utf8')) as {
    spec: { template: { spec: { containers: { resources?: { limits?: { memory?: string } } }[] } } }
  }
  const limit = deployment.spec.template.spec.containers[0]?.resources?.limits?.memory
  const match = /^(\d+)(Mi|Gi)$/.exec(limit ?? '')
  if (!match) throw new Error(`expected the Deployment's limits.memory in Mi or Gi, got ${limit}`)
  return Number(match[1]) * (match[2] === 'Gi' ? 1024 : 1) * MiB
}

const memoryLimit = readMemoryLimit()
// No swap beyond the limit, as on Kubernetes nodes.
const memoryArgs = ['--memory', String(memoryLimit), '--memory-swap', String(memoryLimit)]

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      )
    })
  })
}

async function readLogs(): Promise<{ lines: LogLine[]; stderr: string }> {
  const { stdout, stderr } = await run('docker', ['logs', name])
  const lines = stdout
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as LogLine)
  return { lines, stderr }
}

describe('the container image', () => {
  let url = ''
  let firstHealthyMs = 0
  before(async () => {
    await exitCodeOf('rm', '-f', name)
    const port = await freePort()
    url = `http://127.0.0.1:${port}`
    const started = performance.now()
    // As a cluster runs it: read-only root, no capabilities, configured by env vars only.
    await docker(
      'run',
      '--detach',
      '--name',
      name,
      '--network',
      'host',
      '--read-only',
      '--cap-drop',
      'ALL',
      '--security-opt',
      'no-new-privileges',
      '--health-interval',
      '1s',
      ...memoryArgs,
      '--env',
      `PORT=${port}`,
      '--env',
      `SHUTDOWN_DELAY=${shutdownDelayMs}ms`,
      '--env',
      'SHUTDOWN_TIMEOUT=5s',
      image,
    )
    await poll('a 200 from /health', async () => {
      const res = await fetch(`${url}/health`)
      await res.arrayBuffer()
      return res.status === 200 ? true : undefined
    })
    firstHealthyMs = Math.round(performance.now() - started)
  })
  after(async () => {
    await exitCodeOf('rm', '-f', name)
  })

  it('answers /health soon after docker run', (t) => {
    t.diagnostic(`time to first healthy answer: ${firstHealthyMs} ms`)
    assert.ok(firstHealthyMs < 5000, `${firstHealthyMs} ms`)
  })

  it('stamps the build args into /health and the OCI labels', async () => {
    const health = (await (await fetch(`${url}/health`)).json()) as Record<string, unknown>
    assert.equal(health.version, expect('EXPECT_VERSION'))
    assert.deepEqual(health.build, {
      commit: expect('EXPECT_COMMIT'),
      commitTime: new Date(expect('EXPECT_COMMIT_TIME')).toISOString(),
      dirty: null,
    })
    const json = await docker('image', 'inspect', '--format', '{{json .Config.Labels}}', image)
    const labels = JSON.parse(json) as Record<string, string>
    assert.equal(labels['org.opencontainers.image.revision'], expect('EXPECT_COMMIT'))
    assert.equal(labels['org.opencontainers.image.version'], expect('EXPECT_VERSION'))
    assert.equal(labels['org.opencontainers.image.created'], expect('EXPECT_COMMIT_TIME'))
    assert.equal(labels['org.opencontainers.image.source'], expect('EXPECT_SOURCE'))
  })

  it('logs JSON lines on stdout and nothing on stderr', async () => {
    const { lines, stderr } = await readLogs()
    assert.equal(stderr, '')
    assert.equal(lines[0]?.msg, 'listening')
    assert.ok(lines.some((line) => line.msg === 'request' && line.path === '/health'))
  })

  it('runs node as PID 1, as the unprivileged node user, on a read-only root filesystem', async () => {
    const pid1 = (await docker('exec', name, 'cat', '/proc/1/cmdline')).split('\0').filter((arg) => arg !== '')
    assert.deepEqual(pid1, ['node', 'dist/cmd/server/main.js'])
    assert.equal(await docker('exec', name, 'id', '-un'), 'node')
    assert.equal(await docker('exec', name, 'id', '-u'), '1000')
    assert.equal(await docker('image', 'inspect', '--format', '{{.Config.User}}', image), '1000:1000')
    // As root, so that only the read-only mount can refuse the write.
    await assert.rejects(docker('exec', '--user', '0', name, 'touch', '/app/written'), /Read-only file system/)
  })

  it('passes its HEALTHCHECK, a node script, while healthy', async () => {
    assert.equal(await exitCodeOf('exec', name, 'node', 'dist/cmd/healthcheck/main.js'), 0)
    const test = await docker('image', 'inspect', '--format', '{{json .Config.Healthcheck.Test}}', image)
    assert.deepEqual(JSON.parse(test), ['CMD', 'node', 'dist/cmd/healthcheck/main.js'])
    await poll('docker to report the container healthy', async () =>
      (await docker('inspect', '--format', '{{.State.Health.Status}}', name)) === 'healthy' ? true : undefined,
    )
  })

  it('holds no dev dependencies, sources, tests or npm caches', async () => {
    assert.deepEqual((await docker('exec', name, 'ls', '/app')).split('\n'), ['dist', 'node_modules', 'package.json'])
    assert.equal(await exitCodeOf('exec', name, 'test', '-d', '/app/node_modules/pino'), 0, 'pino is there')
    // The lockfile marks every package only the dev dependencies need, transitive ones included.
    const lock = JSON.parse(readFileSync('package-lock.json', 'utf8')) as {
      packages: Record<string, { dev?: boolean }>
    }
    const devOnly = Object.entries(lock.packages)
      .filter(([, entry]) => entry.dev)
      .map(([path]) => path)
    assert.ok(devOnly.includes('node_modules/typescript'))
    const listPresent = 'for p; do [ ! -e "/app/$p" ] || echo "$p"; done'
    const present = await docker('exec', name, 'sh', '-c', listPresent, 'sh', ...devOnly)
    assert.equal(present, '')
    const sources = await docker(
      'exec',
      name,
      'find',
      '/app/dist',
      '-name',
      '*.ts',
      '-o',
      '-name',
      '*.map',
      '-o',
      '-name',
      'test',
      '-o',
      '-name',
      '*.test.js',
    )
    assert.equal(sources, '')
    // Only the two programs the image runs, and what they import.
    assert.deepEqual((await docker('exec', name, 'ls', '/app/dist/cmd')).split('\n'), ['healthcheck', 'server'])
    const caches = await docker(
      'exec',
      '--user',
      '0',
      name,
      'find',
      '/root',
      '/home/node',
      '/tmp',
      '-name',
      '.npm',
      '-o',
      '-name',
      '_cacache',
    )
    assert.equal(caches, '')
  })

  it('stops gracefully on docker stop: SIGTERM, drain, exit code 0, well inside the timeout', async () => {
    const started = performance.now()
    await docker('stop', '--time', String(stopTimeoutSeconds), name)
    const stoppedMs = performance.now() - started
    assert.equal(await docker('inspect', '--format', '{{.State.ExitCode}}', name), '0')
    // Docker kills with SIGKILL at the timeout; half of it is the line for "well inside".
    assert.ok(stoppedMs >= shutdownDelayMs, `kept serving for SHUTDOWN_DELAY, stopped after ${stoppedMs} ms`)
    assert.ok(stoppedMs < (stopTimeoutSeconds * 1000) / 2, `stopped after ${stoppedMs} ms`)
    const { lines } = await readLogs()
    // The add-ons may each log the cleanup of what they opened; a failed cleanup logs an error instead.
    const messages = lines
      .map((line) => line.msg)
      .filter((msg) => msg !== 'request' && msg !== 'shutdown hook finished')
    assert.deepEqual(messages, ['listening', 'shutdown started', 'stopped accepting connections', 'shutdown complete'])
    assert.equal(lines.find((line) => line.msg === 'shutdown started')?.signal, 'SIGTERM')
  })

  it('refuses invalid configuration with exit code 2', async () => {
    const code = await exitCodeOf('run', '--rm', '--network', 'none', '--read-only', '--env', 'PORT=http', image)
    assert.equal(code, 2)
  })
})

/** readNodeFlag returns the number a flag of the image's NODE_OPTIONS sets; the checks follow the Dockerfile. */
async function readNodeFlag(name: string): Promise<number> {
  const env = JSON.parse(await docker('image', 'inspect', '--format', '{{json .Config.Env}}', image)) as string[]
  const options = env.find((entry) => entry.startsWith('NODE_OPTIONS='))?.slice('NODE_OPTIONS='.length) ?? ''
  const match = new RegExp(`(?:^|\\s)--${name}=(\\d+)(?:\\s|$)`).exec(options)
  if (!match) throw new Error(`expected --${name}=N in the image's NODE_OPTIONS, got ${JSON.stringify(options)}`)
  return Number(match[1])
}

describe("the heap under the Deployment's memory limit", () => {
  const heapName = `${name}-heap`
  const leakName = `${name}-leak`
  after(async () => {
    await exitCodeOf('rm', '-f', heapName, leakName)
  })

  it("sizes the service's V8 heap from the limit, as the image's NODE_OPTIONS say", async (t) => {
    const percentage = await readNodeFlag('max-old-space-size-percentage')
    const semiSpaceMiB = await readNodeFlag('max-semi-space-size')
    // V8's heap limit is the old generation plus the young one: two semi-spaces and a large-object
    // space of the same size. Node sizes the old generation from the cgroup's limit when there is
    // one, from the machine's memory otherwise.
    const expectedFor = (availableBytes: number) =>
      (Math.floor(((availableBytes / MiB) * percentage) / 100) + 3 * semiSpaceMiB) * MiB

    await exitCodeOf('rm', '-f', heapName)
    const [port, debugPort] = [await freePort(), await freePort()]
    await docker(
      'run',
      '--detach',
      '--name',
      heapName,
      '--network',
      'host',
      '--read-only',
      ...memoryArgs,
      '--env',
      `PORT=${port}`,
      '--env',
      `DEBUG_ADDR=127.0.0.1:${debugPort}`,
      image,
    )
    // From the service process itself (PID 1), through the debug add-on's /debug/vars; an image
    // built without that add-on answers through a second node process in the same container.
    const withDebug = (await exitCodeOf('exec', heapName, 'test', '-d', 'dist/internal/debug')) === 0
    const heapSizeLimit = withDebug
      ? await poll('a 200 from /debug/vars', async () => {
          const res = await fetch(`http://127.0.0.1:${debugPort}/debug/vars`)
          if (res.status !== 200) return undefined
          return ((await res.json()) as { heap: { heapSizeLimit: number } }).heap.heapSizeLimit
        })
      : Number(await docker('exec', heapName, 'node', '-p', 'v8.getHeapStatistics().heap_size_limit'))
    const constrained = Number(await docker('exec', heapName, 'node', '-p', 'process.constrainedMemory()'))
    assert.equal(constrained, memoryLimit, "Node reads the container's memory limit from its cgroup")
    assert.equal(heapSizeLimit, expectedFor(memoryLimit))

    // Without a limit, the same flags size the heap from the machine's memory.
    const unlimited = Number(
      await docker('run', '--rm', '--network', 'none', image, 'node', '-p', 'v8.getHeapStatistics().heap_size_limit'),
    )
    assert.notEqual(unlimited, heapSizeLimit)
    assert.ok(Math.abs(unlimited - expectedFor(totalmem())) <= MiB, `${unlimited} vs ${expectedFor(totalmem())}`)
    t.diagnostic(
      `heap limit ${heapSizeLimit / MiB} MiB under --memory ${memoryLimit / MiB}m (from ${withDebug ? '/debug/vars' : 'docker exec'}), ${unlimited / MiB} MiB without`,
    )
  })

  it("ends a leak with V8's heap out of memory, before the kernel's OOM killer acts", async () => {
    // Objects kept forever, as a leak keeps them: the heap fills, and with it the container.
    const leak = 'const kept = []; setInterval(() => { for (let i = 0; i < 2e4; i++) kept.push({ i }) }, 1)'
    await exitCodeOf('rm', '-f', leakName)
    const code = await exitCodeOf(
      'run',
      '--name',
      leakName,
      '--network',
      'none',
      ...memoryArgs,
      image,
      'node',
      '-e',
      leak,
    )
    assert.notEqual(code, 0)
    assert.equal(await docker('inspect', '--format', '{{.State.OOMKilled}}', leakName), 'false')
    const { stderr } = await run('docker', ['logs', leakName])
    assert.match(stderr, /JavaScript heap out of memory/)
  })
})
