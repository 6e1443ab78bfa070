import { readFileSync } from 'node:fs'

/** BuildInfo is what the build knows about itself; unknown values are null, never guessed. */
export interface BuildInfo {
  readonly service: string
  readonly version: string | null
  /** Git commit hash of the sources. */
  readonly commit: string | null
  /** Commit time, ISO 8601 in UTC. */
  readonly commitTime: string | null
  /** Whether the working tree had uncommitted changes at build time. */
  readonly dirty: boolean | null
}

/**
 * buildDir is where `npm run build` (tsc, then cmd/stamp) writes build-info.json and openapi.yaml:
 * dist/, beside the compiled code. The sources, run directly (npm run dev, npm test), read the
 * same files there, so both ways the service reports the same facts and serves the same spec.
 */
export const buildDir = new URL(import.meta.url.endsWith('.ts') ? '../dist/' : '../', import.meta.url)

/**
 * readBuild reads what the build wrote into dir: the build facts and the spec the service serves.
 * It throws when either is missing or malformed: the service must not start with made-up facts or
 * without its contract.
 */
export function readBuild(dir: URL): { build: BuildInfo; spec: Buffer } {
  const file = new URL('build-info.json', dir)
  const build: unknown = JSON.parse(readFileSync(file, 'utf8'))
  if (!isBuildInfo(build)) throw new Error(`${file.pathname} is not valid build info`)
  return { build: Object.freeze(build), spec: readFileSync(new URL('openapi.yaml', dir)) }
}

function isBuildInfo(value: unknown): value is BuildInfo {
  if (typeof value !== 'object' || value === null) return false
  const v = value as Record<string, unknown>
  const stringOrNull = (x: unknown) => x === null || typeof x === 'string'
  return (
    typeof v.service === 'string' &&
    stringOrNull(v.version) &&
    stringOrNull(v.commit) &&
    stringOrNull(v.commitTime) &&
    (v.dirty === null || typeof v.dirty === 'boolean')
  )
}
