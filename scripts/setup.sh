#!/usr/bin/env bash
# What every entry point needs before it can run anything else, installed when missing and quick
# when present (idempotent): the few Debian tools the scripts use, the Bun version pinned in
# package.json ("packageManager": "bun@x.y.z") and the workspace dependencies.
#
#   bash scripts/setup.sh        (scripts/dev.sh and scripts/test.sh run it first)
#
# Bun comes from its npm package (the binary ships inside it), through npm and its configured
# registry; npm and Node.js come from Debian when absent.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LOG_TAG=setup
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

# git: the tests list the repository's files (a clone has it, an unpacked archive may not);
# prometheus: test/observability runs a real one over the dashboards and rules;
# chromium: test/e2e/swagger-ui.test.ts opens the docs page in it (headless)
need_tools curl:curl update-ca-certificates:ca-certificates git:git prometheus:prometheus chromium:chromium

pinned=$(sed -n 's/.*"packageManager": *"bun@\([^"]*\)".*/\1/p' package.json)
[[ -n $pinned ]] || die "no bun@<version> packageManager in package.json"

if [[ "$(bun --version 2>/dev/null || true)" != "$pinned" ]]; then
  need_tools npm:npm
  log "installing bun@$pinned (npm install --global)"
  sudo_cmd=()
  is_root || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" npm install --global --no-fund --no-audit --loglevel=error "bun@$pinned" </dev/null
  hash -r
  installed=$(bun --version 2>/dev/null || true)
  [[ $installed == "$pinned" ]] ||
    die "expected bun $pinned on PATH, found '${installed:-none}' ($(command -v bun || echo 'not on PATH'))"
fi

# A no-op when node_modules matches the lockfile.
bun install --frozen-lockfile --silent </dev/null

# schemathesis (test/e2e/schemathesis.test.ts fuzzes the gateway's OpenAPI document with it), pinned,
# in a venv under .cache through pip and its configured index; Debian splits venv support out of
# python3 (python3-venv), so a bare Debian 12 gets both.
SCHEMATHESIS_VERSION=4.32.5
schemathesis_venv=.cache/schemathesis
if [[ "$("$schemathesis_venv/bin/st" --version 2>/dev/null || true)" != *"version $SCHEMATHESIS_VERSION" ]]; then
  need_tools python3:python3
  python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
  log "installing schemathesis==$SCHEMATHESIS_VERSION into $schemathesis_venv"
  rm -rf "$schemathesis_venv"
  python3 -m venv "$schemathesis_venv"
  "$schemathesis_venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" </dev/null
fi
