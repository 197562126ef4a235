# The one Dockerfile of every Parley service: the service is a build argument. compose
# (docker-compose.yml), skaffold (skaffold.yaml) and `bash scripts/images.sh` build it with the
# SERVICE and PORT of each entry of packages/contracts/src/roster.ts; there are no per-service copies.
#
# Build context: the repository root (the services import packages/*).
#   podman build -f docker/service.Dockerfile --build-arg SERVICE=chat --build-arg PORT=4002 -t parley-chat .
#   podman build -f docker/service.Dockerfile --target dev --build-arg SERVICE=chat --build-arg PORT=4002 .
# Without SERVICE (a folder of services/ with src/index.ts) and a numeric PORT, the dev and build
# stages fail with a message saying so.
#
# Stages: deps (bun install) -> dev (sources + `bun --watch`, for `skaffold dev`), and
# deps -> build (`bun build --compile`) -> runtime, the last stage and so the default target.
#
# The runtime image runs the service as one compiled executable (Bun runtime + bundled code +
# embedded source map): no shell, no node_modules, nothing written to disk, so the root filesystem
# can be mounted read-only. The service handles SIGTERM itself (graceful drain, exit 0) and runs as
# PID 1 without an init. `<image> migrate` applies the migrations in /app/drizzle (the service's
# drizzle/, empty for services without PostgreSQL) and exits; `<image> healthcheck` asks /ready.

# Pinned by exact tag. Where the registry is reachable, append the index digest
# (`@sha256:…`, from `skopeo inspect docker://<image>`) to pin the bytes as well.
ARG BUN_IMAGE=oven/bun:1.3.14-debian
# The executable needs only glibc (ld-linux, libc, libm, libdl, libpthread: checked with ldd).
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
# Required, no defaults (a default would let a build without them silently build some service).
ARG SERVICE
ARG PORT

# ------------------------------------------------------------------------------------- deps
FROM ${BUN_IMAGE} AS deps
WORKDIR /app

# Dependencies first, so the install layer is reused until a manifest or the lockfile changes.
# Every workspace's package.json is needed: the frozen lockfile names them all (a missing or
# extra one fails the install, and scripts/validate-deploy.sh compares this list with the repository).
COPY package.json bun.lock bunfig.toml tsconfig.json ./
# The lockfile's patchedDependencies (applied by bun install).
COPY patches/ patches/
COPY packages/client/package.json packages/client/
COPY packages/common/package.json packages/common/
COPY packages/contracts/package.json packages/contracts/
COPY packages/mail-sink/package.json packages/mail-sink/
COPY packages/testkit/package.json packages/testkit/
COPY services/auth/package.json services/auth/
COPY services/chat/package.json services/chat/
COPY services/gateway/package.json services/gateway/
COPY services/notification/package.json services/notification/
COPY services/user/package.json services/user/
# Production dependencies of all workspaces, and this stage never declares SERVICE: the layer is
# the same for every service, so it is built once and cached for all of them. The executable
# only contains what the service imports, so the extra packages never reach the runtime image.
# Optional secret `ca-certificates`: a CA bundle to trust for the registry (a TLS-inspecting proxy),
# used for this step only and never stored in a layer:  --secret id=ca-certificates,src=<bundle>
RUN --mount=type=cache,target=/var/cache/bun,sharing=locked \
    --mount=type=secret,id=ca-certificates,target=/run/secrets/ca-certificates.crt,required=false \
    if [ -s /run/secrets/ca-certificates.crt ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/ca-certificates.crt; fi \
 && BUN_INSTALL_CACHE_DIR=/var/cache/bun bun install --frozen-lockfile --production

# -------------------------------------------------------------------------------------- dev
# `skaffold dev` builds this stage (target: dev): the sources run with `bun --watch`, and skaffold
# syncs edited .ts files into /app/<same path>, so the files belong to the user that runs it.
FROM deps AS dev
ARG SERVICE
ARG PORT
COPY --chown=65532:65532 packages/ packages/
COPY --chown=65532:65532 services/${SERVICE}/ services/${SERVICE}/
# (an empty SERVICE would have copied every service above and run from /app/services)
RUN case "${PORT}" in '' | *[!0-9]*) false ;; esac && test -n "${SERVICE}" && test -f "services/${SERVICE}/src/index.ts" \
      || { echo "build with --build-arg SERVICE=<folder in services/> --build-arg PORT=<port>" >&2; exit 1; }
