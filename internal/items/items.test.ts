// The worked example: items in SQLite through the JSON helpers, typed routes and the dependency
// lifecycle (opened before the port, checked by /ready, closed at shutdown).
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it, type TestContext } from 'node:test'
import { assertProblem, declaredRows, readmeTable, startService } from '../../test/service.ts'
import { addOn as items, itemsVars } from './items.ts'

function startItems(t: TestContext | undefined, env: Record<string, string> = {}) {
  return startService(t, env, { addOns: [items] })
}

function post(url: string, body: unknown) {
  return fetch(`${url}/items`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  })
}

describe('items', () => {
  it('creates, gets, lists and deletes an item', async (t) => {
    const service = await startItems(t)
    const created = await post(service.url, { name: 'Notebook', note: 'A5' })
    assert.equal(created.status, 201)
    const item = (await created.json()) as { id: number; name: string; note: string | null; createdAt: string }
    assert.deepEqual({ ...item, createdAt: '' }, { id: 1, name: 'Notebook', note: 'A5', createdAt: '' })
    assert.ok(Math.abs(Date.parse(item.createdAt) - Date.now()) < 60_000)
    assert.equal(created.headers.get('location'), '/items/1')

    const got = await fetch(`${service.url}/items/1`)
    assert.deepEqual(await got.json(), item)
    assert.equal((await fetch(`${service.url}/items/1`, { method: 'DELETE' })).status, 204)
    await assertProblem(await fetch(`${service.url}/items/1`), 404, /no item 1/)
    await assertProblem(await fetch(`${service.url}/items/1`, { method: 'DELETE' }), 404)
  })

  it('pages through the list, oldest first, with a bounded page size', async (t) => {
    const service = await startItems(t)
    for (const name of ['a', 'b', 'c', 'd', 'e']) assert.equal((await post(service.url, { name })).status, 201)
    const names: string[] = []
    let next: number | null = 0
    let pages = 0
    while (next !== null) {
      const page = (await (await fetch(`${service.url}/items?limit=2&after=${next}`)).json()) as {
        items: { name: string }[]
        next: number | null
      }
      names.push(...page.items.map((i) => i.name))
      next = page.next
      pages++
    }
    assert.deepEqual(names, ['a', 'b', 'c', 'd', 'e'])
    assert.equal(pages, 3)
    const all = (await (await fetch(`${service.url}/items`)).json()) as { items: unknown[]; next: null }
    assert.equal(all.items.length, 5, 'the default page holds 20')
    for (const query of ['limit=0', 'limit=101', 'limit=x', 'after=-1']) {
      const body = await assertProblem(await fetch(`${service.url}/items?${query}`), 400)
      assert.equal((body.errors as { parameter: string }[])[0]?.parameter, query.split('=')[0])
    }
  })

  it('answers 400 naming every field it refuses, 415 for another type and 400 for a bad id', async (t) => {
    const service = await startItems(t)
    const refused = await assertProblem(await post(service.url, { note: 5, colour: 'red' }), 400)
    assert.deepEqual(refused.errors, [
      { pointer: '#/colour', detail: 'is not a field of an item' },
      { pointer: '#/name', detail: 'must be a string of 1 to 200 characters' },
      { pointer: '#/note', detail: 'must be a string of at most 2000 characters' },
    ])
    await assertProblem(await post(service.url, ['Notebook']), 400)
    await assertProblem(await fetch(`${service.url}/items`, { method: 'POST', body: 'name=x' }), 415)
    for (const id of ['abc', '0', '1.5', '99999999999999999']) {
      const bad = await assertProblem(await fetch(`${service.url}/items/${id}`), 400)
      assert.deepEqual(bad.errors, [{ parameter: 'id', detail: 'must be a positive integer' }])
    }
  })

  it('keeps its items in ITEMS_DATABASE across restarts, closing it at shutdown', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'items-'))
    t.after(() => rm(dir, { recursive: true }))
    const env = { ITEMS_DATABASE: join(dir, 'items.db') }
    const first = await startItems(undefined, env)
    assert.equal((await post(first.url, { name: 'kept' })).status, 201)
    assert.equal(await first.stop(), 0)
    assert.ok(first.logs.some((l) => l.msg === 'shutdown hook finished' && l.hook === 'items database'))
    const second = await startItems(t, env)
    assert.equal(((await (await fetch(`${second.url}/items/1`)).json()) as { name: string }).name, 'kept')
    assert.equal((await fetch(`${second.url}/ready`)).status, 200, 'its readiness check passes')
  })

  it('stops the start with exit code 1 and one line naming ITEMS_DATABASE when it cannot open it', async () => {
    await assert.rejects(startItems(undefined, { ITEMS_DATABASE: '/nonexistent/dir/items.db' }), (err: Error) => {
      assert.match(err.message, /run\(\) returned 1 before listening/)
      assert.match(err.message, /"msg":"cannot start items: cannot open ITEMS_DATABASE \/nonexistent\/dir\/items\.db: /)
      return true
    })
  })

  it("holds the README's variable table to the declaration", () => {
    const readme = readFileSync(new URL('README.md', import.meta.url), 'utf8')
    assert.deepEqual(readmeTable(readme, '## Configuration'), declaredRows(itemsVars))
  })
})
