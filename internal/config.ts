/** Config is the service's configuration, parsed once from the environment at start-up. */
export interface Config {
  /** TCP port to listen on; 0 picks any free port. */
  readonly port: number
  /** Interface to listen on; '' means all interfaces. */
  readonly host: string
  readonly logLevel: LogLevel
  /** How long to keep serving after a stop signal while load balancers stop sending. */
  readonly shutdownDelayMs: number
  /** How long the drain may take, counted from the end of the delay, before the exit is forced. */
  readonly shutdownTimeoutMs: number
  /** How long a client may take to send the request headers (slowloris); answered with 408. */
  readonly headersTimeoutMs: number
  /** How long a client may take to send the whole request, body included; answered with 408. */
  readonly requestTimeoutMs: number
  /** How long an idle keep-alive connection stays open; above the load balancer's idle timeout. */
  readonly keepAliveTimeoutMs: number
  /** Largest request line plus headers accepted; larger requests get 431. */
  readonly maxHeaderBytes: number
  /** Largest request body a route reads; larger bodies get 413. */
  readonly maxBodyBytes: number
  /** Where the debug listener (profiles, /debug/vars) listens; null keeps it off. */
  readonly debugAddr: Address | null
}

/** Address is a host and port to listen on; host '' means all interfaces. */
export interface Address {
  readonly host: string
  readonly port: number
}

/** LogLevel is one of pino's level labels, or 'silent'. */
export type LogLevel = (typeof logLevels)[number]

/** ConfigResult is either the frozen config or every problem found, one sentence each. */
export type ConfigResult = { ok: true; config: Config } | { ok: false; problems: string[] }

/** Env is the environment as process.env holds it. */
export type Env = Readonly<Record<string, string | undefined>>

const logLevels = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const

/** defaults holds the value of every variable that is unset or empty; README.md lists the same. */
export const defaults = {
  PORT: '8080',
  HOST: '',
  LOG_LEVEL: 'info',
  SHUTDOWN_DELAY: '0s',
  SHUTDOWN_TIMEOUT: '10s',
  HEADERS_TIMEOUT: '10s',
  REQUEST_TIMEOUT: '30s',
  KEEP_ALIVE_TIMEOUT: '65s',
  MAX_HEADER_SIZE: '16KiB',
  MAX_BODY_SIZE: '1MiB',
  DEBUG_ADDR: '',
} as const

type Parser<T> = (value: string) => T | undefined

/**
 * parseConfig reads every variable the service knows from env, applies defaults to unset or empty
 * ones, and validates them all. It never throws: the result lists every invalid variable at once.
 */
export function parseConfig(env: Env): ConfigResult {
  const problems: string[] = []
  function read<T>(name: keyof typeof defaults, parse: Parser<T>, expected: string): T {
    const raw = env[name] || defaults[name]
    const value = parse(raw)
    if (value === undefined) {
      problems.push(`Expected \`${name}\` to be ${expected}, got \`${raw}\``)
      return parse(defaults[name]) as T
    }
    return value
  }

  const config: Config = {
    port: read('PORT', parsePort, 'an integer from 0 to 65535'),
    host: read('HOST', parseHost, 'a host name or IP address'),
    logLevel: read('LOG_LEVEL', parseLogLevel, `one of ${logLevels.join(', ')}`),
    shutdownDelayMs: read('SHUTDOWN_DELAY', parseDuration, durationExpected),
    shutdownTimeoutMs: read('SHUTDOWN_TIMEOUT', parseDuration, durationExpected),
    headersTimeoutMs: read('HEADERS_TIMEOUT', parsePositiveDuration, positiveDurationExpected),
    requestTimeoutMs: read('REQUEST_TIMEOUT', parsePositiveDuration, positiveDurationExpected),
    keepAliveTimeoutMs: read('KEEP_ALIVE_TIMEOUT', parsePositiveDuration, positiveDurationExpected),
    maxHeaderBytes: read('MAX_HEADER_SIZE', parseSize, sizeExpected),
    maxBodyBytes: read('MAX_BODY_SIZE', parseSize, sizeExpected),
    debugAddr: read(
      'DEBUG_ADDR',
      parseDebugAddr,
      'host:port, like 127.0.0.1:6060, localhost:6060, [::1]:6060 or :6060 (all interfaces)',
    ),
  }
  // Node refuses a headers timeout longer than the request timeout; say so in our words.
  if (config.headersTimeoutMs > config.requestTimeoutMs) {
    problems.push(
      `Expected \`HEADERS_TIMEOUT\` to be at most \`REQUEST_TIMEOUT\` (${env.REQUEST_TIMEOUT || defaults.REQUEST_TIMEOUT}), got \`${env.HEADERS_TIMEOUT || defaults.HEADERS_TIMEOUT}\``,
    )
  }
  return problems.length > 0 ? { ok: false, problems } : { ok: true, config: Object.freeze(config) }
}

