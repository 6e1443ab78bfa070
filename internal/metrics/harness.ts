// The metrics add-on's test harness: the service with metrics on, its exposition parsed, and the
// real clients that read it, promtool and a Prometheus server, installed from Debian when missing.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { existsSync, rmSync, writeFileSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Routes } from '../router.ts'
import type { RouteDeps } from '../routes.ts'
import { type Service, startService } from '../../test/service.ts'
import { addOn as metrics } from './metrics.ts'

/** MetricsService is the service under test with its metrics listener. */
export interface MetricsService extends Service {
  metricsUrl: string
  /** scrape gets /metrics and returns its samples. */
  scrape: () => Promise<Sample[]>
}

/** startMetricsService starts the service with metrics on a free loopback port. */
export async function startMetricsService(
  t: { after(fn: () => Promise<void>): void } | undefined,
  env: Record<string, string> = {},
  routes?: (deps: RouteDeps) => Promise<Routes>,
): Promise<MetricsService> {
  const service = await startService(t, { METRICS_ADDR: '127.0.0.1:0', ...env }, { addOns: [metrics], routes })
  const line = service.logs.find((l) => l.msg === 'metrics listening')
  const metricsUrl = `http://127.0.0.1:${line?.port as number}`
  const scrape = async () => parseExposition(await (await fetch(`${metricsUrl}/metrics`)).text())
  return { ...service, metricsUrl, scrape }
}

/** Sample is one line of the exposition. */
export interface Sample {
  name: string
  labels: Record<string, string>
  value: number
}

/** parseExposition returns the samples of a text-format exposition, comments left out. */
export function parseExposition(text: string): Sample[] {
  return text
    .split('\n')
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => {
      const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
      if (match === null) throw new Error(`not a sample: ${line}`)
      const labels: Record<string, string> = {}
      for (const [, name = '', value = ''] of (match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
        labels[name] = value.replaceAll(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c))
      }
      const value = match[3] === '+Inf' ? Infinity : match[3] === '-Inf' ? -Infinity : Number(match[3])
      return { name: match[1] ?? '', labels, value }
    })
}

/**
 * findSamples returns the samples called name whose labels include every one of labels; a label
 * given as undefined must be absent.
 */
export function findSamples(samples: Sample[], name: string, labels: Record<string, string | undefined> = {}) {
  return samples.filter(
    (s) => s.name === name && Object.entries(labels).every(([key, value]) => s.labels[key] === value),
  )
}

/**
 * makeGarbage allocates a few megabytes that are dropped at once, for the young generation to
 * collect: a test that waits for a garbage collection calls it between polls.
 */
export function makeGarbage(): number {
  const garbage: { i: number; text: string }[] = []
  for (let i = 0; i < 100_000; i++) garbage.push({ i, text: String(i) })
  return garbage.length
}

/** Tools are the paths of Debian's Prometheus server and promtool. */
export interface Tools {
  prometheus: string
  promtool: string
}

const tools: Tools = { prometheus: '/usr/bin/prometheus', promtool: '/usr/bin/promtool' }

/**
 * findPrometheus returns the paths of prometheus and promtool, installing Debian's `prometheus`
 * package when they are missing and this runs as root (as CI does, on a fresh machine): the
 * package would start its own server, as a service on port 9090, which it is kept from doing. It
 * returns a reason to skip when they are missing and this is not root, and throws when root could
 * not install them: CI must not skip the proof.
 */
