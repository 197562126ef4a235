#!/usr/bin/env bash
# Validates everything that deploys Parley, offline, and prints a summary; exits non-zero if any
# check fails.
#
#   bash scripts/validate-deploy.sh
#   bash scripts/validate-deploy.sh --tools-only   install the tools below and stop (scripts/k8s-cluster.sh)
#
# This script installs the tools and runs scripts/validate-deploy.py, the program that holds the
# checks (see its docstring; test/deploy.test.ts runs this script):
#   roster     packages/contracts/src/roster.ts <-> services/ folders; docker/service.Dockerfile takes
#              SERVICE/PORT as build arguments and copies exactly the workspace manifests.
#   chart      `helm lint --strict` and `helm template` of charts/parley with several value sets
#              (defaults, charts/parley/ci/*-values.yaml, k8s/dev/values.yaml, every service
#              autoscaled, every service on one replica); every render validated by `kubeconform
#              -strict` against the Kubernetes OpenAPI schema and the Prometheus-operator CRD
#              schemas; every pod checked against Pod Security "restricted" plus the project's
#              rules (explicit hardened securityContext, requests and limits, no service-account
#              token, probes on the ops port, ports from the roster, termination grace above the
#              shutdown delay + grace); chart invariants (no replicas under an HPA, PDBs only over
#              more than one pod, every pod under a NetworkPolicy, ServiceMonitors on the ops port,
#              no ops port open to every source, each stored service migrated exactly once,
#              migration Jobs failing before helm's default timeout and removed by a TTL).
#   schema     every charts/parley/ci/invalid/*.yaml (typos, wrong types) MUST fail values.schema.json.
#   rules      `promtool check rules` + `promtool test rules` on charts/parley/rules (and on the
#              rules as the chart's PrometheusRule renders them); `promtool check config` on
#              deploy/prometheus/prometheus.yml.
#   dashboards charts/parley/dashboards/*.json: valid JSON, unique uids, data source variable,
#              every query parses as PromQL and names only metrics the services export.
#   compose    docker-compose.yml against the Compose Specification schema, plus the project's
#              rules (published ports, the one Dockerfile with each service's build args,
#              migrations before services, files that exist).
#   skaffold   skaffold.yaml against the schema of its apiVersion, plus the roster wiring (artifact
#              order and buildArgs, profile patches landing on the right artifact, chart images);
#              then skaffold itself, offline, with and without the dev profile: `skaffold diagnose
#              --yaml-only` and `skaffold render --offline` (every service gets its image).
#
# Tools (installed when missing, idempotent, bounded by PARLEY_TOOL_TIMEOUT):
#   .cache/bin/helm         helm.sh/helm/v3 (go install; falls back to the module source + go build)
#   .cache/bin/kubeconform  github.com/yannh/kubeconform
#   .cache/bin/skaffold     github.com/GoogleContainerTools/skaffold/v2 (the proxy refuses its version
#                           list, so it is built from the module source)
#   Go                      scripts/lib.sh go_bin (Debian's golang-go fetches a newer toolchain)
#   promtool                Debian package `prometheus`
#   python3 with PyYAML + jsonschema: Debian packages (as root), else a venv in .cache/venv-deploy
#
# Environment (defaults in brackets):
#   PARLEY_SCHEMAS_DIR [deploy/schemas]   offline schemas (kubernetes-*-swagger.json, crds/, skaffold/,
#                                         compose/; see deploy/schemas/README.md)
#   PARLEY_KUBE_VERSION [1.36.0]  PARLEY_HELM_VERSION [v3.22.0]  PARLEY_KUBECONFORM_VERSION [v0.8.0]
#   PARLEY_SKAFFOLD_VERSION [v2.16.1]
#   PARLEY_CACHE_DIR [.cache]  PARLEY_TOOL_TIMEOUT [1200] seconds per tool build
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd -P)
CACHE=$(mkdir -p "${PARLEY_CACHE_DIR:-$ROOT/.cache}" && cd "${PARLEY_CACHE_DIR:-$ROOT/.cache}" && pwd -P)
BIN=$CACHE/bin
SCHEMAS=${PARLEY_SCHEMAS_DIR:-$ROOT/deploy/schemas}
KUBE_VERSION=${PARLEY_KUBE_VERSION:-1.36.0}
HELM_VERSION=${PARLEY_HELM_VERSION:-v3.22.0}
KUBECONFORM_VERSION=${PARLEY_KUBECONFORM_VERSION:-v0.8.0}
SKAFFOLD_VERSION=${PARLEY_SKAFFOLD_VERSION:-v2.16.1}
TOOL_TIMEOUT=${PARLEY_TOOL_TIMEOUT:-1200}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export PATH=$BIN:$PATH

LOG_TAG=validate-deploy
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

# ------------------------------------------------------------------------------------- tools

# install_go_tool NAME MODULE VERSION PACKAGE LDFLAGS
install_go_tool() {
  local name=$1 module=$2 version=$3 pkg=$4 ldflags=$5 go src
  go=$(go_bin)
  mkdir -p "$BIN"
  log "installing $name $version into $BIN (go install, up to ${TOOL_TIMEOUT}s)"
  if GOBIN=$BIN GOTOOLCHAIN=auto timeout "$TOOL_TIMEOUT" "$go" install -trimpath -ldflags "$ldflags" \
    "$module/$pkg@$version" >"$WORK/install-$name.log" 2>&1; then
    return 0
  fi
  # `go install m@v` can fail where the proxy refuses the @v/list lookup; the module of an exact
  # version still downloads, and building inside it resolves dependencies by exact version.
  log "go install failed ($(tail -n 1 "$WORK/install-$name.log" 2>/dev/null)); building from the module source"
  src=$(go_module_dir "$module@$version")
  (cd "$src" && GOFLAGS=-mod=mod GOTOOLCHAIN=auto timeout "$TOOL_TIMEOUT" "$go" build -trimpath -ldflags "$ldflags" \
    -o "$BIN/$name" "./$pkg")
}

