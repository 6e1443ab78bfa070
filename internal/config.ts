/**
 * Var declares one environment variable, in one place: its name, its default, how to parse it, what
 * it means and whether its value is secret. The config type, the defaults, the error messages, the
 * README's table (held to this by a test) and redaction all follow from the declaration.
 */
export interface Var<T> {
  readonly name: string
  /** default applies when the variable is unset or empty; '' means unset. */
  readonly default: string
  /** parse returns the value, or undefined when raw is invalid. */
  readonly parse: (raw: string) => T | undefined
  /** expected completes "Expected `NAME` to be …" when parse refuses a value. */
  readonly expected: string
  /** doc is the README's one-line meaning. */
  readonly doc: string
  /** secret values never appear in logs, errors or /debug/vars. */
  readonly secret?: boolean
}

/** Vars maps config keys to their declarations. */
export type Vars = Record<string, Var<unknown>>

/** ConfigOf is the parsed configuration that vars declare. */
export type ConfigOf<V extends Vars> = { readonly [K in keyof V]: V[K] extends Var<infer T> ? T : never }

/** Env is the environment as process.env holds it. */
export type Env = Readonly<Record<string, string | undefined>>

/** Address is a host and port to listen on; host '' means all interfaces. */
export interface Address {
  readonly host: string
  readonly port: number
}

const logLevels = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const

/** LogLevel is one of pino's level labels, or 'silent'. */
export type LogLevel = (typeof logLevels)[number]

const duration = 'a duration with a unit, like 500ms, 10s, 1m or 1m30s'
const positiveDuration = 'a duration above zero with a unit, like 500ms, 10s or 1m'
const size = 'a size with a unit, like 512B, 16KiB or 1MiB'
/** countExpected is what parseCount accepts, for a Var's `expected`. */
export const countExpected = 'an integer from 1 to 9999999'

/** coreVars declares the variables of the core service; add-ons declare their own. */
export const coreVars = {
  port: {
    name: 'PORT',
    default: '8080',
    parse: parsePort,
    expected: 'an integer from 0 to 65535',
    doc: 'TCP port; `0` picks any free port (the `listening` log line says which)',
  },
  host: {
    name: 'HOST',
    default: '',
    parse: (raw: string) => (/^[\w.:%-]*$/.test(raw) ? raw : undefined),
    expected: 'a host name or IP address',
    doc: 'address or host name to listen on, e.g. `127.0.0.1`; unset: all interfaces',
  },
  logLevel: {
    name: 'LOG_LEVEL',
    default: 'info',
    parse: (raw: string) => logLevels.find((level) => level === raw),
    expected: `one of ${logLevels.join(', ')}`,
    doc: '`trace`, `debug`, `info`, `warn`, `error`, `fatal` or `silent`',
  },
  shutdownDelayMs: {
    name: 'SHUTDOWN_DELAY',
    default: '0s',
    parse: parseDuration,
    expected: duration,
    doc: 'after a stop signal, keep serving this long while load balancers stop sending; at least their detection time (see Shutdown)',
  },
  shutdownTimeoutMs: {
    name: 'SHUTDOWN_TIMEOUT',
    default: '10s',
    parse: parseDuration,
    expected: duration,
    doc: 'how long the drain may take after the delay before the exit is forced',
  },
  headersTimeoutMs: {
    name: 'HEADERS_TIMEOUT',
    default: '10s',
    parse: parsePositiveDuration,
    expected: positiveDuration,
    doc: 'time a client has to send the request line and headers (slowloris); then 408 and the connection closes',
  },
  requestTimeoutMs: {
    name: 'REQUEST_TIMEOUT',
    default: '30s',
    parse: parsePositiveDuration,
    expected: positiveDuration,
    doc: 'time a client has to send the whole request, body included; then 408. At least `HEADERS_TIMEOUT`',
  },
  keepAliveTimeoutMs: {
    name: 'KEEP_ALIVE_TIMEOUT',
    default: '65s',
    parse: parsePositiveDuration,
    expected: positiveDuration,
    doc: "how long an idle keep-alive connection stays open; keep it above your load balancer's idle timeout (60 s on AWS ALB and GCP) or it will sporadically answer 502",
  },
  maxHeaderBytes: {
    name: 'MAX_HEADER_SIZE',
    default: '16KiB',
    parse: parseSize,
    expected: size,
    doc: 'largest request line plus headers; larger gets 431',
  },
  maxBodyBytes: {
    name: 'MAX_BODY_SIZE',
    default: '1MiB',
    parse: parseSize,
    expected: size,
    doc: 'largest body `readBody` and `readJSON` accept; larger gets 413',
  },
  maxConnections: {
    name: 'MAX_CONNECTIONS',
    default: '',
    parse: optional(parseCount),
    expected: countExpected,
    doc: "most connections open at once; past it new ones are closed and logged. unset: the file-descriptor limit less a tenth (at least 32), kept for the service's own files",
  },
} satisfies Vars

