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

interface Node {
  readonly children: Map<string, Node>
  param?: { name: string; node: Node }
  route?: Route
  names?: string[]
}

const noParams: Params = Object.freeze({})

/**
 * newRouter compiles table and returns its lookup. Static paths are one Map lookup, however many
 * routes there are; a path that no static route matches walks a tree of segments, trying the
 * static child before the parameter at each level. It throws at start-up for a template that is
 * not one (a parameter inside a segment, two names for one parameter).
 */
export function newRouter(table: Routes): (path: string) => Match {
  // A static path's match is made once: a lookup allocates nothing.
  const exact = new Map<string, { route: Route; params: Params }>()
  const root: Node = { children: new Map() }
  for (const [template, methods] of Object.entries(table)) {
    const handlers = new Map<string, Handler>(Object.entries(methods) as [string, Handler][])
    const get = handlers.get('GET')
    if (get !== undefined && !handlers.has('HEAD')) handlers.set('HEAD', get)
    const route: Route = { template, handlers, allow: [...handlers.keys()].join(', ') }
    if (!template.includes('{')) exact.set(template, { route, params: noParams })
    else insert(root, template, route)
  }
  return (path) => {
    const match = exact.get(path)
    if (match !== undefined) return match
    if (root.children.size === 0 && root.param === undefined) return undefined
    const values: string[] = []
    const node = find(root, path.split('/'), 1, values)
    if (node?.route === undefined) return undefined
    const params: Record<string, string> = {}
    for (const [i, name] of (node.names ?? []).entries()) {
      try {
        params[name] = decodeURIComponent(values[i] ?? '')
      } catch {
        return 'malformed'
      }
    }
    return { route: node.route, params }
  }
}

function insert(root: Node, template: string, route: Route) {
  const names: string[] = []
  let node = root
  for (const segment of template.split('/').slice(1)) {
    const name = /^\{(\w+)\}$/.exec(segment)?.[1]
    if (name === undefined) {
      if (segment.includes('{')) throw new Error(`route ${template}: a parameter must be a whole segment`)
      node = getOrAdd(node.children, segment)
      continue
    }
    node.param ??= { name, node: { children: new Map() } }
    if (node.param.name !== name) throw new Error(`route ${template}: {${name}} is also {${node.param.name}}`)
    names.push(name)
    node = node.param.node
  }
  node.route = route
  node.names = names
}

function getOrAdd(children: Map<string, Node>, segment: string): Node {
  let child = children.get(segment)
  if (child === undefined) children.set(segment, (child = { children: new Map() }))
  return child
}

/** find walks segments from i, static children first, collecting parameter values on the way. */
function find(node: Node, segments: string[], i: number, values: string[]): Node | undefined {
  if (i === segments.length) return node.route === undefined ? undefined : node
  const segment = segments[i] ?? ''
  const child = node.children.get(segment)
  const found = child && find(child, segments, i + 1, values)
  if (found !== undefined || node.param === undefined || segment === '') return found
  values.push(segment)
  return find(node.param.node, segments, i + 1, values) ?? void values.pop()
}
