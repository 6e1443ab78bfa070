import { readFileSync } from 'node:fs'

/** BuildInfo is what the build knows about itself; unknown values are null, never guessed. */
export interface BuildInfo {
  readonly service: string
  readonly version: string | null
  readonly commit: string | null
  readonly commitTime: string | null // ISO 8601, UTC
  readonly dirty: boolean | null // uncommitted changes at build time
}

/** buildDir is dist/, where build and stamp write build-info.json and openapi.yaml, for dist/ and sources alike. */
export const buildDir = new URL(import.meta.url.endsWith('.ts') ? '../dist/' : '../', import.meta.url)

/** readBuild reads the build facts and the spec from dir, and throws when either is missing. */
export function readBuild(dir: URL): { build: BuildInfo; spec: Buffer } {
  const build = JSON.parse(readFileSync(new URL('build-info.json', dir), 'utf8')) as BuildInfo
  if (typeof build.service !== 'string') throw new Error(`build-info.json in ${dir.pathname} names no service`)
  return { build: Object.freeze(build), spec: readFileSync(new URL('openapi.yaml', dir)) }
}
