#!/usr/bin/env bash
# npm run test:container: builds the project's Dockerfile with a real Docker engine and runs the
# checks in checks.ts (this folder) against the image. No registry is reachable here, so the script
# starts its own engine and builds a stand-in for the official Node base image first:
#   1. installs docker.io and debootstrap from Debian when missing; starts dockerd without a
#      network bridge, its state under $KICKSTART_DOCKER_DIR; stops it on any exit;
#   2. unless the engine already has it (the cache), builds the base image the Dockerfile's FROM
#      names with base.sh: Debian bookworm (debootstrap, minbase) + the Node binary of the pinned
#      version from the npm registry + npm + a `node` user with uid 1000, like the official image;
#   3. builds the Dockerfile unchanged, with build args, and runs checks.ts on the image, from its
#      TypeScript source (the image compiles what it ships, so this needs no dist/);
#   4. prints the image size and how long it all took.
# It needs root. When the engine cannot start it says why and exits non-zero: never a silent pass.
set -euo pipefail
cd "$(dirname "$0")/../.."

started=$SECONDS
state=${KICKSTART_DOCKER_DIR:-/tmp/kickstart-node-docker}
image=kickstart-node:container-test
say() { echo "test:container: $*"; }
fail() {
  echo "test:container: FAIL: $*" >&2
  exit 1
}

[ "$(id -u)" = 0 ] || fail "needs root: it runs debootstrap and starts dockerd"
# checks.ts runs from its source, which needs Node's type stripping (22.18+); npm scripts put the
# project's pinned Node first on PATH.
node -e 'process.exit(process.features.typescript ? 0 : 1)' 2>/dev/null ||
  fail "node $(node --version 2>/dev/null) on PATH cannot run TypeScript; run it as npm run test:container"

# 1. The engine.
command -v dockerd >/dev/null || fail "dockerd is missing: apt-get install -y docker.io (Debian; .ci/run does)"
command -v debootstrap >/dev/null || fail "debootstrap is missing: apt-get install -y debootstrap (.ci/run does)"

mkdir -p "$state"
export DOCKER_HOST="unix://$state/docker.sock"
if [ -f "$state/dockerd.pid" ] && kill -0 "$(cat "$state/dockerd.pid")" 2>/dev/null; then
  fail "a dockerd from an earlier run still runs (pid $(cat "$state/dockerd.pid")); stop it: kill $(cat "$state/dockerd.pid")"
fi
rm -f "$state/dockerd.pid" "$state/docker.sock"

dockerd_pid=
stop_engine() {
  local code=$?
  if [ -n "$dockerd_pid" ]; then
    docker rm -f kickstart-node-test kickstart-node-test-heap kickstart-node-test-leak >/dev/null 2>&1 || true
    kill "$dockerd_pid" 2>/dev/null || true
    # dockerd stops its containerd and unmounts its layers before it exits; give it a bound.
    for _ in $(seq 100); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$dockerd_pid" 2>/dev/null; then
      echo "test:container: dockerd did not stop within 10s; killing it" >&2
      kill -9 "$dockerd_pid" 2>/dev/null || true
    fi
    # dockerd leaves its network namespace mounted; unmount it so the state folder can be removed.
    umount "$state/exec/netns/default" 2>/dev/null || true
  fi
  exit "$code"
}
trap stop_engine EXIT

# No bridge and no iptables: this machine allows neither, so containers use the host network.
dockerd --bridge=none --iptables=false \
  --data-root "$state/data" --exec-root "$state/exec" \
  --pidfile "$state/dockerd.pid" --host "$DOCKER_HOST" >"$state/dockerd.log" 2>&1 &
dockerd_pid=$!
for _ in $(seq 300); do
  docker info >/dev/null 2>&1 && break
  kill -0 "$dockerd_pid" 2>/dev/null || break
  sleep 0.1
done
if ! docker info >/dev/null 2>&1; then
  tail -n 20 "$state/dockerd.log" >&2 || true
  if kill -0 "$dockerd_pid" 2>/dev/null; then why="did not answer within 30s"; else why="exited"; fi
  fail "the Docker engine $why, so nothing was tested (log above, in full at $state/dockerd.log)"
fi
say "engine $(docker version --format '{{.Server.Version}}') up after $((SECONDS - started))s"

# 2. The stand-in base image.
node_version=$(sed -n 's/^ARG NODE_VERSION=//p' Dockerfile)
base="node:$node_version-bookworm-slim"
[ -n "$node_version" ] || fail "Dockerfile has no ARG NODE_VERSION=..."
grep -q '^FROM node:${NODE_VERSION}-bookworm-slim' Dockerfile || fail "Dockerfile's FROM is not node:\${NODE_VERSION}-bookworm-slim; update this script"
if docker image inspect "$base" >/dev/null 2>&1; then
  say "base $base: cached"
else
  say "base $base: building the stand-in"
  base_started=$SECONDS
  bash test/container/base.sh "$node_version" "$base"
  say "base built in $((SECONDS - base_started))s"
fi

# 3. The project's image, then the checks.
commit=$(git rev-parse HEAD 2>/dev/null || echo 0000000000000000000000000000000000000000)
commit_time=$(git log -1 --format=%cI 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)
# A version of its own each run, so a stale layer cannot make the check pass.
version="0.0.0-container.$(date +%s)"
source=https://example.com/kickstart-node
build_started=$SECONDS
docker build --network host --tag "$image" \
  --build-arg VERSION="$version" --build-arg GIT_COMMIT="$commit" \
  --build-arg GIT_COMMIT_TIME="$commit_time" --build-arg SOURCE="$source" . >"$state/build.log" 2>&1 || {
  tail -n 30 "$state/build.log" >&2
  fail "docker build failed (log above, in full at $state/build.log)"
}
say "image built in $((SECONDS - build_started))s"

IMAGE=$image EXPECT_VERSION=$version EXPECT_COMMIT=$commit \
  EXPECT_COMMIT_TIME=$commit_time EXPECT_SOURCE=$source \
  node --test --test-reporter=spec test/container/checks.ts

# 4. Figures.
size=$(docker image inspect --format '{{.Size}}' "$image")
base_size=$(docker image inspect --format '{{.Size}}' "$base")
say "image size $((size / 1000000)) MB: base $((base_size / 1000000)) MB + this project $(((size - base_size) / 1000)) kB"
say "passed in $((SECONDS - started))s"
