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

/** Git is what `git` answered in the checkout, or null where git or .git is absent. */
export interface Git {
  commit: string
  commitTime: string
  dirty: boolean
}

/**
 * newBuildInfo combines package.json, the build's environment and git: `VERSION`, `GIT_COMMIT`
 * and `GIT_COMMIT_TIME` win over git (a container build has no .git), and whatever neither knows
 * is null. It throws when `GIT_COMMIT_TIME` is not a date, so a bad build argument fails the build.
 */
export function newBuildInfo(
  pkg: { name: string; version?: string },
  env: Readonly<Record<string, string | undefined>>,
  git: Git | null,
): BuildInfo {
  const commitTime = env.GIT_COMMIT_TIME || git?.commitTime || null
  if (commitTime !== null && Number.isNaN(Date.parse(commitTime))) {
    throw new Error(`GIT_COMMIT_TIME must be a date like 2024-11-05T09:30:00Z, got ${commitTime}`)
  }
  return {
    service: pkg.name,
    version: env.VERSION || pkg.version || null,
    commit: env.GIT_COMMIT || git?.commit || null,
    commitTime: commitTime === null ? null : new Date(commitTime).toISOString(),
    dirty: env.GIT_COMMIT ? null : (git?.dirty ?? null),
  }
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
