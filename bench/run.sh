#!/usr/bin/env bash
# `bun run bench [auth|user|chat|gateway ...]`: runs the benchmarks (not tests) against the
# local servers. Each prints its figures, ratios against a baseline measured in the same run,
# and the command that produced them. Sizes are bounded by default; see each script's header.
set -euo pipefail
cd "$(dirname "$0")/.."
LOG_TAG=bench
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
bash scripts/setup.sh
# The gateway bench drives its targets with wrk and compares against nginx and the seed-style
# Express gateway on Node.js (Debian packages).
need_tools wrk:wrk nginx:nginx-light node:nodejs
bash scripts/infra.sh up >/dev/null

suites=("$@")
[[ ${#suites[@]} -gt 0 ]] || suites=(auth user chat notification gateway services)
for suite in "${suites[@]}"; do
  for script in bench/"$suite"/*; do
    case "$script" in
      *.ts) echo "==> bun $script"; bun "$script" ;;
      *.sh) echo "==> bash $script"; bash "$script" ;;
    esac
  done
done
