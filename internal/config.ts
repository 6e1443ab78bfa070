/** Kind reads one kind of value: parse returns undefined for an invalid one, and expected says what was. */
export interface Kind<T> {
  readonly parse: (raw: string) => T | undefined
  readonly expected: string // completes "Expected `NAME` to be …"
}

/**
 * Var declares an environment variable: name, default ('' is unset, as an empty value is), kind,
 * and whether it is secret: never in logs, errors or /debug/vars. Its meaning is in the README.
 */
export interface Var<T> extends Kind<T> {
  readonly name: string
  readonly default: string
  readonly secret?: boolean
}

export type Vars = Record<string, Var<unknown>>
export type ConfigOf<V extends Vars> = { readonly [K in keyof V]: V[K] extends Var<infer T> ? T : never }
export type Env = Readonly<Record<string, string | undefined>>

/** Address is a host and port to listen on; host '' means all interfaces. */
export interface Address {
  readonly host: string
  readonly port: number
}

const logLevels = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const
export type LogLevel = (typeof logLevels)[number]

const kind = <T>(expected: string, parse: (raw: string) => T | undefined): Kind<T> => ({ parse, expected })

export const duration = kind('a duration with a unit, like 500ms, 10s, 1m or 1m30s', parseDuration)
export const positiveDuration = kind('a duration above zero with a unit, like 500ms, 10s or 1m', (raw) => {
  return parseDuration(raw) || undefined
})
export const count = kind('an integer from 1 to 9999999', (raw) =>
  /^[1-9]\d{0,6}$/.test(raw) ? Number(raw) : undefined,
)
export const address = kind(
  'host:port, like 127.0.0.1:6060, localhost:6060, [::1]:6060 or :6060 (all interfaces)',
  parseAddress,
)
const port = kind('an integer from 0 to 65535', (raw) => (/^\d{1,5}$/.test(raw) && +raw <= 65535 ? +raw : undefined))
const host = kind('a host name or IP address', (raw) => (/^[\w.:%-]*$/.test(raw) ? raw : undefined))
const logLevel = kind(`one of ${logLevels.join(', ')}`, (raw) => logLevels.find((level) => level === raw))
const size = kind('a size with a unit, like 512B, 16KiB or 1MiB', parseSize)

/** optional makes kind take '' (unset) as null, off. */
export function optional<T>(of: Kind<T>): Kind<T | null> {
  return kind(of.expected, (raw) => (raw === '' ? null : of.parse(raw)))
}

/** coreVars declares the core's variables (README.md, Configuration); add-ons declare their own. */
export const coreVars = {
  port: { name: 'PORT', default: '8080', ...port },
  host: { name: 'HOST', default: '', ...host },
  logLevel: { name: 'LOG_LEVEL', default: 'info', ...logLevel },
  shutdownDelayMs: { name: 'SHUTDOWN_DELAY', default: '0s', ...duration },
  shutdownTimeoutMs: { name: 'SHUTDOWN_TIMEOUT', default: '10s', ...duration },
  headersTimeoutMs: { name: 'HEADERS_TIMEOUT', default: '10s', ...positiveDuration },
  requestTimeoutMs: { name: 'REQUEST_TIMEOUT', default: '30s', ...positiveDuration },
  keepAliveTimeoutMs: { name: 'KEEP_ALIVE_TIMEOUT', default: '65s', ...positiveDuration },
  maxHeaderBytes: { name: 'MAX_HEADER_SIZE', default: '16KiB', ...size },
  maxBodyBytes: { name: 'MAX_BODY_SIZE', default: '1MiB', ...size },
  maxConnections: { name: 'MAX_CONNECTIONS', default: '', ...optional(count) },
} satisfies Vars

export type Config = ConfigOf<typeof coreVars>

/**
 * parseConfig reads vars from env, an unset or empty one taking its default. problems has a sentence
 * per invalid variable (a secret's without its value); config, frozen, has the defaults in their place.
 */
export function parseConfig<V extends Vars>(env: Env, vars: V): { config: ConfigOf<V>; problems: string[] } {
  const config: Record<string, unknown> = {}
  const problems: string[] = []
  for (const [key, v] of Object.entries(vars)) {
    const raw = env[v.name] || v.default
    config[key] = v.parse(raw)
    if (config[key] !== undefined) continue
    problems.push(`Expected \`${v.name}\` to be ${v.expected}, got ${v.secret ? 'a value that is not' : `\`${raw}\``}`)
    config[key] = v.parse(v.default)
  }
  return { config: Object.freeze(config) as ConfigOf<V>, problems }
}

/** checkConfig returns the problems no single variable shows: Node refuses headers > request timeout. */
export function checkConfig(config: Config, env: Env): string[] {
  if (config.headersTimeoutMs <= config.requestTimeoutMs) return []
  const [headers, request] = [coreVars.headersTimeoutMs, coreVars.requestTimeoutMs].map((v) => env[v.name] || v.default)
  return [`Expected \`HEADERS_TIMEOUT\` to be at most \`REQUEST_TIMEOUT\` (${request}), got \`${headers}\``]
}

/** redactConfig returns config with every secret value replaced by '[REDACTED]'. */
export function redactConfig(config: Record<string, unknown>, vars: Vars): Record<string, unknown> {
  return Object.fromEntries(Object.entries(config).map(([k, value]) => [k, vars[k]?.secret ? '[REDACTED]' : value]))
}

const sizeUnits: Record<string, number> = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 }

/** parseSize turns '512B', '16KiB', '1MiB' or '1GiB' into bytes; anything else is undefined. */
export function parseSize(value: string): number | undefined {
  const match = /^(\d+)(B|KiB|MiB|GiB)$/.exec(value)
  const bytes = Number(match?.[1]) * (sizeUnits[match?.[2] ?? ''] ?? 0)
  return bytes > 0 && Number.isSafeInteger(bytes) ? bytes : undefined
}

const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

/**
 * parseDuration turns a Go-style duration ('500ms', '1m30s', '1.5h') into milliseconds; a bare number
 * is undefined (a unit is never guessed), and so is 2^31 ms or more, where setTimeout fires at once.
 */
export function parseDuration(value: string): number | undefined {
  if (!/^(?:\d+(?:\.\d+)?(?:ms|s|m|h))+$/.test(value)) return undefined
  let ms = 0
  for (const [, amount, unit] of value.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) ms += Number(amount) * units[unit ?? '']!
  return ms < 2 ** 31 ? Math.round(ms) : undefined
}

// host:port as Go's net.Listen takes it, IPv6 in brackets ('::1:6060' is a guess), '' all interfaces.
const addressPattern = /^(?:\[([\da-fA-F.]*:[\da-fA-F:.]*(?:%[\w.-]+)?)\]|([\w.-]*)):(\d{1,5})$/

/** parseAddress reads an optional host:port: '' (unset) is null, off. */
export function parseAddress(value: string): Address | null | undefined {
  if (value === '') return null
  const match = addressPattern.exec(value)
  const portNumber = port.parse(match?.[3] ?? '')
  if (match === null || portNumber === undefined) return undefined
  return Object.freeze({ host: match[1] ?? match[2] ?? '', port: portNumber })
}
