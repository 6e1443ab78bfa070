#!/usr/bin/env bash
# npm run test:lines [VERSION...]: the whole suite, exactly as `npm test` runs it, on each supported
# Node line, each an exact release fetched from the npm registry (test/fetch-node.sh): 22 and 24 in
# maintenance, and 26, the newest LTS, at the release the image ships (the Dockerfile's
# NODE_VERSION). package.json's engines names the same lines. Bump a version here when its line
# releases; the image's comes from the Dockerfile.
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
