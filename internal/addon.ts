import type { BuildInfo } from './build-info.ts'
import type { Address, Config, ConfigOf, Vars } from './config.ts'
import type { Connections } from './connections.ts'
import type { Lifecycle } from './lifecycle.ts'
import type { Logger } from './log.ts'
import type { Routes } from './router.ts'
import type { RequestHooks } from './server.ts'

/**
 * AddOn is an optional capability: a folder under internal/, wired in by one line in
 * cmd/server/main.ts and removed by deleting both. The core never imports one.
 */
export interface AddOn<V extends Vars = Vars> {
  readonly name: string
  readonly vars: V // parsed, and their problems reported, with the core's
  /**
   * start runs before the public port opens: it opens what the add-on needs (cleanup registered with
   * lifecycle.onShutdown) and returns its routes and hooks. A throw stops the start with exit code 1.
   */
  start: (ctx: AddOnContext<ConfigOf<V>>) => AddOnParts | void | Promise<AddOnParts | void>
}

/** AddOnParts is what an add-on adds to the public server. */
export interface AddOnParts {
  routes?: Routes
  hooks?: RequestHooks
}

/** AddOnContext is what an add-on sees of the service. */
export interface AddOnContext<C> {
  /** config holds the add-on's own variables; core the service's. */
  config: C
  core: Config
  log: Logger
  build: BuildInfo
  startedAt: Date
  lifecycle: Lifecycle
  /** server is the public server's connections and requests, once it listens. */
  server: Pick<Connections, 'inflight' | 'connections' | 'requests'>
  /** effectiveConfig returns every variable's value, secrets redacted. */
  effectiveConfig: () => Record<string, Record<string, unknown>>
  /**
   * serve opens a listener of the add-on's own on addr (read from variable), handled as the public
   * port is; quiet leaves successful requests out of the access log. It is cut after the hooks run.
   */
  serve: (
    name: string,
    addr: Address,
    routes: Routes,
    variable: string,
    options?: { quiet?: boolean },
  ) => Promise<{ address: string; port: number }>
}

/** AddOnEntry is one line of cmd/server/main.ts: load imports the add-on when a variable of on is set. */
export interface AddOnEntry {
  readonly on: readonly string[] // none: always on
  readonly load: () => Promise<{ addOn: AddOn<any> }>
}

/** loadAddOns imports the add-ons env switches on: one that is off costs nothing. */
export function loadAddOns(entries: readonly AddOnEntry[], env: Readonly<Record<string, string | undefined>>) {
  const on = entries.filter((entry) => entry.on.length === 0 || entry.on.some((name) => env[name]))
  return Promise.all(on.map(async (entry) => (await entry.load()).addOn))
}