export function findPrometheus(): Tools | { skip: string } {
  if (existsSync(tools.prometheus) && existsSync(tools.promtool)) return tools
  if (process.getuid?.() !== 0)
    return { skip: 'prometheus is missing; install it as root: apt-get install -y prometheus' }
  // A policy-rc.d that answers 101 keeps invoke-rc.d and deb-systemd-invoke from starting the
  // package's service (Debian Policy, "invoke-rc.d"); Docker's Debian images ship one already.
  const policy = '/usr/sbin/policy-rc.d'
  const ours = !existsSync(policy)
  if (ours) writeFileSync(policy, '#!/bin/sh\nexit 101\n', { mode: 0o755 })
  try {
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
    for (const args of [
      ['update', '-qq'],
      ['install', '-y', '-qq', '--no-install-recommends', 'prometheus'],
    ]) {
      const result = spawnSync('apt-get', args, { env, stdio: ['ignore', 'ignore', 'inherit'], timeout: 300_000 })
      if (result.status !== 0) throw new Error(`apt-get ${args.join(' ')} failed: ${result.error ?? result.status}`)
    }
  } finally {
    if (ours) rmSync(policy)
  }
  // Under systemd the package also enables its service for the next boot: not on a test machine.
  if (existsSync('/run/systemd/system')) spawnSync('systemctl', ['disable', '--now', 'prometheus'], { stdio: 'ignore' })
  if (!existsSync(tools.prometheus) || !existsSync(tools.promtool)) throw new Error('apt-get installed no prometheus')
  return tools
}

/** checkMetrics runs `promtool check metrics` on text and returns its exit code and output. */
export function checkMetrics(promtool: string, text: string): { status: number | null; output: string } {
  const result = spawnSync(promtool, ['check', 'metrics'], { input: text, encoding: 'utf8' })
  return { status: result.status, output: result.stdout + result.stderr }
}

/** Prometheus is a Prometheus server started for a test. */
export interface Prometheus {
  url: string
  /** query runs an instant PromQL query and returns its vector. */
  query: (promql: string) => Promise<{ metric: Record<string, string>; value: number }[]>
  /** output is what the server logged so far, for failure messages. */
  output: () => string
  /** stop ends the server and removes its directory. */
  stop: () => Promise<void>
}

/**
 * startPrometheus starts a Prometheus server on a free loopback port, with its configuration and
 * storage in a new temporary directory, scraping target (host:port) every second as job `job`.
 * It resolves once the server answers /-/ready.
 */
export async function startPrometheus(binary: string, target: string, job: string): Promise<Prometheus> {
  const dir = await mkdtemp(join(tmpdir(), 'metrics-prometheus-'))
  const config = [
    'global:',
    '  scrape_interval: 1s',
    '  scrape_timeout: 1s',
    '  evaluation_interval: 1s',
    'scrape_configs:',
    `  - job_name: ${job}`,
    '    static_configs:',
    `      - targets: ['${target}']`,
    '',
  ].join('\n')
  await writeFile(join(dir, 'prometheus.yml'), config)
  const port = await findFreePort()
  const url = `http://127.0.0.1:${port}`
  const child = spawn(
    binary,
    [
      `--config.file=${join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  let output = ''
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (output += chunk))
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (output += chunk))
  const stop = async () => {
    await stopChild(child)
    await rm(dir, { recursive: true, force: true })
  }
  try {
    await waitUntil(
      async () => (await fetch(`${url}/-/ready`).catch(() => undefined))?.ok === true,
      'Prometheus ready',
      () => output,
    )
  } catch (err) {
    await stop()
    throw err
  }
  const query = async (promql: string) => {
    const res = await fetch(`${url}/api/v1/query?query=${encodeURIComponent(promql)}`)
    const body = (await res.json()) as {
      status: string
      data?: { result: { metric: Record<string, string>; value: [number, string] }[] }
      error?: string
    }
    if (body.status !== 'success' || body.data === undefined) throw new Error(`${promql}: ${body.error ?? res.status}`)
    return body.data.result.map(({ metric, value }) => ({ metric, value: Number(value[1]) }))
  }
  return { url, query, output: () => output, stop }
}

/** stopChild sends SIGTERM, then SIGKILL after 5 s, and resolves once the child has exited. */
async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = once(child, 'exit')
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
  await exited
  clearTimeout(timer)
}

/** findFreePort returns a loopback port nothing listened on a moment ago. */
async function findFreePort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as { port: number }
  server.close()
  await once(server, 'close')
  return port
}

/**
 * waitUntil polls check every 50 ms until it holds, and fails after timeoutMs with what, and the
 * context given, in the message. It never waits for time to pass as such.
 */
export async function waitUntil(
  check: () => Promise<boolean>,
  what: string,
  context: () => string = () => '',
  timeoutMs = 30_000,
): Promise<void> {
  const deadline = performance.now() + timeoutMs
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}\n${context()}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}
