#!/usr/bin/env bash
# Prints the path of a Jaeger v1 all-in-one binary (collector with an OTLP receiver, in-memory
# storage, query API), building it once from the Go module proxy into .cache/bin. Used by
# test/observability/tracing.test.ts; idempotent: rebuilt only when the version changes.
#
#   bash scripts/jaeger.sh            # path of the binary on stdout, progress on stderr
#
# Environment:
#   PARLEY_JAEGER_VERSION [1.76.0]   PARLEY_JAEGER_TIMEOUT [2400] (seconds for the download + build)
#   PARLEY_GO [go in PATH or /usr/local/go/bin/go] (scripts/lib.sh go_bin)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=$ROOT/.cache
LOG_TAG=jaeger
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

VERSION=${PARLEY_JAEGER_VERSION:-1.76.0}
TIMEOUT=${PARLEY_JAEGER_TIMEOUT:-2400}
BIN=$CACHE/bin/jaeger-all-in-one
STAMP=$BIN.version

built() { [[ -x $BIN && -f $STAMP && $(cat "$STAMP") == "$VERSION" ]]; }

if built; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$CACHE/bin" "$CACHE/logs"
# One build at a time (two test runs starting together): the second waits, then finds it built.
exec 9>"$BIN.lock"
flock 9
if built; then
  echo "$BIN"
  exit 0
fi
buildlog=$CACHE/logs/jaeger-build.log
go=$(go_bin)
log "building Jaeger all-in-one v$VERSION into $BIN with $go (first time only, a few minutes; log: $buildlog)"
# From the module source (go mod download of the exact version), like FerretDB in infra.sh:
# the proxy serves that even where it refuses the version list `go install` asks for.
src=$(go_module_dir "github.com/jaegertracing/jaeger@v$VERSION")
ldflags="-s -w -X github.com/jaegertracing/jaeger/internal/version.latestVersion=v$VERSION"
(cd "$src" && GOFLAGS=-mod=mod GOTOOLCHAIN=auto timeout "$TIMEOUT" "$go" build -trimpath \
  -ldflags "$ldflags" -o "$BIN.tmp" ./cmd/all-in-one) >>"$buildlog" 2>&1 || {
  tail -n 30 "$buildlog" >&2
  die "building Jaeger all-in-one v$VERSION failed"
}
mv "$BIN.tmp" "$BIN"
echo "$VERSION" >"$STAMP"
"$BIN" version >/dev/null 2>&1 || die "the Jaeger binary $BIN does not run"
echo "$BIN"
