#!/usr/bin/env bash
# The whole stack on this machine: installs what is missing (scripts/setup.sh), brings up the real
# servers (scripts/infra.sh), applies migrations and runs all five services with watch reload in
# one prefixed log stream (Ctrl-C stops all). `bun run dev` runs this too.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
bash scripts/infra.sh up
exec bun scripts/dev.ts "$@"
