// The dev loop's smoke test (.ci/run): `npm run dev` in a scratch copy of the repository picks up a
// changed openapi.yaml and a changed source file within a few seconds each, and Ctrl-C (SIGINT to
// its process group, as a terminal sends it) leaves no process behind.
//
//   node test/dev.ts
import assert from 'node:assert/strict'
import { execFileSync, spawn } from 'node:child_process'
import { once } from 'node:events'
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('../', import.meta.url))
const scratch = mkdtempSync(join(tmpdir(), 'dev-loop-'))

/** poll asks check every 50 ms until it returns true, and returns how long that took. */
async function poll(what: string, check: () => Promise<boolean>, timeoutMs = 15_000): Promise<number> {
  const started = performance.now()
  while (!(await check().catch(() => false))) {
    if (performance.now() - started > timeoutMs) throw new Error(`dev: timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return Math.round(performance.now() - started)
}

async function freePort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as { port: number }
  server.close()
  return port
}

function edit(file: string, from: string, to: string) {
  const path = join(scratch, file)
  const text = readFileSync(path, 'utf8')
  assert.ok(text.includes(from), `${file} holds ${from}`)
  writeFileSync(path, text.replace(from, to))
}

// The files git knows, committed or not, and the installed node_modules, linked rather than copied.
const files = execFileSync('git', ['ls-files', '--cached', '--others', '--exclude-standard'], {
  cwd: root,
  encoding: 'utf8',
})
for (const file of files.split('\n').filter(Boolean)) {
  mkdirSync(join(scratch, dirname(file)), { recursive: true })
  cpSync(join(root, file), join(scratch, file))
}
symlinkSync(join(root, 'node_modules'), join(scratch, 'node_modules'))

const port = await freePort()
const url = `http://127.0.0.1:${port}`
const dev = spawn('npm', ['run', 'dev'], { cwd: scratch, env: { ...process.env, PORT: String(port) }, detached: true })
let output = ''
dev.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk))
dev.stderr.setEncoding('utf8').on('data', (chunk: string) => (output += chunk))
const exited = once(dev, 'exit')
try {
  await poll('the first start', async () => (await fetch(`${url}/health`)).ok, 60_000)

  edit('openapi.yaml', 'summary: A minimal HTTP microservice on plain node:http.', 'summary: Changed by test/dev.ts.')
  const specMs = await poll('the changed spec', async () =>
    (await (await fetch(`${url}/openapi.yaml`)).text()).includes('Changed by test/dev.ts'),
  )

  edit('internal/health.ts', "status: 'ok',", "status: 'ok', changedBy: 'test/dev.ts',")
  const sourceMs = await poll('the changed source', async () =>
    (await (await fetch(`${url}/health`)).text()).includes('changedBy'),
  )

  assert.match(output, /INFO.*listening/, 'the log lines are pretty-printed')
  process.kill(-(dev.pid ?? 0), 'SIGINT') // Ctrl-C: the terminal signals the whole process group
  await exited
  await poll('every process of the group to end', async () => {
    try {
      process.kill(-(dev.pid ?? 0), 0)
      return false
    } catch {
      return true
    }
  })
  console.log(
    `dev: the changed spec served after ${specMs} ms, the changed source after ${sourceMs} ms; Ctrl-C left no process`,
  )
} catch (err) {
  console.error(output)
  try {
    process.kill(-(dev.pid ?? 0), 'SIGKILL')
  } catch {}
  throw err
} finally {
  rmSync(scratch, { recursive: true, force: true })
}
