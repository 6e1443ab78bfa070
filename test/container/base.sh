#!/usr/bin/env bash
# base.sh VERSION TAG builds a local stand-in for the official node:VERSION-bookworm-slim image and
# tags it TAG, for run.sh in this folder on machines that reach no container registry.
# Like the original (github.com/nodejs/docker-node, bookworm-slim): Debian bookworm without docs,
# man pages or apt lists, plus libatomic1 (Node 26 links it); node and npm in /usr/local; a `node`
# user and group with id 1000; an entrypoint that runs its arguments with exec, so CMD's process is
# PID 1. It expects DOCKER_HOST to point at a running engine.
set -euo pipefail
cd "$(dirname "$0")/../.."

version=${1:?usage: base.sh NODE_VERSION TAG}
tag=${2:?usage: base.sh NODE_VERSION TAG}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"

# The official image installs libatomic1 too: Node 26's binary needs libatomic.so.1 to start.
debootstrap --variant=minbase --include=libatomic1 bookworm "$rootfs" >"$work/debootstrap.log" 2>&1 || {
  tail -n 20 "$work/debootstrap.log" >&2
  echo "base.sh: debootstrap failed" >&2
  exit 1
}
rm -rf "$rootfs"/usr/share/{doc,man,info,locale}/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*

cp "$(bash test/fetch-node.sh "$version")" "$rootfs/usr/local/bin/node"
npm pack --silent --pack-destination "$work" npm@11 >/dev/null
mkdir -p "$rootfs/usr/local/lib/node_modules/npm"
tar -xzf "$work"/npm-*.tgz -C "$rootfs/usr/local/lib/node_modules/npm" --strip-components=1
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/usr/local/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/usr/local/bin/npx"

chroot "$rootfs" groupadd --gid 1000 node
chroot "$rootfs" useradd --uid 1000 --gid node --shell /bin/bash --create-home node

# The official entrypoint's rule: a first argument that is an option or not a command goes to node.
cat >"$rootfs/usr/local/bin/docker-entrypoint.sh" <<'SCRIPT'
#!/bin/sh
set -e
if [ "${1#-}" != "$1" ] || [ -z "$(command -v "$1")" ]; then set -- node "$@"; fi
exec "$@"
SCRIPT
chmod 755 "$rootfs/usr/local/bin/docker-entrypoint.sh"

changes=(--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
  --change "ENV NODE_VERSION=$version"
  --change 'ENTRYPOINT ["docker-entrypoint.sh"]'
  --change 'CMD ["node"]')
# A machine whose Node trusts an extra certificate authority (a TLS-inspecting proxy in front of
# the npm registry) needs the same trust inside the build, or npm ci fails. Only the stand-in
# gets it; the Dockerfile stays as it is.
if [ -n "${NODE_EXTRA_CA_CERTS:-}" ] && [ -f "$NODE_EXTRA_CA_CERTS" ]; then
  cp "$NODE_EXTRA_CA_CERTS" "$rootfs/usr/local/share/extra-ca-certificates.pem"
  changes+=(--change 'ENV NODE_EXTRA_CA_CERTS=/usr/local/share/extra-ca-certificates.pem')
fi

# Tagged only once node and npm run in it: run.sh takes an image with this tag as a finished one.
candidate="$tag-unchecked"
tar -C "$rootfs" -c . | docker import "${changes[@]}" - "$candidate" >/dev/null
docker run --rm --network none "$candidate" node -e 'process.exit(process.version === `v${process.env.NODE_VERSION}` ? 0 : 1)'
docker run --rm --network none "$candidate" npm --version >/dev/null
docker tag "$candidate" "$tag"
docker rmi "$candidate" >/dev/null
