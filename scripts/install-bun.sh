#!/usr/bin/env bash
# Installs the Bun version pinned in package.json ("packageManager": "bun@x.y.z") when the
# `bun` on PATH is missing or different. Idempotent: a matching Bun returns at once.
# Bun comes from its npm package (the binary ships inside it); npm comes from Debian when absent.
set -euo pipefail
cd "$(dirname "$0")/.."

pinned=$(sed -n 's/.*"packageManager": *"bun@\([^"]*\)".*/\1/p' package.json)
[[ -n "$pinned" ]] || { echo "install-bun: no bun@<version> packageManager in package.json" >&2; exit 1; }

if [[ "$(bun --version 2>/dev/null || true)" == "$pinned" ]]; then
  exit 0
fi

sudo_cmd=()
[[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)

if ! command -v npm >/dev/null; then
  if [[ $(id -u) -ne 0 ]] && ! command -v sudo >/dev/null; then
    echo "install-bun: npm is missing; as root run: apt-get install -y nodejs npm && npm i -g bun@$pinned" >&2
    exit 1
  fi
  echo "install-bun: installing nodejs + npm (Debian packages)"
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends nodejs npm ca-certificates >/dev/null
fi

echo "install-bun: installing bun@$pinned"
"${sudo_cmd[@]}" npm install --global --no-fund --no-audit --loglevel=error "bun@$pinned"
hash -r
installed=$(bun --version 2>/dev/null || true)
if [[ "$installed" != "$pinned" ]]; then
  echo "install-bun: expected bun $pinned on PATH, found '${installed:-none}' ($(command -v bun || echo 'not on PATH'))" >&2
  exit 1
fi
