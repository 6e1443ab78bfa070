import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { connectionBudget } from '../internal/connections.ts'
import { declaredRows, readmeTable } from './service.ts'
import {
  address,
  checkConfig,
  coreVars,
  type Env,
  parseAddress,
  parseConfig,
  parseDuration,
  redactConfig,
  type Vars,
} from '../internal/config.ts'

/** parseCore parses env as run() does for the core: every variable, then the checks across them. */
function parseCore(env: Env) {
  const { config, problems } = parseConfig(env, coreVars)
  return { config, problems: [...problems, ...checkConfig(config, env)] }
}

describe('parseConfig', () => {
  it('applies every declared default to an empty environment, frozen', () => {
    const result = parseCore({})
    assert.deepEqual(result.problems, [])
    for (const [key, v] of Object.entries(coreVars)) {
      assert.deepEqual(result.config[key as keyof typeof coreVars], v.parse(v.default), v.name)
    }
    assert.equal(result.config.port, 8080)
    assert.equal(result.config.shutdownTimeoutMs, 10_000)
    assert.equal(result.config.maxConnections, null, 'unset: the budget comes from the descriptor limit')
    assert.ok(Object.isFrozen(result.config))
  })

  it('treats an empty value as unset', () => {
    assert.deepEqual(parseCore({ PORT: '', LOG_LEVEL: '' }), parseCore({}))
  })

  it('matches the README table, variable by variable', () => {
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
    assert.deepEqual(readmeTable(readme, '## Configuration'), declaredRows(coreVars))
  })

  it('never shows a secret value, in a problem or redacted config', () => {
    const vars = {
      databaseUrl: {
        name: 'DATABASE_URL',
        default: '',
        parse: (raw: string) => (raw.startsWith('postgres://') ? raw : undefined),
        expected: 'a postgres:// URL',
        secret: true,
      },
      poolSize: {
        name: 'POOL_SIZE',
        default: '4',
        parse: (raw: string) => (/^\d+$/.test(raw) ? Number(raw) : undefined),
        expected: 'a number',
      },
    } satisfies Vars
    const bad = parseConfig({ DATABASE_URL: 'mysql://root:hunter2@db' }, vars)
    assert.deepEqual(bad.problems, ['Expected `DATABASE_URL` to be a postgres:// URL, got a value that is not'])
    const good = parseConfig({ DATABASE_URL: 'postgres://app:hunter2@db/app' }, vars)
    assert.deepEqual(redactConfig(good.config, vars), { databaseUrl: '[REDACTED]', poolSize: 4 })
  })

  const valid: [Env, Record<string, unknown>][] = [
    [{ PORT: '0' }, { port: 0 }],
    [{ PORT: '65535' }, { port: 65535 }],
    [{ HOST: '127.0.0.1' }, { host: '127.0.0.1' }],
    [{ HOST: '::1' }, { host: '::1' }],
    [{ HOST: 'localhost' }, { host: 'localhost' }],
    [{ LOG_LEVEL: 'silent' }, { logLevel: 'silent' }],
    [{ LOG_LEVEL: 'trace' }, { logLevel: 'trace' }],
    [{ SHUTDOWN_DELAY: '5s' }, { shutdownDelayMs: 5000 }],
    [{ SHUTDOWN_TIMEOUT: '1m30s' }, { shutdownTimeoutMs: 90_000 }],
    [{ HEADERS_TIMEOUT: '1s' }, { headersTimeoutMs: 1000 }],
    [{ HEADERS_TIMEOUT: '30s' }, { headersTimeoutMs: 30_000 }],
    [
      { REQUEST_TIMEOUT: '5m', HEADERS_TIMEOUT: '1m' },
      { requestTimeoutMs: 300_000, headersTimeoutMs: 60_000 },
    ],
    [{ KEEP_ALIVE_TIMEOUT: '75s' }, { keepAliveTimeoutMs: 75_000 }],
    [{ MAX_HEADER_SIZE: '32KiB' }, { maxHeaderBytes: 32_768 }],
    [{ MAX_BODY_SIZE: '512B' }, { maxBodyBytes: 512 }],
    [{ MAX_BODY_SIZE: '10MiB' }, { maxBodyBytes: 10_485_760 }],
    [{ MAX_CONNECTIONS: '500' }, { maxConnections: 500 }],
  ]
  for (const [env, expected] of valid) {
    it(`accepts ${JSON.stringify(env)}`, () => {
      const result = parseCore(env)
      assert.deepEqual(result.problems, [])
      assert.deepEqual({ ...result.config, ...expected }, result.config)
    })
  }

  const invalid: [Env, string][] = [
    [{ PORT: 'abc' }, 'Expected `PORT` to be an integer from 0 to 65535, got `abc`'],
    [{ PORT: '65536' }, 'Expected `PORT` to be an integer from 0 to 65535, got `65536`'],
    [{ PORT: '-1' }, 'Expected `PORT` to be an integer from 0 to 65535, got `-1`'],
    [{ PORT: '80.5' }, 'Expected `PORT` to be an integer from 0 to 65535, got `80.5`'],
    [{ HOST: 'bad host' }, 'Expected `HOST` to be a host name or IP address, got `bad host`'],
    [
      { LOG_LEVEL: 'verbose' },
      'Expected `LOG_LEVEL` to be one of trace, debug, info, warn, error, fatal, silent, got `verbose`',
    ],
    [
      { LOG_LEVEL: 'INFO' },
      'Expected `LOG_LEVEL` to be one of trace, debug, info, warn, error, fatal, silent, got `INFO`',
    ],
    [
      { SHUTDOWN_DELAY: '5' },
      'Expected `SHUTDOWN_DELAY` to be a duration with a unit, like 500ms, 10s, 1m or 1m30s, got `5`',
    ],
    [
      { SHUTDOWN_TIMEOUT: '10 s' },
      'Expected `SHUTDOWN_TIMEOUT` to be a duration with a unit, like 500ms, 10s, 1m or 1m30s, got `10 s`',
    ],
    [
      { SHUTDOWN_TIMEOUT: '-1s' },
      'Expected `SHUTDOWN_TIMEOUT` to be a duration with a unit, like 500ms, 10s, 1m or 1m30s, got `-1s`',
    ],
    [
      { HEADERS_TIMEOUT: '0s' },
      'Expected `HEADERS_TIMEOUT` to be a duration above zero with a unit, like 500ms, 10s or 1m, got `0s`',
    ],
    [
      { KEEP_ALIVE_TIMEOUT: '65' },
      'Expected `KEEP_ALIVE_TIMEOUT` to be a duration above zero with a unit, like 500ms, 10s or 1m, got `65`',
    ],
    [{ HEADERS_TIMEOUT: '40s' }, 'Expected `HEADERS_TIMEOUT` to be at most `REQUEST_TIMEOUT` (30s), got `40s`'],
    [
      { MAX_BODY_SIZE: '1MB' },
      'Expected `MAX_BODY_SIZE` to be a size with a unit, like 512B, 16KiB or 1MiB, got `1MB`',
    ],
    [
      { MAX_BODY_SIZE: '1024' },
      'Expected `MAX_BODY_SIZE` to be a size with a unit, like 512B, 16KiB or 1MiB, got `1024`',
    ],
    [{ MAX_CONNECTIONS: '0' }, 'Expected `MAX_CONNECTIONS` to be an integer from 1 to 9999999, got `0`'],
    [
      { MAX_HEADER_SIZE: '0KiB' },
      'Expected `MAX_HEADER_SIZE` to be a size with a unit, like 512B, 16KiB or 1MiB, got `0KiB`',
    ],
  ]
  for (const [env, problem] of invalid) {
    it(`rejects ${JSON.stringify(env)}`, () => {
      assert.deepEqual(parseCore(env).problems, [problem])
    })
  }

  it('reports every invalid variable at once', () => {
    const result = parseCore({ PORT: 'x', LOG_LEVEL: 'loud', SHUTDOWN_DELAY: '1', SHUTDOWN_TIMEOUT: '2' })
    assert.deepEqual(
      result.problems.map((p) => p.match(/`(\w+)`/)?.[1]),
      ['PORT', 'LOG_LEVEL', 'SHUTDOWN_DELAY', 'SHUTDOWN_TIMEOUT'],
    )
  })
})

