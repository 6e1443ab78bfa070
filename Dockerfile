# The Node 24 LTS image every stage starts from, pinned to one release so builds repeat.
# To bump it: change NODE_VERSION, then run `npm run test:container` and `npm run test:node24`
# (both read the version from this line). README.md "Container" says more.
ARG NODE_VERSION=24.21.0

# build: compile TypeScript with the dev dependencies. test/ is left out of the context
# (.dockerignore), so tsc compiles only what ships.
FROM node:${NODE_VERSION}-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json openapi.yaml ./
COPY cmd cmd
COPY internal internal
# .git stays out of the context, so the stamp step reads the build facts from these build args,
# which RUN sees as environment variables (internal/build-info.ts); an unset one shows as null.
ARG VERSION GIT_COMMIT GIT_COMMIT_TIME
RUN npm run build \
 && rm -r dist/cmd/stamp \
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
# Node 24 lets V8's young generation grow to 128 MiB under load: RSS then sits near 240 MiB, close
# to a 256 MiB memory limit. Capped at 16 MiB semi-spaces it stays near 115 MiB for under 1% more
# CPU per request (BENCHMARKS.md). Node 20 already stays there on its own.
ENV NODE_OPTIONS=--max-semi-space-size=16
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
