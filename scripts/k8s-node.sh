#!/usr/bin/env bash
# A real Kubernetes node for test/k8s: the chart's pods run, on top of test/k8s/cluster.ts's
# control plane (etcd, kube-apiserver, kube-controller-manager on loopback).
#
#   bash scripts/k8s-node.sh tools   install or reuse everything a node needs, print one JSON object of paths
#   bash scripts/k8s-node.sh run     tools, then test/k8s/node-run.ts: control plane + node, `helm install`
#                                    with the local images, all pods Ready, `helm test`, one register +
#                                    read-profile request through the gateway Service, teardown
#   bash scripts/k8s-node.sh clean   remove what a killed run left on the host (see test/k8s/node.ts)
#
# The node: containerd, runc and the CNI plugins from Debian; kubelet, kube-scheduler and kube-proxy
# (nftables mode) built by scripts/k8s-cluster.sh node-build from the same wrapper module; CoreDNS
# from the Go module proxy, a main of our own with only the plugins it needs (bind, ready, errors,
# cache, kubernetes), running on the host. Nothing is pulled from a registry: the five service
# images are scripts/images.sh's podman builds, the pause image is a static C program built here,
# the `helm test` image is localhost/parley-bun-base plus Debian's curl. Each is `podman save`d once
# per image ID into CACHE/k8s-node/images and imported into the run's own containerd.
#
# One node per network namespace at a time (test/k8s/node.ts holds a lock): the bridge and
# kube-proxy's nftables tables are per network namespace.
#
# Environment: PARLEY_IMAGE_TAG [dev]  PARLEY_COREDNS_VERSION [v1.15.0]  PARLEY_CACHE_DIR [.cache]
#              PARLEY_TOOL_TIMEOUT [1800] seconds per build
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd -P)
CACHE=$(mkdir -p "${PARLEY_CACHE_DIR:-$ROOT/.cache}" && cd "${PARLEY_CACHE_DIR:-$ROOT/.cache}" && pwd -P)
TAG=${PARLEY_IMAGE_TAG:-dev}
COREDNS_VERSION=${PARLEY_COREDNS_VERSION:-v1.15.0}
TOOL_TIMEOUT=${PARLEY_TOOL_TIMEOUT:-1800}
NODE_CACHE=$CACHE/k8s-node

LOG_TAG=k8s-node
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

# podman as scripts/images.sh runs it: runc, and the limits of this shell (root here lacks
# CAP_SYS_RESOURCE, so runc cannot raise them)
pm() { podman --runtime runc "$@"; }
ulimit_args() {
  local nproc pid_max
  nproc=$(ulimit -Hu)
  pid_max=$(cat /proc/sys/kernel/pid_max 2>/dev/null || echo 32768)
  if [[ $nproc == unlimited ]] || ((nproc > pid_max)); then nproc=$pid_max; fi
  echo "--ulimit=nproc=$nproc:$nproc"
  [[ $(ulimit -Hn) == unlimited ]] || echo "--ulimit=nofile=$(ulimit -Hn):$(ulimit -Hn)"
}

# CoreDNS with only the plugins a cluster DNS needs here; cached per version
coredns() {
  local dir=$NODE_CACHE/coredns-$COREDNS_VERSION go
  if [[ -x $dir/coredns ]] && "$dir/coredns" -version 2>/dev/null | grep "CoreDNS-${COREDNS_VERSION#v}" >/dev/null; then
    echo "$dir/coredns"
    return 0
  fi
  go=$(go_bin)
  mkdir -p "$dir/src"
  cat >"$dir/src/main.go" <<'EOF'
// CoreDNS with the plugins of test/k8s's cluster DNS only (the full build pulls every cloud SDK).
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
)

// The order CoreDNS's plugin.cfg gives these plugins.
func init() { dnsserver.Directives = []string{"bind", "ready", "errors", "cache", "kubernetes"} }

func main() { coremain.Run() }
EOF
  printf 'module parley.local/coredns\n\nrequire github.com/coredns/coredns %s\n' "$COREDNS_VERSION" >"$dir/src/go.mod"
  log "building CoreDNS $COREDNS_VERSION from the Go module proxy (cold: a few minutes, up to ${TOOL_TIMEOUT}s)"
  # -mod=mod: the build adds exactly the requirements it needs (`go mod tidy` would also fetch
  # every test dependency, minutes more)
  (cd "$dir/src" && GOFLAGS="-mod=mod -modcacherw" GOTOOLCHAIN=auto CGO_ENABLED=0 timeout "$TOOL_TIMEOUT" \
    nice "$go" build -trimpath -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" \
    -o "$dir/coredns.tmp" .) || die "go build CoreDNS $COREDNS_VERSION failed"
  mv "$dir/coredns.tmp" "$dir/coredns"
  echo "$dir/coredns"
}