describe('parseDuration', () => {
  const cases: [string, number | undefined][] = [
    ['0s', 0],
    ['500ms', 500],
    ['10s', 10_000],
    ['1.5s', 1500],
    ['1m', 60_000],
    ['2h', 7_200_000],
    ['1h2m3.5s', 3_723_500],
    ['10', undefined],
    ['', undefined],
    ['s', undefined],
    ['1d', undefined],
    ['1S', undefined],
    [' 1s', undefined],
    ['1s ', undefined],
    ['.5s', undefined],
    ['1e3ms', undefined],
    ['1000h', undefined], // beyond what setTimeout can wait
  ]
  for (const [input, expected] of cases) {
    it(`parses ${JSON.stringify(input)} as ${expected}`, () => assert.equal(parseDuration(input), expected))
  }
})

describe('connectionBudget', () => {
  it('keeps a tenth of the descriptor limit, at least 32, and is unbounded where the limit is unknown', () => {
    const limits = (soft: number) => {
      const file = join(mkdtempSync(join(tmpdir(), 'limits-')), 'limits')
      writeFileSync(
        file,
        `Limit                     Soft Limit           Hard Limit           Units\nMax open files            ${soft}                1048576              files\n`,
      )
      return file
    }
    assert.equal(connectionBudget(limits(1024)), 921)
    assert.equal(connectionBudget(limits(64)), 32)
    assert.equal(connectionBudget(limits(1_048_576)), 943_718)
    assert.equal(connectionBudget('/nonexistent/limits'), Infinity)
  })
})

describe('parseAddress', () => {
  const valid: [string, unknown][] = [
    ['', null],
    ['127.0.0.1:6060', { host: '127.0.0.1', port: 6060 }],
    ['localhost:6060', { host: 'localhost', port: 6060 }],
    ['[::1]:6060', { host: '::1', port: 6060 }],
    ['[fe80::1%eth0]:6060', { host: 'fe80::1%eth0', port: 6060 }],
    [':6060', { host: '', port: 6060 }],
    ['127.0.0.1:0', { host: '127.0.0.1', port: 0 }],
    ['debug.internal:65535', { host: 'debug.internal', port: 65535 }],
  ]
  for (const [input, expected] of valid) {
    it(`reads ${JSON.stringify(input)}`, () => {
      const address = parseAddress(input)
      assert.deepEqual(address, expected)
      if (address) assert.ok(Object.isFrozen(address))
    })
  }
  const invalid = [
    '6060',
    '127.0.0.1',
    '127.0.0.1:',
    '::1:6060',
    '[::1]',
    '[::1:6060',
    '[localhost]:6060',
    'host:65536',
    'host:-1',
    'host:6060x',
    'bad host:6060',
    'http://127.0.0.1:6060',
    '127.0.0.1:6060/',
  ]
  for (const input of invalid) {
    it(`refuses ${JSON.stringify(input)}`, () => assert.equal(parseAddress(input), undefined))
  }
  it('says what it takes', () => assert.match(address.expected, /^host:port, like 127\.0\.0\.1:6060/))
})