const durationExpected = 'a duration with a unit, like 500ms, 10s, 1m or 1m30s'

const positiveDurationExpected = 'a duration above zero with a unit, like 500ms, 10s or 1m'
const sizeExpected = 'a size with a unit, like 512B, 16KiB or 1MiB'

function parsePositiveDuration(value: string): number | undefined {
  const ms = parseDuration(value)
  return ms !== undefined && ms > 0 ? ms : undefined
}

const sizeUnits: Record<string, number> = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 }

/** parseSize turns '512B', '16KiB', '1MiB' or '1GiB' into bytes; anything else is undefined. */
export function parseSize(value: string): number | undefined {
  const match = /^(\d+)(B|KiB|MiB|GiB)$/.exec(value)
  if (match === null) return undefined
  const bytes = Number(match[1]) * (sizeUnits[match[2] ?? ''] ?? 0)
  return bytes > 0 && Number.isSafeInteger(bytes) ? bytes : undefined
}

const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }
const durationPattern = /^(?:\d+(?:\.\d+)?(?:ms|s|m|h))+$/
const durationPart = /(\d+(?:\.\d+)?)(ms|s|m|h)/g
// setTimeout fires at once for delays above 2^31-1 ms, so a longer duration would be a silent bug.
const maxDurationMs = 2 ** 31 - 1

/**
 * parseDuration turns a Go-style duration ('500ms', '10s', '1m30s', '1.5h') into milliseconds.
 * It returns undefined for anything else, bare numbers included: a unit is never guessed.
 */
export function parseDuration(value: string): number | undefined {
  if (!durationPattern.test(value)) return undefined
  let ms = 0
  for (const [, amount, unit] of value.matchAll(durationPart)) ms += Number(amount) * (units[unit ?? ''] ?? 0)
  return ms <= maxDurationMs ? Math.round(ms) : undefined
}

function parsePort(value: string): number | undefined {
  if (!/^\d{1,5}$/.test(value)) return undefined
  const port = Number(value)
  return port <= 65535 ? port : undefined
}

function parseHost(value: string): string | undefined {
  return /^[\w.:%-]*$/.test(value) ? value : undefined
}

function parseLogLevel(value: string): LogLevel | undefined {
  return logLevels.find((level) => level === value)
}

// host:port as Go's net.Listen takes it: an IPv6 host goes in brackets, an empty host means every
// interface. An unbracketed IPv6 address ('::1:6060') is refused: which colon ends it is a guess.
const addressPattern = /^(?:\[([\da-fA-F.]*:[\da-fA-F:.]*(?:%[\w.-]+)?)\]|([\w.-]*)):(\d{1,5})$/

/** parseDebugAddr reads DEBUG_ADDR: '' (unset) is null, the listener stays off. */
function parseDebugAddr(value: string): Address | null | undefined {
  if (value === '') return null
  const match = addressPattern.exec(value)
  const port = match?.[3] === undefined ? undefined : parsePort(match[3])
  if (match === null || port === undefined) return undefined
  return Object.freeze({ host: match[1] ?? match[2] ?? '', port })
}