# The sandbox's process: a static pause (sleeps until a signal; reaps the pod's zombies).
pause_image() {
  local image=localhost/parley-pause:3.10 dir=$NODE_CACHE/pause
  pm image exists "$image" && {
    echo "$image"
    return 0
  }
  mkdir -p "$dir"
  cat >"$dir/pause.c" <<'EOF'
/* The pod sandbox's process: holds the namespaces, reaps orphans, exits on SIGINT/SIGTERM. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig) { _exit(128 + sig); }
static void reap(int sig) { (void)sig; while (waitpid(-1, NULL, WNOHANG) > 0) {} }

int main(void) {
  struct sigaction stop = {.sa_handler = quit}, child = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
  if (sigaction(SIGINT, &stop, NULL) < 0 || sigaction(SIGTERM, &stop, NULL) < 0 || sigaction(SIGCHLD, &child, NULL) < 0)
    return 1;
  for (;;) pause();
}
EOF
  gcc -static -Os -s -o "$dir/pause" "$dir/pause.c" || die "gcc -static pause.c failed"
  printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$dir/Containerfile"
  # shellcheck disable=SC2046
  pm build -q $(ulimit_args) -t "$image" "$dir" >/dev/null || die "podman build $image failed"
  echo "$image"
}

# The `helm test` pod's image: sh and curl (the chart's default is curlimages/curl from Docker Hub).
curl_image() {
  local base image=localhost/parley-curl:bookworm dir=$NODE_CACHE/curl
  pm image exists "$image" && {
    echo "$image"
    return 0
  }
  base=localhost/parley-bun-base:$(sed -n 's/.*"packageManager": *"bun@\([0-9][0-9.]*\)".*/\1/p' package.json)
  pm image exists "$base" || bash "$ROOT/scripts/images.sh" base >&2
  mkdir -p "$dir"
  printf 'FROM %s\nRUN apt-get update -qq && apt-get install -y -qq --no-install-recommends curl && rm -rf /var/lib/apt/lists/*\nUSER 65532:65532\n' \
    "$base" >"$dir/Containerfile"
  log "building $image ($base + Debian's curl)"
  # shellcheck disable=SC2046
  timeout "$TOOL_TIMEOUT" podman --runtime runc build -q --network host $(ulimit_args) -t "$image" "$dir" >/dev/null ||
    die "podman build $image failed"
  echo "$image"
}

# save IMAGE : a docker-archive of IMAGE for `ctr images import`, redone when the image ID changes
save() {
  local image=$1 id file
  id=$(pm image inspect --format '{{.Id}}' "$image") || die "no image $image (bash scripts/images.sh build)"
  file=$NODE_CACHE/images/$(tr '/:' '__' <<<"$image").tar
  if [[ ! -f $file || $(cat "$file.id" 2>/dev/null) != "$id" ]]; then
    mkdir -p "$NODE_CACHE/images"
    pm save -q --format docker-archive -o "$file.tmp" "$image" >/dev/null || die "podman save $image failed"
    mv "$file.tmp" "$file"
    echo "$id" >"$file.id"
  fi
  echo "$file"
}

tools() {
  local kube dns services=() s images=() cluster
  need_tools containerd:containerd runc:runc nft:nftables ip:iproute2 psql:postgresql-client gcc:gcc podman:podman
  [[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] ||
    apt_install containernetworking-plugins
  [[ -f /usr/lib/x86_64-linux-gnu/libc.a || -f /usr/lib/aarch64-linux-gnu/libc.a ]] || apt_install libc6-dev
  cluster=$(bash "$ROOT/scripts/k8s-cluster.sh" tools)
  kube=$(bash "$ROOT/scripts/k8s-cluster.sh" node-build)
  dns=$(coredns)
  mapfile -t services < <(bun -e "import { ROSTER } from '$ROOT/packages/contracts/src/roster.ts'; for (const s of ROSTER) console.log(s.name)")
  ((${#services[@]} > 0)) || die "no services in packages/contracts/src/roster.ts"
  for s in "${services[@]}"; do
    pm image exists "localhost/parley-$s:$TAG" || {
      log "no image localhost/parley-$s:$TAG: bash scripts/images.sh build"
      PARLEY_IMAGE_TAG=$TAG bash "$ROOT/scripts/images.sh" build >&2
    }
    images+=("\"$(save "localhost/parley-$s:$TAG")\"")
  done
  local pause curl
  pause=$(pause_image)
  curl=$(curl_image)
  images+=("\"$(save "$pause")\"" "\"$(save "$curl")\"")
  printf '{"cluster":%s,"kubelet":"%s","scheduler":"%s","proxy":"%s","coredns":"%s","containerd":"%s","ctr":"%s","cniBin":"%s","nft":"%s","ip":"%s","psql":"%s","pauseImage":"%s","curlImage":"%s","imageTag":"%s","archives":[%s]}\n' \
    "$cluster" "$kube/kubelet" "$kube/kube-scheduler" "$kube/kube-proxy" "$dns" "$(command -v containerd)" \
    "$(command -v ctr)" /usr/lib/cni "$(command -v nft)" "$(command -v ip)" "$(command -v psql)" "$pause" "$curl" "$TAG" \
    "$(
      IFS=,
      echo "${images[*]}"
    )"
}

case ${1:-} in
tools) tools ;;
run) exec bun "$ROOT/test/k8s/node-run.ts" ;;
clean) exec bun "$ROOT/test/k8s/node-run.ts" --clean ;;
*) die "usage: $0 tools | run | clean" ;;
esac
