import type { IncomingMessage } from 'node:http'
import type { TrackedResponse } from './response.ts'

/** Method is an HTTP method a route can answer; GET routes answer HEAD too. */
export type Method = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE'

/** Params are a route's path parameters, percent-decoded: `/items/{id}` gives `{ id }`. */
export type Params<Template extends string = string> = { readonly [K in ParamNames<Template>]: string }

type ParamNames<T extends string> = T extends `${string}{${infer Name}}${infer Rest}` ? Name | ParamNames<Rest> : never

declare const documented: unique symbol

/**
 * Response is the response of an operation whose answers a spec documents (R: the JSON body of
 * each status, from a generated api-types.ts): sendJSON and sendProblem accept only those. At run
 * time it is the TrackedResponse; the rest is for the compiler.
 */
export type Response<R = unknown> = TrackedResponse & { readonly [documented]?: R }

/**
 * Handler answers one request. Anything it throws or rejects with becomes a logged 500, so expected
 * outcomes (not found, invalid input) should be responses, not exceptions.
 */
export type Handler<P = Params, R = unknown> = (
  req: IncomingMessage,
  res: Response<R>,
  params: P,
) => void | Promise<void>

/** MethodHandlers maps the methods of one route to their handlers. */
export type MethodHandlers<Template extends string = string> = Partial<Record<Method, Handler<Params<Template>>>>

/**
 * Routes maps OpenAPI path templates, the strings openapi.yaml uses ('/items/{id}'), to their
 * handlers. A parameter is a whole path segment; a static segment wins over a parameter.
 */
export type Routes = { readonly [template: string]: MethodHandlers }

/** routes types each handler's params after its template: `'/items/{id}': { GET: (req, res, { id }) => … }`. */
export function routes<const T extends string>(table: { [K in T]: MethodHandlers<K> }): Routes {
  return table as Routes
}

/**
 * typedRoutes returns routes() for the operations a spec documents (Operations, generated in
 * api-types.ts): each handler may send only the answers its operation documents, and a route or
 * method the spec lacks does not compile.
 */
export function typedRoutes<Operations>() {
  return <const T extends string>(table: {
    [K in T]: {
      [M in Method]?: `${M} ${K}` extends keyof Operations
        ? Handler<Params<K>, ResponsesOf<Operations[`${M} ${K}`]>>
        : never
    }
  }): Routes => table as Routes
}

type ResponsesOf<Operation> = Operation extends { responses: infer R } ? R : never

/** Route is one compiled entry of the table. */
export interface Route {
  readonly template: string
  readonly handlers: ReadonlyMap<string, Handler>
  /** allow is the value of the Allow header: the methods, HEAD included where GET is. */
  readonly allow: string
}

/** Match is what a path resolves to: the route and its parameters, or 'malformed' for bad %-encoding. */
export type Match = { route: Route; params: Params } | 'malformed' | undefined

// Segments of URL characters, a parameter a whole segment: nothing a log line would need to escape.
const templatePattern = /^(?:\/(?:[\w\-.~!$&'()*+,;=:@%]*|\{\w+\}))+$/
const noParams: Params = Object.freeze({})

/**
 * newRouter compiles table and returns its lookup. A static path is one Map lookup, however many
 * routes there are, and its match is made once; other paths try the parameterised templates, the
 * most specific first: where two differ first, the static segment. It throws for a template that
 * is not one, and for two that match the same paths.
 */
export function newRouter(table: Routes): (path: string) => Match {
  const exact = new Map<string, { route: Route; params: Params }>()
  const parameterised: { route: Route; segments: string[] }[] = []
  const shapes = new Map<string, string>()
  for (const [template, methods] of Object.entries(table)) {
    if (!templatePattern.test(template))
      throw new Error(`route ${template}: not an OpenAPI path template of whole-segment parameters`)
    const shape = template.replace(/\{\w+\}/g, '{}')
    if (shapes.has(shape)) throw new Error(`route ${template}: matches the same paths as ${shapes.get(shape)}`)
    shapes.set(shape, template)
    const handlers = new Map(Object.entries(methods) as [string, Handler][])
    const get = handlers.get('GET')
    if (get !== undefined && !handlers.has('HEAD')) handlers.set('HEAD', get)
    const route = { template, handlers, allow: [...handlers.keys()].join(', ') }
    if (template.includes('{')) parameterised.push({ route, segments: template.split('/') })
    else exact.set(template, { route, params: noParams })
  }
  parameterised.sort((a, b) => {
    const i = a.segments.findIndex((segment, i) => isParam(segment) !== isParam(b.segments[i] ?? ''))
    return i === -1 ? 0 : isParam(a.segments[i] ?? '') ? 1 : -1
  })
  return (path) => {
    const match = exact.get(path)
    if (match !== undefined || parameterised.length === 0) return match
    const segments = path.split('/')
    const found = parameterised.find((p) => p.segments.length === segments.length && matches(p.segments, segments))
    return found && withParams(found.route, found.segments, segments)
  }
}

function isParam(segment: string): boolean {
  return segment.charCodeAt(0) === 123 /* { */
}

function matches(template: string[], segments: string[]): boolean {
  return template.every((segment, i) => (isParam(segment) ? segments[i] !== '' : segment === segments[i]))
}

/** withParams returns the match of route with its parameters percent-decoded, or 'malformed'. */
function withParams(route: Route, template: string[], segments: string[]): Match {
  const params: Record<string, string> = {}
  try {
    for (const [i, segment] of template.entries()) {
      if (isParam(segment)) params[segment.slice(1, -1)] = decodeURIComponent(segments[i] ?? '')
    }
  } catch {
    return 'malformed'
  }
  return { route, params }
}
