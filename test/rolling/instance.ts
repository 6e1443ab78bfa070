// One instance of the service: the compiled server (dist/) as a child process on a fixed loopback
// port, its JSON log lines in a file that is read once the instance has exited.
import { readFileSync } from 'node:fs'
import { get } from 'node:http'
import { join } from 'node:path'
import type { Child, Workspace } from './workspace.ts'

/** Slot is one place in the balancer's backend: a server name and the port its instances take in turn. */
export interface Slot {
  name: string
  port: number
}

/** Instance is one running (or exited) process of the service. */
export interface Instance {
  slot: Slot
  /** generation counts the instances the slot had before this one. */
  generation: number
  /** label names it in reports: the slot and the generation, s2#1. */
  label: string
  child: Child
  logFile: string
  startedAt: number
}

/** InstanceLog is what an instance's log says, read after its exit. */
export interface InstanceLog {
  /** loadIds are the request ids of the access lines for the load's requests. */
  loadIds: string[]
  /** loadNot200 counts the load's access lines whose status was not 200. */
  loadNot200: number
  /** checks counts the access lines for /ready, haproxy's health checks. */
  checks: number
  /** events maps lifecycle messages (listening, shutdown started, stopped accepting connections...) to their time. */
  events: Map<string, number>
  /** invalid counts lines that are not JSON objects. */
  invalid: number
}

/** startInstance starts the service from script on slot's port, 127.0.0.1 only, with env added. */
export function startInstance(
  workspace: Workspace,
  script: string,
  slot: Slot,
  generation: number,
  env: Record<string, string>,
): Instance {
  const label = `${slot.name}#${generation}`
  const logFile = join(workspace.dir, `${label}.log`)
  const child = workspace.spawn(
    process.execPath,
    [script],
    { PORT: String(slot.port), HOST: '127.0.0.1', LOG_LEVEL: 'info', ...env },
    logFile,
  )
  return { slot, generation, label, child, logFile, startedAt: Date.now() }
}

/**
 * waitForReady polls the instance's /ready directly until it answers 200, for a balancer without
 * health checks, and returns the time it did. It throws when the instance exits or timeoutMs passes.
 */
export async function waitForReady(instance: Instance, timeoutMs: number): Promise<number> {
  const deadline = performance.now() + timeoutMs
  for (;;) {
    if (!instance.child.running()) throw new Error(`${instance.label} exited: ${describeExit(instance)}`)
    if ((await readStatus(instance.slot.port, '/ready')) === 200) return Date.now()
    if (performance.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${instance.label} to be ready`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

/** describeExit says why an instance that should be running has exited: its code and its last log lines. */
export function describeExit(instance: Instance): string {
  const { exitCode, signalCode } = instance.child.process
  const lines = readFileSync(instance.logFile, 'utf8').trimEnd().split('\n').slice(-3)
  return [`exit ${exitCode ?? signalCode}`, ...lines, instance.child.stderr().trim()].filter(Boolean).join('\n  ')
}

/** readStatus GETs path on a fresh connection and resolves with the status, 0 when no answer came. */
function readStatus(port: number, path: string): Promise<number> {
  return new Promise((resolve) => {
    const req = get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
      res.on('error', () => resolve(0))
    })
    req.setTimeout(2000, () => req.destroy())
    req.on('error', () => resolve(0))
  })
}

/** readInstanceLog reads an instance's log file; the load's lines are those whose request id starts with idPrefix. */
export function readInstanceLog(file: string, idPrefix: string): InstanceLog {
  const log: InstanceLog = { loadIds: [], loadNot200: 0, checks: 0, events: new Map(), invalid: 0 }
  for (const text of readFileSync(file, 'utf8').split('\n')) {
    if (text === '') continue
    let line: Record<string, unknown>
    try {
      line = JSON.parse(text) as Record<string, unknown>
    } catch {
      log.invalid++
      continue
    }
    if (typeof line !== 'object' || line === null) log.invalid++
    else if (line.msg !== 'request') {
      const msg = String(line.msg)
      if (!log.events.has(msg)) log.events.set(msg, Date.parse(String(line.time)))
    } else if (line.path === '/ready') log.checks++
    else if (typeof line.requestId === 'string' && line.requestId.startsWith(idPrefix)) {
      log.loadIds.push(line.requestId)
      if (line.status !== 200) log.loadNot200++
    }
  }
  return log
}
