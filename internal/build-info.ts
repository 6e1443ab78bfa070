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
 * buildDir is dist/, where `npm run build` and `npm run stamp` write build-info.json and openapi.yaml:
 * the compiled code and the sources, run directly, read the same files.
 */
export const buildDir = new URL(import.meta.url.endsWith('.ts') ? '../dist/' : '../', import.meta.url)

/** readBuild reads the build facts and the spec from dir, and throws when either is missing. */
export function readBuild(dir: URL): { build: BuildInfo; spec: Buffer } {
  const build = JSON.parse(readFileSync(new URL('build-info.json', dir), 'utf8')) as BuildInfo
  if (typeof build.service !== 'string') throw new Error(`build-info.json in ${dir.pathname} names no service`)
  return { build: Object.freeze(build), spec: readFileSync(new URL('openapi.yaml', dir)) }
}
