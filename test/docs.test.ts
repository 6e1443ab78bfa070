// The documents say only what is true: every variable the service reads is in exactly one table, the
// core's in README.md and each add-on's in its own README; and every measured figure stands in a
// section that names the command reproducing it.
import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { describe, it } from 'node:test'
import { addOns } from '../cmd/server/main.ts'
import { coreVars, type Vars } from '../internal/config.ts'

const root = new URL('../', import.meta.url)
const read = (path: string) => readFileSync(new URL(path, root), 'utf8')
const addOnFolders = readdirSync(new URL('internal/', root), { withFileTypes: true })
  .filter((entry) => entry.isDirectory())
  .map((entry) => `internal/${entry.name}/README.md`)
const documents = ['README.md', 'BENCHMARKS.md', ...addOnFolders]

/** variableRows returns the variables named at the start of a table row in markdown: | `NAME` | ... */
function variableRows(markdown: string): string[] {
  return [...markdown.matchAll(/^\| `([A-Z][A-Z0-9_]*)` \|/gm)].map((match) => match[1] ?? '')
}

describe('the documents', () => {
  it('list every variable once, in the README of its owner', async () => {
    const owners: [string, Vars][] = [['README.md', coreVars]]
    for (const entry of addOns) {
      const { addOn } = await entry.load()
      owners.push([`internal/${addOn.name}/README.md`, addOn.vars as Vars])
    }
    const expected = new Map(owners.flatMap(([file, vars]) => Object.values(vars).map((v) => [v.name, file])))
    const found = documents.flatMap((file) => variableRows(read(file)).map((name) => [name, file] as const))
    for (const [name, file] of found) {
      assert.equal(expected.get(name), file, `${file} has a row for ${name}, which belongs to ${expected.get(name)}`)
    }
    for (const [name, file] of expected) {
      const rows = found.filter(([found]) => found === name).length
      assert.equal(rows, 1, `${name} has ${rows} rows; exactly one belongs in ${file}`)
    }
  })

  // A measured figure: a number with a unit of time, size, share, ratio, rate or work, in a sentence
  // that says it was measured (a timeout or a threshold is a setting, not a measurement).
  const figure = /(?<![\w.`-])\d[\d,.]*\s?(?:ms|µs|MiB|MB|KiB|GiB|%|×|req\/s|k instructions|instructions)(?![\w`])/
  const measured = /\b(?:measured|measures|took|takes about|median|peak(?:ed)?|throughput|spawn|soak)\b/i
  // What reproduces one: an npm script, or a command run as it is, in backticks or a code block.
  const command = /(?:`|^)(?:npm (?:run [\w:-]+|test|ci|exec|install)|node |bash |valgrind |wrk |docker )/m

  for (const file of documents) {
    it(`${file}: every measured figure comes with the command that reproduces it`, () => {
      const sections = read(file).split(/^(?=#{2,4} )/m)
      for (const section of sections) {
        const prose = section
          .replace(/```[\s\S]*?```/g, '') // code blocks: samples, not figures
          .replace(/`[^`]*`/g, '``') // config values like `10s`
          .split('\n')
          .filter((line) => !/^\| `[A-Z][A-Z0-9_]*` \|/.test(line)) // variable tables: defaults
          .join('\n')
        const sentences = prose.split(/(?<=\.)\s+|\n(?=[-|*])/)
        const found = sentences.map((sentence) => measured.test(sentence) && figure.exec(sentence)).find(Boolean)
        if (!found) continue
        const heading = section.split('\n')[0]
        assert.match(section, command, `${file}, "${heading}": "${found[0]}" with no command beside it`)
      }
    })
  }
})
