import type { IncomingMessage } from 'node:http'
import type { TrackedResponse } from './response.ts'

/** Method is an HTTP method a route can answer; GET routes answer HEAD too. */
export type Method = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE'

/** Params are a route's path parameters, percent-decoded: `/items/{id}` gives `{ id }`. */
export type Params<Template extends string = string> = { readonly [K in ParamNames<Template>]: string }

type ParamNames<T extends string> = T extends `${string}{${infer Name}}${infer Rest}` ? Name | ParamNames<Rest> : never

declare const documented: unique symbol

/**
 * Response is a TrackedResponse to which sendJSON and sendProblem send only the answers R, the
 * bodies by status a spec documents (api-types.ts), allows. R is for the compiler only.
 */
export type Response<R = unknown> = TrackedResponse & { readonly [documented]?: R }

/** Handler answers one request; a throw or rejection becomes a logged 500, so expected outcomes are responses. */
export type Handler<P = Params, R = unknown> = (
  req: IncomingMessage,
  res: Response<R>,
  params: P,
) => void | Promise<void>

type MethodHandlers<Template extends string = string> = Partial<Record<Method, Handler<Params<Template>>>>

/** Routes maps openapi.yaml's path templates ('/items/{id}'; a parameter is a whole segment) to handlers. */
export type Routes = { readonly [template: string]: MethodHandlers }

/** routes types each handler's params after its template: `'/items/{id}': { GET: (req, res, { id }) => … }`. */
export function routes<const T extends string>(table: { [K in T]: MethodHandlers<K> }): Routes {
  return table as Routes
}

/**
 * typedRoutes returns routes() for the Operations a spec documents (api-types.ts): a handler may send
 * only the answers its operation documents, and a route or method the spec lacks does not compile.
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

type Route = { template: string; handlers: Map<string, Handler>; allow: string }

// URL characters only: nothing a log line would need to escape.
const templatePattern = /^(?:\/(?:[\w\-.~!$&'()*+,;=:@%]*|\{\w+\}))+$/
const noParams: Params = Object.freeze({})

/**
 * newRouter returns table's lookup: a path's route and decoded parameters, 'malformed' for one that
 * does not decode, or undefined. A static path is one Map lookup; others try the templates, a static
 * segment before a parameter. It throws for an invalid template and for two matching the same paths.
 */
export function newRouter(table: Routes): (path: string) => { route: Route; params: Params } | 'malformed' | undefined {
  const exact = new Map<string, { route: Route; params: Params }>()
  const parameterised: { route: Route; segments: string[]; shape: string }[] = []
  const shapes = new Map<string, string>()
  for (const [template, methods] of Object.entries(table)) {
    // A parameter sorts after every URL character, so the static segment comes first.
    const shape = template.replace(/\{\w+\}/g, '\uffff')
    if (!templatePattern.test(template)) throw new Error(`route ${template}: not an OpenAPI path template`)
    if (shapes.has(shape)) throw new Error(`route ${template}: matches the same paths as ${shapes.get(shape)}`)
    shapes.set(shape, template)
    const handlers = new Map(Object.entries(methods) as [string, Handler][])
    if (handlers.has('GET') && !handlers.has('HEAD')) handlers.set('HEAD', handlers.get('GET')!)
    const route = { template, handlers, allow: [...handlers.keys()].join(', ') }
    if (shape === template) exact.set(template, { route, params: noParams })
    else parameterised.push({ route, segments: template.split('/'), shape })
  }
  parameterised.sort((a, b) => (a.shape < b.shape ? -1 : 1))
  return (path: string) => {
    const match = exact.get(path)
    if (match !== undefined || parameterised.length === 0) return match
    const segments = path.split('/')
    for (const { route, segments: template } of parameterised) {
      if (template.length !== segments.length) continue
      const params = matchParams(template, segments)
      if (params === null) return 'malformed'
      if (params !== undefined) return { route, params }
    }
    return undefined
  }
}

/** matchParams returns the decoded parameters of segments if they match template; null if one does not decode. */
function matchParams(template: string[], segments: string[]): Params | null | undefined {
  const params: Record<string, string> = {}
  for (const [i, segment] of template.entries()) {
    const value = segments[i] ?? ''
    if (segment.charCodeAt(0) !== 123 /* { */) {
      if (segment !== value) return undefined
    } else if (value === '') return undefined
    else params[segment.slice(1, -1)] = value
  }
  try {
    for (const name in params) params[name] = decodeURIComponent(params[name]!)
  } catch {
    return null
  }
  return params
}