USER 65532:65532
# the working directory names the service (ENTRYPOINT cannot use a build argument); drizzle/ is
# found next to the sources; no transpiler cache (nowhere writable to keep it)
WORKDIR /app/services/${SERVICE}
ENV NODE_ENV=development \
    HOST=0.0.0.0 \
    PORT=${PORT} \
    BUN_RUNTIME_TRANSPILER_CACHE_PATH=0
EXPOSE ${PORT}
ENTRYPOINT ["bun", "--watch", "src/index.ts"]

# ------------------------------------------------------------------------------------ build
FROM deps AS build
ARG SERVICE
ARG PORT
COPY packages/ packages/
COPY services/${SERVICE}/ services/${SERVICE}/

# --compile       one executable: Bun runtime + bundle (glibc, x64; needs AVX2 like the Bun it embeds)
# --sourcemap     embedded (zstd) in the executable: stack traces point at the .ts sources (the .map
#                 file bun also writes beside it is not needed)
# --bytecode      precompiled bytecode, faster start; needs --format=esm (index.ts uses top-level await)
# --no-compile-autoload-*  a stray .env or bunfig.toml in the working directory changes nothing
# services/<name>/scripts/image-files.sh, if any, adds the files the executable loads from beside
#                 itself (chat: sharp's native addon and libvips, which no executable can embed)
RUN case "${PORT}" in '' | *[!0-9]*) false ;; esac && test -n "${SERVICE}" && test -f "services/${SERVICE}/src/index.ts" \
      || { echo "build with --build-arg SERVICE=<folder in services/> --build-arg PORT=<port>" >&2; exit 1; } \
 && bun build --compile --minify --sourcemap --bytecode --format=esm --target=bun-linux-x64 \
      --no-compile-autoload-dotenv --no-compile-autoload-bunfig \
      "services/${SERVICE}/src/index.ts" --outfile /out/server \
 && rm -f /out/*.map \
 && if [ -f "services/${SERVICE}/scripts/image-files.sh" ]; then sh "services/${SERVICE}/scripts/image-files.sh" /out; fi \
 && mkdir -p /out/drizzle \
 && if [ -d "services/${SERVICE}/drizzle" ]; then cp -R "services/${SERVICE}/drizzle/." /out/drizzle/; fi

# ---------------------------------------------------------------------------------- runtime
# The last stage, so the default target: the production image.
FROM ${RUNTIME_IMAGE} AS runtime
ARG SERVICE
ARG PORT

# distroless "nonroot"; numeric so that no passwd lookup is needed and runAsNonRoot can verify it.
USER 65532:65532
WORKDIR /app
# Root-owned and read-only to the service user: it cannot replace its own binary or migrations.
COPY --from=build /out/ /app/

# MIGRATIONS_DIR: outside the image the services find drizzle/ next to their sources; a compiled
# executable has no source folder, so it is named here.
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=${PORT} \
    MIGRATIONS_DIR=/app/drizzle
EXPOSE ${PORT}
ENTRYPOINT ["/app/server"]

# Last, so that a new revision only changes this metadata, not the layers above.
ARG VERSION=0.0.0-dev
ARG REVISION=unknown
ARG RUNTIME_IMAGE
LABEL org.opencontainers.image.title="parley-${SERVICE}" \
      org.opencontainers.image.description="Parley ${SERVICE} service (compiled Bun executable)" \
      org.opencontainers.image.vendor="Parley" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="${RUNTIME_IMAGE}"
