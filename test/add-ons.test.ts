// The add-on list in cmd/server/main.ts: each line is switched on by variables its add-on declares,
// and an add-on that is off is never imported (it costs no start-up time).
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { addOns } from '../cmd/server/main.ts'
import { type AddOnEntry, loadAddOns } from '../internal/addon.ts'
import type { Vars } from '../internal/config.ts'

describe('cmd/server/main.ts add-ons', () => {
  it('are switched on by variables they declare', async () => {
    for (const entry of addOns) {
      const { addOn } = await entry.load()
      const declared = Object.values(addOn.vars as Vars).map((v) => v.name)
      for (const name of entry.on) assert.ok(declared.includes(name), `${addOn.name} does not declare ${name}`)
    }
  })

  it('load only when one of their variables is set, or always when they list none', async () => {
    const loaded: string[] = []
    const entry = (name: string, on: string[]): AddOnEntry => ({
      on,
      load: async () => {
        loaded.push(name)
        return { addOn: { name, vars: {}, start: () => {} } }
      },
    })
    const entries = [entry('a', ['A']), entry('always', []), entry('c', ['C', 'D']), entry('e', ['E'])]
    const started = await loadAddOns(entries, { A: '', D: '1' })
    assert.deepEqual(loaded, ['always', 'c'], 'an empty value counts as unset')
    assert.deepEqual(
      started.map((addOn) => addOn.name),
      ['always', 'c'],
    )
  })
})
