# syntax=docker/dockerfile:1
# Build stage: compile TypeScript with the dev dependencies.
FROM node:24.11.1-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci
COPY tsconfig.json openapi.yaml ./
COPY cmd cmd
COPY internal internal
COPY test test
ARG VERSION= GIT_COMMIT= GIT_COMMIT_TIME=
RUN VERSION=$VERSION GIT_COMMIT=$GIT_COMMIT GIT_COMMIT_TIME=$GIT_COMMIT_TIME npm run build

# Runtime stage: production dependencies and dist/ only.
FROM node:24.11.1-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev && npm cache clean --force
COPY --from=build /app/dist dist
USER node
EXPOSE 8080
CMD ["node", "dist/cmd/server/main.js"]
