#!/usr/bin/env bash
# Every check CI runs, on a bare Debian machine or a warm one (`bun run test` runs this too).
# Installs what is missing (scripts/setup.sh), brings up the real servers, typechecks, lints,
# runs every test file against those servers and prints the JUnit-based summary.
set -uo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh || exit 1
bash scripts/infra.sh up || exit 1

status=0
step() {
  local name=$1
  shift
  echo "==> $name"
  local started=$SECONDS
  if "$@"; then
    echo "==> $name ok ($((SECONDS - started)) s)"
  else
    echo "==> $name FAILED"
    status=1
  fi
}

step typecheck bun run typecheck
step lint bun run lint

mkdir -p reports
rm -f reports/junit.xml
echo "==> bun test"
started=$SECONDS
folders=(packages services test)
TEST_LOG_LEVEL=${TEST_LOG_LEVEL:-silent} bun test --timeout 30000 --reporter=junit --reporter-outfile=reports/junit.xml "${folders[@]}" || status=1
echo "==> bun test finished ($((SECONDS - started)) s)"

if [[ -f reports/junit.xml ]]; then
  bun scripts/junit-summary.ts reports/junit.xml "${folders[@]}" || status=1
else
  echo "tests: 0 passed, 1 failed (no JUnit report written)"
  status=1
fi
exit $status
