// The rolling test's child processes and temp dir, and the promise that none outlives the test:
// every child is tracked from its spawn, and however the test ends (pass, failed assertion,
// exception, Ctrl-C), the children still running are killed and the temp dir is removed.
import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** Exit is how a child process ended. */
export interface Exit {
  code: number | null
  signal: NodeJS.Signals | null
}

/** Child is a process the workspace started. */
export interface Child {
  process: ChildProcess
  /** exited resolves once the process is gone. */
  exited: Promise<Exit>
  /** running tells whether the process has not exited yet. */
  running(): boolean
  /** stderr returns what the process wrote to stderr so far. */
  stderr(): string
}

/** Workspace is a temp dir and the children started for one test run. */
export interface Workspace {
  dir: string
  /** spawn starts command with env (PATH added), its stdout written to stdoutFile. */
  spawn(command: string, args: string[], env: Record<string, string>, stdoutFile: string): Child
  /** dispose kills every child still running and removes dir unless kept. It is synchronous, so it can run on 'exit'. */
  dispose(): void
}

/** newWorkspace creates the temp dir and makes sure dispose runs on any exit, Ctrl-C included. */
export function newWorkspace(keep: boolean): Workspace {
  const dir = mkdtempSync(join(tmpdir(), 'kickstart-rolling-'))
  const children = new Set<ChildProcess>()
  let disposed = false
  function dispose() {
    if (disposed) return
    disposed = true
    // SIGKILL: by now the orderly stop has either happened or failed; nothing is owed a drain.
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    if (keep) process.stderr.write(`rolling: kept ${dir}\n`)
    else rmSync(dir, { recursive: true, force: true })
  }
  process.once('exit', dispose)
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      process.stderr.write(`rolling: stopped by ${signal}\n`)
      dispose()
      process.exit(128 + (signal === 'SIGINT' ? 2 : signal === 'SIGTERM' ? 15 : 1))
    })
  }
  return {
    dir,
    spawn(command, args, env, stdoutFile) {
      const stdout = openSync(stdoutFile, 'a')
      const child = spawn(command, args, {
        env: { PATH: process.env.PATH ?? '', ...env },
        stdio: ['ignore', stdout, 'pipe'],
      })
      closeSync(stdout) // the child holds its own copy
      let stderr = ''
      child.once('error', (err) => (stderr += String(err)))
      if (child.pid === undefined) throw new Error(`cannot start ${command}`)
      children.add(child)
      child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
      const exited = once(child, 'exit').then(([code, signal]) => ({ code, signal }) as Exit)
      return {
        process: child,
        exited,
        running: () => child.exitCode === null && child.signalCode === null,
        stderr: () => stderr,
      }
    },
    dispose,
  }
}

/** within resolves as promise does, or rejects with a message naming what was awaited once ms pass. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)
  })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}
