#!/usr/bin/env bash
# npm run test:lines [VERSION...]: the whole suite, exactly as `npm test` runs it, on each supported
# Node line, each an exact release fetched from the npm registry (test/fetch-node.sh): 22 and 24 in
# maintenance, and 26, the newest LTS, at the release the image ships (the Dockerfile's
# NODE_VERSION). package.json's engines names the same lines. Bump a version here when its line
# releases; the image's comes from the Dockerfile. Last, Node 20 must refuse to start the service.
set -euo pipefail
cd "$(dirname "$0")/.."

image=$(sed -n 's/^ARG NODE_VERSION=//p' Dockerfile)
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(22.23.5 24.22.3 "$image")
# The command npm test runs, run here without npm, whose scripts would put the node package's
# binary first on PATH.
test=$(node -p 'require("./package.json").scripts.test')

for version in "${versions[@]}"; do
  node=$(bash test/fetch-node.sh "$version")
  echo "test:lines: npm test's command on node $("$node" --version) ($node)"
  PATH="$(dirname "$node"):$PATH" bash -c "$test"
done

# A line past end of life refuses to start, saying which lines it supports, rather than exit 0 silently.
old=$(bash test/fetch-node.sh 20.20.2)
npm run build --silent
if out=$("$old" dist/cmd/server/main.js 2>&1); then
  echo "test:lines: node 20 started the service (exit 0): $out" >&2
  exit 1
fi
case "$out" in
*'Node 22.18+, 24 or 26'*) echo "test:lines: node 20 refused: $out" ;;
*) echo "test:lines: node 20 failed without naming the supported lines: $out" >&2 && exit 1 ;;
esac
