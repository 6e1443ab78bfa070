import { readFileSync } from 'node:fs'

/** BuildInfo is what the build knows about itself; unknown values are null, never guessed. */
export interface BuildInfo {
  readonly service: string
  readonly version: string | null
  /** commit is the git commit hash of the sources. */
  readonly commit: string | null
  /** commitTime is the commit's time, ISO 8601 in UTC. */
  readonly commitTime: string | null
  /** dirty says whether the working tree had uncommitted changes at build time. */
  readonly dirty: boolean | null
}

/**
 * buildDir is where `npm run build` (tsc, then cmd/stamp) writes build-info.json and openapi.yaml:
 * dist/, beside the compiled code. The sources, run directly (npm run dev, npm test), read the same
 * files there, so both ways the service reports the same facts and serves the same spec.
 */
export const buildDir = new URL(import.meta.url.endsWith('.ts') ? '../dist/' : '../', import.meta.url)

/**
 * readBuild reads what the build wrote into dir: the build facts and the spec the service serves.
 * It throws when either is missing or unreadable: the service must not start without them.
 */
export function readBuild(dir: URL): { build: BuildInfo; spec: Buffer } {
  const build = JSON.parse(readFileSync(new URL('build-info.json', dir), 'utf8')) as BuildInfo
  if (typeof build.service !== 'string') throw new Error(`build-info.json in ${dir.pathname} names no service`)
  return { build: Object.freeze(build), spec: readFileSync(new URL('openapi.yaml', dir)) }
}
