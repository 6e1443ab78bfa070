// The checks test/container.sh runs against the built image with a real Docker engine. Not a
// *.test.ts file: `npm test` needs no engine, so it does not run these. The script passes the
// image and the build args it used as IMAGE and EXPECT_* variables, and runs it in the repository.
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { promisify } from 'node:util'
import type { LogLine } from './service.ts'

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
    )
    assert.equal(sources, '')
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
    const messages = lines.map((line) => line.msg).filter((msg) => msg !== 'request')
    assert.deepEqual(messages, ['listening', 'shutdown started', 'stopped accepting connections', 'shutdown complete'])
    assert.equal(lines.find((line) => line.msg === 'shutdown started')?.signal, 'SIGTERM')
  })

  it('refuses invalid configuration with exit code 2', async () => {
    const code = await exitCodeOf('run', '--rm', '--network', 'none', '--read-only', '--env', 'PORT=http', image)
    assert.equal(code, 2)
  })
})