/** Config is the core service's configuration. */
export type Config = ConfigOf<typeof coreVars>

/**
 * parseConfig reads the variables vars declares from env, applying the default to unset or empty
 * ones. It never throws: problems lists one sentence per invalid variable (a secret one without its
 * value), and config then holds the defaults in their place. config is frozen.
 */
export function parseConfig<V extends Vars>(env: Env, vars: V): { config: ConfigOf<V>; problems: string[] } {
  const config: Record<string, unknown> = {}
  const problems: string[] = []
  for (const [key, v] of Object.entries(vars)) {
    const raw = env[v.name] || v.default
    let value = v.parse(raw)
    if (value === undefined) {
      problems.push(
        `Expected \`${v.name}\` to be ${v.expected}, got ${v.secret ? 'a value that is not' : `\`${raw}\``}`,
      )
      value = v.parse(v.default)
    }
    config[key] = value
  }
  return { config: Object.freeze(config) as ConfigOf<V>, problems }
}

/** checkConfig returns the problems no single variable shows: Node refuses headers > request timeout. */
export function checkConfig(config: Config, env: Env): string[] {
  if (config.headersTimeoutMs <= config.requestTimeoutMs) return []
  const value = (v: Var<unknown>) => env[v.name] || v.default
  return [
    `Expected \`HEADERS_TIMEOUT\` to be at most \`REQUEST_TIMEOUT\` (${value(coreVars.requestTimeoutMs)}), got \`${value(coreVars.headersTimeoutMs)}\``,
  ]
}

/** redactConfig returns config with every secret value replaced by '[REDACTED]', for logs and /debug/vars. */
export function redactConfig(config: Record<string, unknown>, vars: Vars): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(config).map(([key, value]) => [key, vars[key]?.secret ? '[REDACTED]' : value]),
  )
}

const sizeUnits: Record<string, number> = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 }

/** parseSize turns '512B', '16KiB', '1MiB' or '1GiB' into bytes; anything else is undefined. */
export function parseSize(value: string): number | undefined {
  const match = /^(\d+)(B|KiB|MiB|GiB)$/.exec(value)
  const bytes = Number(match?.[1]) * (sizeUnits[match?.[2] ?? ''] ?? 0)
  return bytes > 0 && Number.isSafeInteger(bytes) ? bytes : undefined
}

const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }
// setTimeout fires at once for delays above 2^31-1 ms, so a longer duration would be a silent bug.
const maxDurationMs = 2 ** 31 - 1

/**
 * parseDuration turns a Go-style duration ('500ms', '10s', '1m30s', '1.5h') into milliseconds.
 * It returns undefined for anything else, bare numbers included: a unit is never guessed.
 */
export function parseDuration(value: string): number | undefined {
  if (!/^(?:\d+(?:\.\d+)?(?:ms|s|m|h))+$/.test(value)) return undefined
  let ms = 0
  for (const [, amount, unit] of value.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) ms += Number(amount) * units[unit ?? '']!
  return ms <= maxDurationMs ? Math.round(ms) : undefined
}

/** parsePositiveDuration is parseDuration that also refuses zero. */
export function parsePositiveDuration(value: string): number | undefined {
  const ms = parseDuration(value)
  return ms !== undefined && ms > 0 ? ms : undefined
}

/** parseCount reads a count of at least 1, like 250: digits only, no sign, exponent or leading zero. */
export function parseCount(value: string): number | undefined {
  return /^[1-9]\d{0,6}$/.test(value) ? Number(value) : undefined
}

/** optional makes parse take '' (unset) as null, off: for a limit or feature with no default. */
export function optional<T>(parse: (raw: string) => T | undefined): (raw: string) => T | null | undefined {
  return (raw) => (raw === '' ? null : parse(raw))
}

function parsePort(value: string): number | undefined {
  return /^\d{1,5}$/.test(value) && Number(value) <= 65535 ? Number(value) : undefined
}

// host:port as Go's net.Listen takes it: an IPv6 host goes in brackets, an empty host means every
// interface. An unbracketed IPv6 address ('::1:6060') is refused: which colon ends it is a guess.
const addressPattern = /^(?:\[([\da-fA-F.]*:[\da-fA-F:.]*(?:%[\w.-]+)?)\]|([\w.-]*)):(\d{1,5})$/

/** parseAddress reads an optional host:port, for add-ons' listeners: '' (unset) is null, off. */
export function parseAddress(value: string): Address | null | undefined {
  if (value === '') return null
  const match = addressPattern.exec(value)
  const port = parsePort(match?.[3] ?? '')
  if (match === null || port === undefined) return undefined
  return Object.freeze({ host: match[1] ?? match[2] ?? '', port })
}

/** addressExpected is what parseAddress accepts, for a Var's `expected`. */
export const addressExpected = 'host:port, like 127.0.0.1:6060, localhost:6060, [::1]:6060 or :6060 (all interfaces)'
