import type { BuildInfo } from './build-info.ts'
import type { Address, Config, ConfigOf, Vars } from './config.ts'
import type { Lifecycle } from './lifecycle.ts'
import type { Logger } from './log.ts'
import type { Routes } from './router.ts'
import type { Connections } from './connections.ts'
import type { RequestHooks } from './server.ts'

/**
 * AddOn is an optional capability: a folder of its own under internal/ (code, variables, docs,
 * tests), wired into the service by one line in cmd/server/main.ts and removed by deleting both.
 * The core never imports one; an add-on sees the service only through AddOnContext.
 */
export interface AddOn<V extends Vars = Vars> {
  readonly name: string
  /** vars declares the variables it reads; they are parsed, and their problems reported, with the core's. */
  readonly vars: V
  /**
   * start runs once at start-up, before the public port opens: it opens what the add-on needs
   * (registering cleanup with lifecycle.onShutdown), and returns its public routes and request
   * hooks, if any. A throw stops the start with exit code 1 and its message logged.
   */
  start: (ctx: AddOnContext<ConfigOf<V>>) => AddOnParts | void | Promise<AddOnParts | void>
}

/** AddOnEntry is one line of cmd/server/main.ts: an add-on, imported only when it is switched on. */
export interface AddOnEntry {
  /** on names the variables that switch the add-on on: it loads when one is set; none listed, always. */
  readonly on: readonly string[]
  /** load imports the add-on's module, which exports it as `addOn`. */
  readonly load: () => Promise<{ addOn: AddOn<any> }>
}

/**
 * loadAddOns imports the add-ons env switches on: one that is off costs no import and no start-up
 * work (README.md, Performance).
 */
export function loadAddOns(entries: readonly AddOnEntry[], env: Readonly<Record<string, string | undefined>>) {
  const on = entries.filter((entry) => entry.on.length === 0 || entry.on.some((name) => env[name]))
  return Promise.all(on.map(async (entry) => (await entry.load()).addOn))
}

/** AddOnParts is what an add-on adds to the public server. */
export interface AddOnParts {
  routes?: Routes
  hooks?: RequestHooks
}

/** AddOnContext is what an add-on gets from the service. */
export interface AddOnContext<C> {
  /** config holds the add-on's own variables; core the service's. */
  config: C
  core: Config
  log: Logger
  build: BuildInfo
  startedAt: Date
  lifecycle: Lifecycle
  /** server is the public server's connections and requests, readable once it listens. */
  server: Pick<Connections, 'inflight' | 'connections' | 'requests'>
  /** effectiveConfig returns every variable's value, core and add-ons, secrets redacted. */
  effectiveConfig: () => Record<string, Record<string, unknown>>
  /**
   * serve opens a listener of the add-on's own on addr with routes, handled like the public port's
   * requests (ids, access log, 404/405, problem+json) and logged as `listener: name`. It stays up
   * while the service drains and is closed, cutting what is left, after the shutdown hooks. When it
   * cannot listen, it rejects with one line that names variable, the one addr was read from.
   */
  serve: (
    name: string,
    addr: Address,
    routes: Routes,
    variable: string,
    /** quiet leaves successful requests (a scraper's, every few seconds) out of the access log. */
    options?: { quiet?: boolean },
  ) => Promise<{ address: string; port: number }>
}
