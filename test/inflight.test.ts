import assert from 'node:assert/strict'
import { it } from 'node:test'
import { newInflight } from '../internal/inflight.ts'
import type { TrackedResponse } from '../internal/response.ts'

function fakeResponse(name: string): TrackedResponse {
  return { name, prevInflight: undefined, nextInflight: undefined } as unknown as TrackedResponse
}

it('newInflight adds, removes from anywhere, counts and iterates newest first', () => {
  const inflight = newInflight()
  const [a, b, c, d] = ['a', 'b', 'c', 'd'].map(fakeResponse) as [
    TrackedResponse,
    TrackedResponse,
    TrackedResponse,
    TrackedResponse,
  ]
  for (const res of [a, b, c, d]) inflight.add(res)
  assert.equal(inflight.size, 4)
  assert.deepEqual([...inflight], [d, c, b, a])
  inflight.delete(c) // middle
  inflight.delete(d) // head
  inflight.delete(a) // tail
  assert.deepEqual([...inflight], [b])
  inflight.delete(a) // twice: ignored
  inflight.delete(fakeResponse('never added'))
  assert.equal(inflight.size, 1)
  inflight.delete(b)
  assert.equal(inflight.size, 0)
  assert.deepEqual([...inflight], [])
  inflight.add(a)
  assert.deepEqual([...inflight], [a], 'a removed response can come back')
})
