#!/usr/bin/env bash
# `bun run dev`: installs what is missing, brings up the real servers, applies migrations
# and runs all five services with watch reload in one prefixed log stream (Ctrl-C stops all).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-bun.sh
bun install --frozen-lockfile
bash scripts/infra.sh up
exec bun scripts/dev.ts "$@"
