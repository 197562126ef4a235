#!/usr/bin/env bash
# The tools of test/k8s, which runs a real Kubernetes control plane on loopback (no node: pods are
# admitted by the API server, never run).
#
#   bash scripts/k8s-cluster.sh tools     install or reuse everything, print one JSON object of paths:
#                                         {"apiserver", "controllerManager", "etcd", "helm", "openssl", "crds"}
#   bash scripts/k8s-cluster.sh build     only build (or reuse) the two Kubernetes binaries, print their folder
#   bash scripts/k8s-cluster.sh node-build  also build (or reuse) kubelet, kube-scheduler and kube-proxy
#                                         for scripts/k8s-node.sh, print their folder (same module and cache)
#
# kube-apiserver and kube-controller-manager come from the Go module proxy: a wrapper module that
# requires k8s.io/kubernetes and replaces every staging module its go.mod names (k8s.io/api,
# k8s.io/apiserver, ...) with the matching v0.MINOR.PATCH release, then `go build` of the two
# commands (about 6 min cold on 2 cores; -X ...version.gitVersion so the server reports its
# version). Cached in CACHE/kube/VERSION and rebuilt only when the version changes. etcd is Debian's
# etcd-server (3.4 on Debian 12), openssl Debian's; helm is scripts/validate-deploy.sh's (same
# version); "crds" is the folder of the Prometheus-operator CRDs (ServiceMonitor, PrometheusRule)
# of the version deploy/schemas was generated from. test/k8s/cluster.ts starts the processes.
#
# Environment: PARLEY_K8S_VERSION [v1.36.3]  PARLEY_PROMETHEUS_OPERATOR_VERSION [v0.89.0]
#              PARLEY_CACHE_DIR [.cache]  PARLEY_TOOL_TIMEOUT [1800] seconds per build
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd -P)
CACHE=$(mkdir -p "${PARLEY_CACHE_DIR:-$ROOT/.cache}" && cd "${PARLEY_CACHE_DIR:-$ROOT/.cache}" && pwd -P)
K8S_VERSION=${PARLEY_K8S_VERSION:-v1.36.3}
PROMETHEUS_OPERATOR_VERSION=${PARLEY_PROMETHEUS_OPERATOR_VERSION:-v0.89.0}
TOOL_TIMEOUT=${PARLEY_TOOL_TIMEOUT:-1800}
KUBE_BIN=$CACHE/kube/$K8S_VERSION

LOG_TAG=k8s-cluster
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

COMMANDS=(kube-apiserver kube-controller-manager)
# `node-build`: what a node adds (scripts/k8s-node.sh)
if [[ ${1:-} == node-build ]]; then COMMANDS=(kubelet kube-scheduler kube-proxy); fi

built() {
  local c
  for c in "${COMMANDS[@]}"; do
    [[ -x $KUBE_BIN/$c ]] && [[ $("$KUBE_BIN/$c" --version 2>/dev/null) == "Kubernetes $K8S_VERSION" ]] || return 1
  done
}

build() {
  if built; then
    echo "$KUBE_BIN"
    return 0
  fi
  local go src mod staging lock
  go=$(go_bin)
  mkdir -p "$CACHE/kube"
  # Two test processes may ask at once: one builds, the other waits for it.
  exec 9>"$CACHE/kube/build.lock"
  lock=$(command -v flock || true)
  [[ -z $lock ]] || flock 9
  if built; then
    echo "$KUBE_BIN"
    return 0
  fi
  src=$CACHE/kube/src-$K8S_VERSION
  rm -rf "$src"
  mkdir -p "$src"
  # The staging modules kubernetes replaces with its own folders; outside the repository each one
  # is the published v0.MINOR.PATCH of the same release.
  mod=$(cd "$src" && GOFLAGS=-modcacherw "$go" mod download -json "k8s.io/kubernetes@$K8S_VERSION") ||
    die "go mod download k8s.io/kubernetes@$K8S_VERSION failed: $mod"
  mod=$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p' <<<"$mod")
  [[ -f $mod ]] || die "go mod download printed no go.mod for k8s.io/kubernetes@$K8S_VERSION"
  staging=$(sed -n 's#^[[:space:]]*\(k8s\.io/[a-z0-9-]*\) => \./staging/.*#\1#p' "$mod")
  [[ -n $staging ]] || die "no staging replacements in $mod"
  {
    echo "module parley.local/kube"
    echo
    sed -n 's/^go .*/&/p' "$mod"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    local m
    for m in $staging; do
      echo "	$m => $m v0.${K8S_VERSION#v1.}"
    done
    echo ")"
  } >"$src/go.mod"
  mkdir -p "$KUBE_BIN"
  local c ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(cut -d. -f2 <<<"$K8S_VERSION") -X k8s.io/component-base/version.gitTreeState=clean"
  for c in "${COMMANDS[@]}"; do
    [[ $("$KUBE_BIN/$c" --version 2>/dev/null) != "Kubernetes $K8S_VERSION" ]] || continue
    log "building $c $K8S_VERSION from the Go module proxy (cold: ~6 min on 2 cores, up to ${TOOL_TIMEOUT}s)"
    (cd "$src" && GOFLAGS="-mod=mod -modcacherw" GOTOOLCHAIN=auto CGO_ENABLED=0 timeout "$TOOL_TIMEOUT" \
      nice "$go" build -trimpath -tags providerless -ldflags "$ldflags" -o "$KUBE_BIN/$c.tmp" "k8s.io/kubernetes/cmd/$c") ||
      die "go build k8s.io/kubernetes/cmd/$c failed"
    mv "$KUBE_BIN/$c.tmp" "$KUBE_BIN/$c"
  done
  built || die "the built binaries do not report Kubernetes $K8S_VERSION"
  echo "$KUBE_BIN"
}

# The CRD manifests of the Prometheus operator, from its Go module (read-only in the module cache).
crds() {
  local go json dir
  go=$(go_bin)
  json=$(cd "$(mktemp -d)" && "$go" mod download -json "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION") ||
    die "go mod download prometheus-operator@$PROMETHEUS_OPERATOR_VERSION failed: $json"
  dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$json")/example/prometheus-operator-crd
  [[ -f $dir/monitoring.coreos.com_servicemonitors.yaml ]] || die "no CRD manifests in $dir"
  echo "$dir"
}

tools() {
  local bin crd
  need_tools etcd:etcd-server openssl:openssl
  bin=$(build)
  bash "$ROOT/scripts/validate-deploy.sh" --tools-only >&2
  crd=$(crds)
  printf '{"apiserver":"%s","controllerManager":"%s","etcd":"%s","helm":"%s","openssl":"%s","crds":"%s"}\n' \
    "$bin/kube-apiserver" "$bin/kube-controller-manager" "$(command -v etcd)" "$CACHE/bin/helm" \
    "$(command -v openssl)" "$crd"
}

case ${1:-} in
build | node-build) build ;;
tools) tools ;;
*) die "usage: $0 build | node-build | tools" ;;
esac
