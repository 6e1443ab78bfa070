#!/usr/bin/env bash
# npm run test:node24: the whole of `npm test` (build included) on the Node release the image
# ships, the version the Dockerfile pins, so the image never runs a Node the tests did not.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^ARG NODE_VERSION=//p' Dockerfile)
node=$(bash test/fetch-node.sh "$version")
export PATH="$(dirname "$node"):$PATH"
echo "test:node24: npm test on node $(node --version) ($node)"
npm test
