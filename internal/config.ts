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
  }
  return problems.length > 0 ? { ok: false, problems } : { ok: true, config: Object.freeze(config) }
}

const durationExpected = 'a duration with a unit, like 500ms, 10s, 1m or 1m30s'

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