ensure_helm() {
  if [[ -x $BIN/helm ]] && [[ $("$BIN/helm" version --template '{{.Version}}' 2>/dev/null) == "$HELM_VERSION" ]]; then
    return 0
  fi
  local ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  # Like helm's Makefile: the default Kubernetes version of `helm template` follows client-go.
  local client_go
  client_go=$(sed -n 's#^[[:space:]]*k8s.io/client-go v0\.\([0-9]*\)\..*#\1#p' \
    "$(go_module_dir "helm.sh/helm/v3@$HELM_VERSION")/go.mod" | head -n 1) || true
  if [[ -n $client_go ]]; then
    local pkg
    for pkg in pkg/chartutil pkg/lint/rules; do
      ldflags+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$client_go"
    done
  fi
  install_go_tool helm helm.sh/helm/v3 "$HELM_VERSION" cmd/helm "$ldflags"
  [[ $("$BIN/helm" version --template '{{.Version}}') == "$HELM_VERSION" ]] || die "installed helm is not $HELM_VERSION"
}

ensure_kubeconform() {
  if [[ -x $BIN/kubeconform ]] && [[ $("$BIN/kubeconform" -v 2>/dev/null) == "$KUBECONFORM_VERSION" ]]; then
    return 0
  fi
  install_go_tool kubeconform github.com/yannh/kubeconform "$KUBECONFORM_VERSION" cmd/kubeconform \
    "-s -w -X main.version=$KUBECONFORM_VERSION"
  [[ $("$BIN/kubeconform" -v) == "$KUBECONFORM_VERSION" ]] || die "installed kubeconform is not $KUBECONFORM_VERSION"
}

# skaffold reads the schemas up to the one it ships: v2.16.1 (the newest the Go module proxy
# serves here) reads skaffold/v4beta13, which skaffold.yaml uses.
ensure_skaffold() {
  if [[ -x $BIN/skaffold ]] && [[ $("$BIN/skaffold" version 2>/dev/null) == "$SKAFFOLD_VERSION" ]]; then
    return 0
  fi
  install_go_tool skaffold github.com/GoogleContainerTools/skaffold/v2 "$SKAFFOLD_VERSION" cmd/skaffold \
    "-s -w -X github.com/GoogleContainerTools/skaffold/v2/pkg/skaffold/version.version=$SKAFFOLD_VERSION"
  [[ $("$BIN/skaffold" version) == "$SKAFFOLD_VERSION" ]] || die "installed skaffold is not $SKAFFOLD_VERSION"
}

PYTHON=python3
ensure_python() {
  need_tools python3:python3
  if python3 -c 'import yaml, jsonschema' 2>/dev/null; then
    return 0
  fi
  if is_root && command -v apt-get >/dev/null; then
    apt_install python3-yaml python3-jsonschema
    return 0
  fi
  local venv=$CACHE/venv-deploy
  if ! "$venv/bin/python" -c 'import yaml, jsonschema' 2>/dev/null; then
    log "installing PyYAML and jsonschema into $venv"
    python3 -m venv "$venv"
    timeout "$TOOL_TIMEOUT" "$venv/bin/pip" install --quiet --disable-pip-version-check 'PyYAML==6.0.2' 'jsonschema==4.23.0'
  fi
  PYTHON=$venv/bin/python
}

[[ -d $SCHEMAS ]] || die "offline schemas not found in $SCHEMAS (set PARLEY_SCHEMAS_DIR)"
shopt -s nullglob
swaggers=("$SCHEMAS"/kubernetes-*-swagger.json)
shopt -u nullglob
((${#swaggers[@]} > 0)) || die "no kubernetes-*-swagger.json in $SCHEMAS"
command -v bun >/dev/null || die "bun is not in PATH (scripts/setup.sh installs it); it reads the roster"
need_tools promtool:prometheus
ensure_helm
ensure_kubeconform
ensure_skaffold
[[ ${1:-} != --tools-only ]] || exit 0
ensure_python
HELM=$BIN/helm
KUBECONFORM=$BIN/kubeconform
log "helm $("$HELM" version --template '{{.Version}}'), kubeconform $("$KUBECONFORM" -v), $(promtool --version 2>&1 | head -n 1)"

# ------------------------------------------------------------------------------ the checks
# The services come from the roster; the program reads them as JSON.
ROSTER_JSON=$WORK/roster.json
bun -e "import { ROSTER } from '$ROOT/packages/contracts/src/roster.ts'; console.log(JSON.stringify(ROSTER))" >"$ROSTER_JSON" ||
  die "could not read packages/contracts/src/roster.ts with bun"
"$PYTHON" "$ROOT/scripts/validate-deploy.py" --helm "$HELM" --kubeconform "$KUBECONFORM" --promtool "$(command -v promtool)" \
  --skaffold "$BIN/skaffold" \
  --roster "$ROSTER_JSON" --schemas "$SCHEMAS" --cache "$CACHE" --kube-version "$KUBE_VERSION"
