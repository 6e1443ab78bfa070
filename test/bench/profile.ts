// profile runs the built service under `node --cpu-prof` while the load generator drives
// /health, then lists the functions with the most self time: where the per-request cost hides.
// The .cpuprofile stays on disk for Chrome DevTools (Performance > Load profile).
//
//   npm run bench:profile                      10 s of load, top 25 functions
//   npm run bench:profile -- --seconds 20 --top 40 --service x.js
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { type Tool, canPin, chooseTool, runLoad, writeWrkScript } from './load.ts'
import { findFreePort, startServer, stopServer, waitForOK } from './servers.ts'

const serviceMain = fileURLToPath(new URL('../../cmd/server/main.js', import.meta.url))
const root = fileURLToPath(new URL('../../../', import.meta.url))

/** CPUProfile is the part of V8's profile format (Profiler.Profile) this file reads. */
interface CPUProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[]
  samples: number[]
  timeDeltas: number[]
}

/** SelfTime is one function's self time in microseconds. */
interface SelfTime {
  name: string
  where: string
  origin: string
  us: number
}

/** originOf sorts a script URL into who owns the code: node, a package, the service, or V8. */
function originOf(url: string, name: string): string {
  if (url === '') return name.startsWith('(') ? name : '(native/V8 builtin)'
  if (url.startsWith('node:')) return 'node core'
  const pkg = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url)?.[1]
  if (pkg !== undefined) return pkg
  return relative(root, fileURLToPath(url))
    .replace(/^dist\//, '')
    .replace(/\/[^/]*$/, '/')
}

/** summarise returns the self time of every function in profile, largest first. */
function summarise(profile: CPUProfile): SelfTime[] {
  const frames = new Map(profile.nodes.map((node) => [node.id, node.callFrame]))
  const byFunction = new Map<string, SelfTime>()
  profile.samples.forEach((id, i) => {
    const frame = frames.get(id)
    if (frame === undefined) return
    const where =
      frame.url === ''
        ? ''
        : `${frame.url.startsWith('file:') ? relative(root, fileURLToPath(frame.url)) : frame.url}:${frame.lineNumber + 1}`
    const name = frame.functionName === '' ? '(anonymous)' : frame.functionName
    const key = `${name} ${where}`
    const entry = byFunction.get(key) ?? { name, where, origin: originOf(frame.url, name), us: 0 }
    entry.us += profile.timeDeltas[i] ?? 0
    byFunction.set(key, entry)
  })
  return [...byFunction.values()].sort((a, b) => b.us - a.us)
}

function printSummary(entries: SelfTime[], top: number): void {
  const total = entries.reduce((sum, e) => sum + e.us, 0)
  const busy = total - (entries.find((e) => e.name === '(idle)')?.us ?? 0)
  const percent = (us: number) => `${((100 * us) / busy).toFixed(1)}%`
  console.log(
    `\nself time, % of non-idle samples (${(busy / 1e6).toFixed(1)} s busy of ${(total / 1e6).toFixed(1)} s)\n`,
  )
  console.log('| self | function | where |')
  console.log('| ---: | --- | --- |')
  for (const e of entries.filter((e) => e.name !== '(idle)').slice(0, top))
    console.log(`| ${percent(e.us)} | ${e.name} | ${e.where} |`)
  const origins = new Map<string, number>()
  for (const e of entries) if (e.name !== '(idle)') origins.set(e.origin, (origins.get(e.origin) ?? 0) + e.us)
  console.log('\n| self | whose code |')
  console.log('| ---: | --- |')
  for (const [origin, us] of [...origins].sort((a, b) => b[1] - a[1])) console.log(`| ${percent(us)} | ${origin} |`)
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string', default: '10' },
      top: { type: 'string', default: '25' },
      connections: { type: 'string', default: '50' },
      tool: { type: 'string' },
      service: { type: 'string' },
    },
  })
  const say = (line: string) => console.log(line)
  const tool = values.tool === 'wrk' || values.tool === 'autocannon' ? (values.tool as Tool) : chooseTool()
  const pinned = canPin()
  const dir = mkdtempSync(join(tmpdir(), 'kickstart-profile-'))
  const port = await findFreePort()
  const service = startServer({
    script: values.service === undefined ? serviceMain : resolve(values.service),
    nodeArgs: ['--cpu-prof', '--cpu-prof-dir', dir],
    env: { PORT: String(port), LOG_LEVEL: 'info' },
    stdoutFile: join(dir, 'service.log'),
    cpu: pinned ? 0 : undefined,
  })
  const url = `http://127.0.0.1:${port}/health`
  try {
    await waitForOK(service, url)
    const seconds = Number(values.seconds)
    say(`profiling under ${tool} for ${seconds} s${pinned ? ', service on CPU 0, load on CPU 1' : ''}`)
    const result = await runLoad({
      tool,
      url,
      connections: Number(values.connections),
      seconds,
      cpu: pinned ? 1 : undefined,
      wrkScript: writeWrkScript(dir),
    })
    say(`${result.rps.toFixed(0)} req/s under the profiler`)
  } finally {
    await stopServer(service)
  }
  rmSync(join(dir, 'service.log')) // hundreds of MiB of access lines, no longer needed
  const file = readdirSync(dir).find((name) => name.endsWith('.cpuprofile'))
  if (file === undefined) {
    say(`FAIL: no .cpuprofile in ${dir}; stderr: ${service.stderr()}`)
    return 1
  }
  printSummary(summarise(JSON.parse(readFileSync(join(dir, file), 'utf8')) as CPUProfile), Number(values.top))
  say(`\nprofile: ${join(dir, file)}`)
  return 0
}

process.exitCode = await main()
