import type { AddOn } from '../addon.ts'
import type { Vars } from '../config.ts'
import { type FieldError, readJSON, sendJSON, sendProblem } from '../json.ts'
import { typedRoutes } from '../router.ts'
import type { NewItem, Operations } from './api-types.ts'
import { openStore, type Store } from './store.ts'

/** itemsVars declares the example's one variable. */
export const itemsVars = {
  itemsDatabase: {
    name: 'ITEMS_DATABASE',
    default: ':memory:',
    parse: (raw: string) => raw,
    expected: 'a file path or :memory:',
  },
} satisfies Vars

/**
 * items is the worked example (README.md in this folder): a small resource in an embedded SQLite
 * database, opened before the port opens, checked by /ready, closed at shutdown.
 */
export const addOn: AddOn<typeof itemsVars> = {
  name: 'items',
  vars: itemsVars,
  start: async ({ config, core, lifecycle }) => {
    const store = await openStore(config.itemsDatabase).catch((err: unknown) => {
      throw new Error(`cannot open ITEMS_DATABASE ${config.itemsDatabase}: ${(err as Error).message}`)
    })
    lifecycle.onShutdown('items database', () => store.close())
    lifecycle.addCheck('items database', () => store.ping())
    return { routes: newItemRoutes(store, core.maxBodyBytes) }
  },
}

const maxPage = 100
const defaultPage = 20

/** newItemRoutes lists the example's routes, typed by the operations its openapi.yaml documents. */
export function newItemRoutes(store: Store, maxBodyBytes: number) {
  return typedRoutes<Operations>()({
    '/items': {
      POST: async (req, res) => {
        const body = await readJSON(req, res, maxBodyBytes)
        if (body === undefined) return
        const parsed = parseNewItem(body)
        if (!parsed.ok) return sendProblem(res, 400, 'The item is not valid.', undefined, { errors: parsed.errors })
        const item = store.create(parsed.value.name, parsed.value.note ?? null)
        sendJSON(res, 201, item, { location: `/items/${item.id}` })
      },
      GET: (req, res) => {
        const query = new URLSearchParams(req.url?.split('?')[1])
        const errors: FieldError[] = []
        const limit = parseInteger(query.get('limit'), defaultPage, 1, maxPage, 'limit', errors)
        const after = parseInteger(query.get('after'), 0, 0, Number.MAX_SAFE_INTEGER, 'after', errors)
        if (errors.length > 0) return sendProblem(res, 400, 'The query is not valid.', undefined, { errors })
        // One more than the page shows whether another page follows.
        const page = store.list(after, limit + 1)
        const more = page.length > limit
        if (more) page.pop()
        sendJSON(res, 200, { items: page, next: more ? (page.at(-1)?.id ?? null) : null })
      },
    },
    '/items/{id}': {
      GET: (_req, res, params) => {
        const id = parseId(params.id)
        if (id === undefined) return sendProblem(res, 400, 'The id is not valid.', undefined, { errors: idError })
        const item = store.get(id)
        if (item === undefined) return sendProblem(res, 404, `There is no item ${id}.`)
        sendJSON(res, 200, item)
      },
      DELETE: (_req, res, params) => {
        const id = parseId(params.id)
        if (id === undefined) return sendProblem(res, 400, 'The id is not valid.', undefined, { errors: idError })
        if (!store.delete(id)) return sendProblem(res, 404, `There is no item ${id}.`)
        res.writeHead(204).end()
      },
    },
  })
}

type Parsed<T> = { ok: true; value: T } | { ok: false; errors: FieldError[] }

/** parseNewItem checks a request body against NewItem, naming every field it refuses. */
export function parseNewItem(body: unknown): Parsed<NewItem> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    return { ok: false, errors: [{ pointer: '#', detail: 'must be an object' }] }
  }
  const { name, note, ...rest } = body as Record<string, unknown>
  const errors: FieldError[] = Object.keys(rest).map((key) => ({
    pointer: `#/${key}`,
    detail: 'is not a field of an item',
  }))
  if (typeof name !== 'string' || name.length < 1 || name.length > 200) {
    errors.push({ pointer: '#/name', detail: 'must be a string of 1 to 200 characters' })
  }
  if (note !== undefined && (typeof note !== 'string' || note.length > 2000)) {
    errors.push({ pointer: '#/note', detail: 'must be a string of at most 2000 characters' })
  }
  if (errors.length > 0) return { ok: false, errors }
  return { ok: true, value: { name: name as string, ...(note === undefined ? {} : { note: note as string }) } }
}

const idError: FieldError[] = [{ parameter: 'id', detail: 'must be a positive integer' }]

function parseId(raw: string): number | undefined {
  const id = /^[1-9]\d{0,15}$/.test(raw) ? Number(raw) : Number.NaN
  return Number.isSafeInteger(id) ? id : undefined
}

function parseInteger(
  raw: string | null,
  fallback: number,
  min: number,
  max: number,
  name: string,
  errors: FieldError[],
): number {
  if (raw === null) return fallback
  const value = /^\d{1,16}$/.test(raw) ? Number(raw) : Number.NaN
  if (value >= min && value <= max) return value
  errors.push({ parameter: name, detail: `must be an integer from ${min} to ${max}` })
  return fallback
}
