#!/usr/bin/env bash
# Parley service images: build them with podman and prove that each one starts, answers
# /health and stops cleanly on SIGTERM.
#
#   bash scripts/images.sh            build + smoke (default)
#   bash scripts/images.sh build      make the base images, build every service image
#   bash scripts/images.sh smoke      run every image: GET /health until 200, SIGTERM, exit 0 within the limit
#   bash scripts/images.sh base       only make (or reuse) the two local base images
#
# Every image is docker/service.Dockerfile built with --build-arg SERVICE=<name> PORT=<port> of its
# entry in packages/contracts/src/roster.ts (read with bun). `build` also proves that the
# Dockerfile refuses to build, for the dev and the default target, when SERVICE is missing.
# (scripts/validate-deploy.sh checks that the Dockerfile copies exactly the workspace manifests.)
#
# Nothing is pulled from a container registry: this machine reaches only the Debian, npm, Go and
# PyPI package registries. So the base images are made here, once, and reused:
#   localhost/parley-bun-base:<bun version>   Debian minbase (debootstrap) + the pinned Bun: BUN_IMAGE
#   localhost/parley-runtime-base:<suite>     distroless-style: glibc, libgcc/libstdc++, tzdata,
#                                              base-files, passwd with nonroot (65532), no shell: RUNTIME_IMAGE
# Where a registry is reachable, set PARLEY_BUN_IMAGE / PARLEY_RUNTIME_IMAGE to '-' to build from the
# Dockerfile defaults (oven/bun, gcr.io/distroless/cc-debian12:nonroot) instead.
#
# Environment (defaults in brackets):
#   PARLEY_SERVICES [every service of the roster, in its order]   PARLEY_IMAGE_TAG [dev]
#   PARLEY_BUN_IMAGE / PARLEY_RUNTIME_IMAGE [the local base images above; '-' = Dockerfile default]
#   PARLEY_REBUILD_BASE [0] 1 = make the base images again (after a Debian security update, say)
#   PARLEY_KEEP_OLD_IMAGES [0] 1 = keep the untagged images earlier builds leave (else pruned after a build)
#   PARLEY_DEBIAN_SUITE [bookworm]   PARLEY_DEBIAN_MIRROR [first one in the apt sources for the suite]
#   PARLEY_BUN_BIN [bun in PATH if it is the version in package.json's packageManager, else from npm]
#   PARLEY_PODMAN_STORAGE [default storage; 'vfs' = a vfs store under .cache/podman, for sandboxes
#                          where overlay mounts fail]
#   PARLEY_BUILD_TIMEOUT [1800] seconds per image build   PARLEY_HEALTH_TIMEOUT [20] seconds
#   PARLEY_STOP_LIMIT_MS [2000] longest accepted time from SIGTERM to exit
#   PARLEY_SMOKE_INFRA [none] none = every dependency URL points at a closed port (/health must still
#                       answer); local = `scripts/infra.sh up`, then the real servers on their usual ports
#   PARLEY_SMOKE_ENV [] extra "NAME=value NAME=value" passed to every smoke container
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd -P)
CACHE=$(mkdir -p "${PARLEY_CACHE_DIR:-$ROOT/.cache}" && cd "${PARLEY_CACHE_DIR:-$ROOT/.cache}" && pwd -P)
IMG_CACHE=$CACHE/images

DOCKERFILE=docker/service.Dockerfile
TAG=${PARLEY_IMAGE_TAG:-dev}
SUITE=${PARLEY_DEBIAN_SUITE:-bookworm}
BUILD_TIMEOUT=${PARLEY_BUILD_TIMEOUT:-1800}
HEALTH_TIMEOUT=${PARLEY_HEALTH_TIMEOUT:-20}
STOP_LIMIT_MS=${PARLEY_STOP_LIMIT_MS:-2000}

# "packageManager": "bun@1.3.14" is the one place the Bun version is pinned.
BUN_VERSION=$(sed -n 's/.*"packageManager": *"bun@\([0-9][0-9.]*\)".*/\1/p' package.json)
[[ -n $BUN_VERSION ]] || {
  echo "[images] error: no \"packageManager\": \"bun@<version>\" in package.json" >&2
  exit 1
}
BUN_BASE=localhost/parley-bun-base:$BUN_VERSION
RUNTIME_BASE=localhost/parley-runtime-base:$SUITE
OWN_LABEL=dev.parley.images=1
BUN_IMAGE=${PARLEY_BUN_IMAGE:-$BUN_BASE}
RUNTIME_IMAGE=${PARLEY_RUNTIME_IMAGE:-$RUNTIME_BASE}

# --------------------------------------------------------------------------------------------- helpers

LOG_TAG=images
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
now_ms() { echo $(($(date +%s%N) / 1000000)); }
image_ref() { echo "localhost/parley-$1:$TAG"; }

# podman always with runc (the runtime installed here) and, if asked, a private vfs store.
pm() { podman --runtime runc "${PODMAN_STORAGE_ARGS[@]}" "$@"; }
PODMAN_STORAGE_ARGS=()
setup_storage() {
  setup_ulimits
  [[ ${PARLEY_PODMAN_STORAGE:-} == vfs ]] || return 0
  mkdir -p "$CACHE/podman/storage" "$CACHE/podman/run"
  PODMAN_STORAGE_ARGS=(--storage-driver vfs --root "$CACHE/podman/storage" --runroot "$CACHE/podman/run")
  log "podman storage: vfs in $CACHE/podman"
}

# Limits for `podman run` and build containers. Rootful podman asks runc for nofile=1048576 and
# nproc=4194304; where root lacks CAP_SYS_RESOURCE (this sandbox) runc cannot raise them and every
# container fails with "error setting rlimit". So containers get the limits this shell has, nproc
# capped at kernel.pid_max (podman lowers its own nproc to that).
ULIMIT_ARGS=()
setup_ulimits() {
  local nofile nproc pid_max
  nofile=$(ulimit -Hn)
  nproc=$(ulimit -Hu)
  pid_max=$(cat /proc/sys/kernel/pid_max 2>/dev/null || echo 32768)
  if [[ $nproc == unlimited ]] || ((nproc > pid_max)); then nproc=$pid_max; fi
  ULIMIT_ARGS=(--ulimit "nproc=$nproc:$nproc")
  [[ $nofile == unlimited ]] || ULIMIT_ARGS+=(--ulimit "nofile=$nofile:$nofile")
}

# --------------------------------------------------------------------------------- local base images

# ensure_rootfs : a debootstrap minbase tree of SUITE in .cache/images (made once; the marker file
# beside it says the debootstrap finished)
ROOTFS=$IMG_CACHE/rootfs-$SUITE
ROOTFS_FRESH=0 # made by this run already (PARLEY_REBUILD_BASE=1 must not debootstrap twice)
ensure_rootfs() {
  if [[ -f $ROOTFS.ok ]] && [[ ${PARLEY_REBUILD_BASE:-0} != 1 || $ROOTFS_FRESH == 1 ]]; then return 0; fi
  need_tools debootstrap:debootstrap
  is_root || die "debootstrap needs root"
  local mirror
  mirror=$(debian_mirror "$SUITE")
  log "debootstrap --variant=minbase $SUITE from $mirror (about a minute)"
  rm -rf "$ROOTFS" "$ROOTFS.tmp" "$ROOTFS.ok"
  mkdir -p "$IMG_CACHE"
  if ! timeout 1200 debootstrap --variant=minbase "$SUITE" "$ROOTFS.tmp" "$mirror" >"$IMG_CACHE/debootstrap.log" 2>&1; then
    tail -n 20 "$IMG_CACHE/debootstrap.log" >&2
    die "debootstrap failed (log: $IMG_CACHE/debootstrap.log)"
  fi
  # The host's resolver and name are bind-mounted by the container runtime, never baked in.
  rm -f "$ROOTFS.tmp/etc/resolv.conf" "$ROOTFS.tmp/etc/hostname"
  mv "$ROOTFS.tmp" "$ROOTFS"
  touch "$ROOTFS.ok"
  ROOTFS_FRESH=1
}

# bun_binary : path of a glibc x64 Bun of exactly BUN_VERSION: PARLEY_BUN_BIN, the one in PATH, or
# @oven/bun-linux-x64 from the npm registry (unpacked into .cache, the host's Bun is left alone)
bun_binary() {
  local candidate dir
  for candidate in "${PARLEY_BUN_BIN:-}" "$(command -v bun || true)"; do
    [[ -n $candidate ]] || continue
    candidate=$(readlink -f "$candidate")
    # (grep without -q: with pipefail, -q can stop reading early and fail ldd with SIGPIPE)
    if [[ $("$candidate" --version 2>/dev/null) == "$BUN_VERSION" ]] && ldd "$candidate" 2>/dev/null | grep 'libc\.so\.6' >/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  dir=$IMG_CACHE/bun-$BUN_VERSION
  if [[ ! -x $dir/package/bin/bun ]]; then
    need_tools npm:npm
    log "fetching @oven/bun-linux-x64@$BUN_VERSION from the npm registry"
    rm -rf "$dir" && mkdir -p "$dir"
    (cd "$dir" && timeout 600 npm pack --silent "@oven/bun-linux-x64@$BUN_VERSION" >/dev/null && tar -xzf ./*.tgz && rm -f ./*.tgz)
  fi
  [[ $("$dir/package/bin/bun" --version) == "$BUN_VERSION" ]] || die "$dir/package/bin/bun is not Bun $BUN_VERSION"
  echo "$dir/package/bin/bun"
}

# slim_tree DIR : drop what no image needs (docs but their copyright files, man pages, translations,
# apt indexes and downloaded packages)
slim_tree() {
  local d=$1
  find "$d/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete 2>/dev/null || true
  rm -rf "$d"/usr/share/{man,info,locale,lintian,linda,bug} "$d"/var/lib/apt/lists/* "$d"/var/cache/apt/* \
    "$d"/var/cache/debconf/*-old "$d"/var/log/*
  mkdir -p "$d/usr/share/locale"
}

# import_tree DIR IMAGE CHANGE... : the directory as a one-layer image
import_tree() {
  local dir=$1 image=$2
  shift 2
  local changes=() c
  # every image built on these bases inherits the label: it is how prune_old finds only ours
  changes+=(--change "LABEL $OWN_LABEL")
  for c in "$@"; do changes+=(--change "$c"); done
  tar --numeric-owner -C "$dir" -cf - . | pm import -q "${changes[@]}" - "$image" >/dev/null
}

ensure_bun_base() {
  if pm image exists "$BUN_BASE" && [[ ${PARLEY_REBUILD_BASE:-0} != 1 ]]; then
    check_bun_base || die "$BUN_BASE is not usable"
    return 0
  fi
  ensure_rootfs
  local bun stage=$IMG_CACHE/stage-bun-base
  bun=$(bun_binary)
  log "making $BUN_BASE (Debian $SUITE minbase + $bun)"
  rm -rf "$stage"
  cp -a "$ROOTFS" "$stage"
  slim_tree "$stage"
  install -m 0755 "$bun" "$stage/usr/local/bin/bun"
  ln -sf bun "$stage/usr/local/bin/bunx"
  import_tree "$stage" "$BUN_BASE" \
    'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "LABEL org.opencontainers.image.title=parley-bun-base org.opencontainers.image.version=$BUN_VERSION" \
    'CMD ["/usr/local/bin/bun"]'
  rm -rf "$stage"
  check_bun_base || {
    pm rmi "$BUN_BASE" >/dev/null 2>&1 || true
    die "removed $BUN_BASE again"
  }
}

# check_bun_base : the image runs and has the pinned Bun (also proves podman can run containers
# here: storage driver, runtime, limits)
check_bun_base() {
  local got
  got=$(pm run --rm --network none "${ULIMIT_ARGS[@]}" "$BUN_BASE" bun --version) || {
    log "cannot run a container of $BUN_BASE (overlay storage failing? try PARLEY_PODMAN_STORAGE=vfs)"
    return 1
  }
  [[ $got == "$BUN_VERSION" ]] || {
    log "$BUN_BASE runs Bun $got, expected $BUN_VERSION (PARLEY_REBUILD_BASE=1 makes it again)"
    return 1
  }
}

# The runtime base holds only the files of these packages (as dpkg installed them in the rootfs),
# like gcr.io/distroless/cc-debian12: the C/C++ runtime libraries, time zones and /etc/os-release.
RUNTIME_PACKAGES=(base-files libc6 libgcc-s1 libstdc++6 tzdata)

ensure_runtime_base() {
  if pm image exists "$RUNTIME_BASE" && [[ ${PARLEY_REBUILD_BASE:-0} != 1 ]]; then
    check_runtime_base || die "$RUNTIME_BASE is not usable"
    return 0
  fi
  ensure_rootfs
  local stage=$IMG_CACHE/stage-runtime-base list=$IMG_CACHE/runtime-files.txt pkg f path first link
  log "making $RUNTIME_BASE (${RUNTIME_PACKAGES[*]}; no shell)"
  rm -rf "$stage" && mkdir -p "$stage"
  : >"$list"
  for pkg in "${RUNTIME_PACKAGES[@]}"; do
    f=$ROOTFS/var/lib/dpkg/info/$pkg:amd64.list
    [[ -f $f ]] || f=$ROOTFS/var/lib/dpkg/info/$pkg.list
    [[ -f $f ]] || die "$pkg is not installed in $ROOTFS"
    while IFS= read -r path; do
      # regular files and symlinks only (tar makes the parents); /lib, /lib64 are merged-/usr
      # symlinks in the rootfs, so name each file by its real place under /usr
      [[ -d $ROOTFS$path && ! -L $ROOTFS$path ]] && continue
      [[ -e $ROOTFS$path || -L $ROOTFS$path ]] || continue
      first=${path#/}
      first=${first%%/*}
      [[ $path == "/$first" && -L $ROOTFS/$first ]] && continue # /lib itself: copied below
      if [[ -L $ROOTFS/$first ]]; then path=/$(readlink "$ROOTFS/$first")/${path#/"$first"/}; fi
      echo ".$path" >>"$list"
    done <"$f"
  done
  # the loader cache and name-service config that libc6's maintainer scripts made
  for f in etc/ld.so.cache etc/ld.so.conf etc/nsswitch.conf etc/localtime etc/timezone; do
    if [[ -e $ROOTFS/$f || -L $ROOTFS/$f ]]; then echo "./$f" >>"$list"; fi
  done
  tar --numeric-owner -C "$ROOTFS" -cf - -T "$list" | tar --numeric-owner -C "$stage" -xf -
  for link in bin lib lib64 sbin; do
    [[ -L $ROOTFS/$link ]] && cp -P "$ROOTFS/$link" "$stage/$link"
  done
  slim_tree "$stage"
  # distroless-style accounts: root, nobody and nonroot (65532) with no login shell
  mkdir -p "$stage/tmp" "$stage/root" "$stage/home/nonroot"
  chmod 1777 "$stage/tmp"
  chmod 0700 "$stage/root" "$stage/home/nonroot"
  chown 65532:65532 "$stage/home/nonroot"
  printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
    'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$stage/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'nonroot:x:65532:' >"$stage/etc/group"
  import_tree "$stage" "$RUNTIME_BASE" \
    'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "LABEL org.opencontainers.image.title=parley-runtime-base org.opencontainers.image.version=$SUITE" \
    'USER 65532:65532' 'WORKDIR /home/nonroot'
  rm -rf "$stage"
  check_runtime_base || {
    pm rmi "$RUNTIME_BASE" >/dev/null 2>&1 || true
    die "removed $RUNTIME_BASE again"
  }
}

# check_runtime_base : the base has no shell; prove that its loader and libc run a glibc executable
# (the pinned Bun, mounted in) as the nonroot user
check_runtime_base() {
  local bun
  bun=$(bun_binary)
  pm run --rm --network none "${ULIMIT_ARGS[@]}" -v "$bun:/probe:ro" "$RUNTIME_BASE" /probe --version >/dev/null || {
    log "a glibc executable does not start in $RUNTIME_BASE"
    return 1
  }
}

cmd_base() {
  need_tools podman:podman runc:runc
  setup_storage
  mkdir -p "$IMG_CACHE"
  [[ $BUN_IMAGE == "$BUN_BASE" ]] && ensure_bun_base
  [[ $RUNTIME_IMAGE == "$RUNTIME_BASE" ]] && ensure_runtime_base
  return 0
}

# ------------------------------------------------------------------------------------------ build

declare -A BUILD_MS
BUILD_FAILED=()
cmd_build() {
  cmd_base
  local svc args=() revision version t0 started build_start
  revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
  [[ $BUN_IMAGE == - ]] || args+=(--build-arg "BUN_IMAGE=$BUN_IMAGE")
  [[ $RUNTIME_IMAGE == - ]] || args+=(--build-arg "RUNTIME_IMAGE=$RUNTIME_IMAGE")
  # bun install in the build trusts what the host trusts (a TLS-inspecting proxy's CA, say): the
  # bundle goes in as a build secret, mounted for the install step only, never into a layer
  local ca
  for ca in "${NODE_EXTRA_CA_CERTS:-}" "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt; do
    if [[ -n $ca && -s $ca ]]; then
      args+=(--secret "id=ca-certificates,src=$ca")
      break
    fi
  done
  mkdir -p "$IMG_CACHE/logs"
  started=$(now_ms)
  build_start=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  for svc in "${SERVICES[@]}"; do
    version=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "services/$svc/package.json" | head -n 1)
    log "building $(image_ref "$svc")"
    t0=$(now_ms)
    # --network host: `bun install` in the build needs the npm registry and the sandbox may have no
    # bridge networking; the build runs only bun install/build, nothing listens.
    if ! timeout "$BUILD_TIMEOUT" podman --runtime runc "${PODMAN_STORAGE_ARGS[@]}" build --layers --network host "${ULIMIT_ARGS[@]}" \
      "${args[@]}" --build-arg "SERVICE=$svc" --build-arg "PORT=${PORTS[$svc]}" \
      --build-arg "VERSION=${version:-0.0.0}" --build-arg "REVISION=$revision" \
      -f "$DOCKERFILE" -t "$(image_ref "$svc")" . >"$IMG_CACHE/logs/build-$svc.log" 2>&1; then
      # one broken service must not hide the state of the others: note it, go on, fail at the end
      grep -v -e '^-->' -e '^\[[12]/2\] STEP' "$IMG_CACHE/logs/build-$svc.log" | tail -n 25 >&2
      log "build of $svc FAILED (log: $IMG_CACHE/logs/build-$svc.log)"
      BUILD_FAILED+=("$svc")
      continue
    fi
    BUILD_MS[$svc]=$(($(now_ms) - t0))
    log "built $(image_ref "$svc") in $(seconds "${BUILD_MS[$svc]}") s"
  done
  log "build finished in $(seconds $(($(now_ms) - started))) s; failed: ${BUILD_FAILED[*]:-none}"
  refuses_without_service "${args[@]}"
  prune_old "$build_start"
}

# refuses_without_service BUILD_ARGS... : a build of the dev stage and of the default target
# without SERVICE must fail with the Dockerfile's message (it would otherwise copy every service
# and start none). The deps layer is cached by the builds above, so this takes seconds.
REFUSE_FAILED=()
refuses_without_service() {
  local target logfile
  for target in dev runtime; do
    logfile=$IMG_CACHE/logs/build-no-service-$target.log
    if timeout "$BUILD_TIMEOUT" podman --runtime runc "${PODMAN_STORAGE_ARGS[@]}" build --layers --force-rm --network host "${ULIMIT_ARGS[@]}" \
      "$@" --build-arg "PORT=${PORTS[${ALL_SERVICES[0]}]}" --target "$target" -f "$DOCKERFILE" . >"$logfile" 2>&1; then
      log "a build of target $target without SERVICE succeeded (log: $logfile)"
      REFUSE_FAILED+=("$target")
    elif ! grep -q 'build with --build-arg SERVICE=' "$logfile"; then
      tail -n 15 "$logfile" >&2
      log "a build of target $target without SERVICE failed, but not with the Dockerfile's message (log: $logfile)"
      REFUSE_FAILED+=("$target")
    else
      log "$DOCKERFILE refuses target $target without SERVICE"
    fi
  done
}

# prune_old TIME : every rebuild leaves the previous image and its build-stage layers untagged
# (about 0.5 GB per service). Remove the untagged images made from our bases before TIME; the
# layers of this build, the bases and anything not built on them stay.
prune_old() {
  [[ ${PARLEY_KEEP_OLD_IMAGES:-0} == 1 ]] && return 0
  local removed
  removed=$(pm image prune -f --filter "label=$OWN_LABEL" --filter "until=$1" 2>/dev/null | grep -c . || true)
  ((removed == 0)) || log "removed $removed untagged layer images of earlier builds"
}

seconds() { awk -v ms="$1" 'BEGIN { printf "%.1f", ms / 1000 }'; }
build_failed() { [[ " ${BUILD_FAILED[*]:-} " == *" $1 "* ]]; }

# ------------------------------------------------------------------------------------------ smoke

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# free_port : a loopback port nobody listens on, away from the dev ports (4000-4004) and the infra
free_port() {
  local port
  for ((port = 14100 + RANDOM % 500; port < 15000; port++)); do
    [[ $port == "${CLOSED_PORT:-}" ]] && continue # the "no dependency here" port stays closed
    port_open "$port" || {
      echo "$port"
      return 0
    }
  done
  die "no free port in 14100-15000"
}

http_status() { curl -s -o /dev/null -m 2 -w '%{http_code}' "$1" 2>/dev/null || true; }

# smoke_env SERVICE : the variables a service needs to start (services/<name>/src/config.ts; a
# missing one makes it exit 78 naming it). With PARLEY_SMOKE_INFRA=none every dependency URL points
# at a closed loopback port: a service must answer /health (liveness) with no dependency reachable.
smoke_env() {
  local svc=$1 pg=5432 redis=6379 amqp=5672 mongo=27017 smtp=1025 s3=7070 jwks=${PORTS[auth]} kv
  if [[ $SMOKE_INFRA == none ]]; then
    pg=$CLOSED_PORT redis=$CLOSED_PORT amqp=$CLOSED_PORT mongo=$CLOSED_PORT smtp=$CLOSED_PORT s3=$CLOSED_PORT jwks=$CLOSED_PORT
  fi
  echo "LOG_LEVEL=info"
  echo "REDIS_URL=redis://127.0.0.1:$redis"
  echo "AMQP_URL=amqp://guest:guest@127.0.0.1:$amqp/%2F"
  echo "JWKS_URL=http://127.0.0.1:$jwks/.well-known/jwks.json"
  case ${STORES[$svc]} in
  postgres:*) echo "DATABASE_URL=postgres://parley:parley@127.0.0.1:$pg/${STORES[$svc]#postgres:}" ;;
  mongodb:*) echo "MONGO_URL=mongodb://127.0.0.1:$mongo" && echo "MONGO_DB=${STORES[$svc]#mongodb:}" ;;
  esac
  [[ $svc == notification ]] && echo "SMTP_URL=smtp://127.0.0.1:$smtp"
  [[ $svc == chat ]] && printf '%s\n' "S3_ENDPOINT=http://127.0.0.1:$s3" S3_ACCESS_KEY_ID=parley S3_SECRET_ACCESS_KEY=parley-dev-secret
  [[ $svc == auth ]] && echo "JWT_PRIVATE_KEY=$SMOKE_JWT_KEY"
  for kv in ${PARLEY_SMOKE_ENV:-}; do echo "$kv"; done
}

# migrations_in IMAGE : how many files /app/drizzle holds (the image has no shell: mount it)
migrations_in() {
  local mnt count
  mnt=$(pm image mount "$1" 2>/dev/null) || {
    echo "?"
    return 0
  }
  if [[ -d $mnt/app/drizzle ]]; then count=$(find "$mnt/app/drizzle" -type f | wc -l); else count="none"; fi
  pm image unmount "$1" >/dev/null 2>&1 || true
  echo "$count"
}

CLOSED_PORT=""
declare -A R_SIZE R_HEALTH R_EXIT R_STOP R_MIGR R_OK
# smoke_one SERVICE : start the image on a free loopback port, wait for /health, SIGTERM, time the exit
smoke_one() {
  local svc=$1 image name port ops_port env_args=() kv deadline status="" state code finished t_kill
  image=$(image_ref "$svc")
  name=parley-smoke-$svc
  R_SIZE[$svc]="-" R_HEALTH[$svc]="no" R_EXIT[$svc]="-" R_STOP[$svc]="-" R_MIGR[$svc]="-" R_OK[$svc]=0
  if build_failed "$svc"; then
    log "$svc: not tested, its build failed (the image tagged $image, if any, is an older one)"
    return 0
  fi
  if ! pm image exists "$image"; then
    log "$svc: no image $image (run: bash scripts/images.sh build)"
    return 0
  fi
  R_SIZE[$svc]=$(pm image inspect --format '{{.Size}}' "$image" | awk '{printf "%.1f", $1 / 1000000}')
  R_MIGR[$svc]=$(migrations_in "$image")
  pm rm -f "$name" >/dev/null 2>&1 || true
  port=$(free_port)
  # host network: the ops port too, or it would take the roster's 940x a dev stack may hold
  ops_port=$(free_port)
  while [[ $ops_port == "$port" ]]; do ops_port=$(free_port); done
  while IFS= read -r kv; do env_args+=(-e "$kv"); done < <(smoke_env "$svc")
  # As strict as a hardened pod: read-only root without even a /tmp, no capabilities, no setuid.
  if ! pm run -d --name "$name" --network host "${ULIMIT_ARGS[@]}" --read-only --read-only-tmpfs=false --cap-drop ALL \
    --security-opt no-new-privileges -e HOST=127.0.0.1 -e "PORT=$port" -e "OPS_PORT=$ops_port" "${env_args[@]}" "$image" >/dev/null; then
    log "$svc: the container did not start"
    pm rm -f "$name" >/dev/null 2>&1 || true
    return 0
  fi
  deadline=$((SECONDS + HEALTH_TIMEOUT))
  while ((SECONDS < deadline)); do
    status=$(http_status "http://127.0.0.1:$port/health")
    [[ $status == 200 ]] && break
    state=$(pm inspect --format '{{.State.Status}}' "$name" 2>/dev/null || echo gone)
    [[ $state == running || $state == created ]] || break
    sleep 0.2
  done
  if [[ $status == 200 ]]; then
    R_HEALTH[$svc]=yes
  else
    log "$svc: /health did not answer 200 within ${HEALTH_TIMEOUT}s (last: ${status:-none}, container: $(pm inspect --format '{{.State.Status}} exit={{.State.ExitCode}}' "$name" 2>/dev/null))"
  fi
  t_kill=$(date +%s%N)
  pm kill --signal TERM "$name" >/dev/null 2>&1 || true
  # bounded: the limit plus slack for podman's own start-up; the stop time itself comes from the
  # container's FinishedAt, not from when this command returns
  if code=$(timeout $((STOP_LIMIT_MS / 1000 + 5)) podman --runtime runc "${PODMAN_STORAGE_ARGS[@]}" wait "$name" 2>/dev/null); then
    R_EXIT[$svc]=$code
    finished=$(pm inspect --format '{{.State.FinishedAt.UnixNano}}' "$name")
    R_STOP[$svc]=$(((finished - t_kill) / 1000000))
    ((R_STOP[$svc] < 0)) && R_STOP[$svc]=0 # exited before the signal (it had failed already)
  else
    R_EXIT[$svc]="timeout"
    log "$svc: still running $((STOP_LIMIT_MS / 1000 + 5)) s after SIGTERM, killing it"
    pm kill --signal KILL "$name" >/dev/null 2>&1 || true
  fi
  if [[ ${R_HEALTH[$svc]} == yes && ${R_EXIT[$svc]} == 0 && ${R_STOP[$svc]} != - ]] && ((R_STOP[$svc] <= STOP_LIMIT_MS)); then
    R_OK[$svc]=1
  else
    log "$svc: last lines of its log:"
    pm logs --tail 20 "$name" >&2 2>&1 || true
  fi
  pm rm -f "$name" >/dev/null 2>&1 || true
}

cmd_smoke() {
  need_tools podman:podman runc:runc curl:curl
  setup_storage
  SMOKE_INFRA=${PARLEY_SMOKE_INFRA:-none}
  case $SMOKE_INFRA in
  none) CLOSED_PORT=$(free_port) ;;
  local) bash scripts/infra.sh up ;;
  *) die "PARLEY_SMOKE_INFRA must be none or local" ;;
  esac
  log "dependencies: $([[ $SMOKE_INFRA == none ]] && echo "none reachable (all URLs -> 127.0.0.1:$CLOSED_PORT)" || echo "local infra (scripts/infra.sh)")"
  # auth refuses to start in production without a signing key: a throwaway Ed25519 key, one line
  # with \n escapes as the service accepts it
  need_tools openssl:openssl
  SMOKE_JWT_KEY=$(openssl genpkey -algorithm ed25519 | awk '{ printf "%s\\n", $0 }')
  local svc failed=()
  for svc in "${SERVICES[@]}"; do
    log "smoke test of $(image_ref "$svc")"
    smoke_one "$svc"
  done
  printf '\n%-13s %9s %8s %6s %5s %8s %10s %6s\n' service 'image MB' 'build s' health exit 'stop ms' migrations result
  for svc in "${SERVICES[@]}"; do
    local build="-"
    [[ -n ${BUILD_MS[$svc]:-} ]] && build=$(seconds "${BUILD_MS[$svc]}")
    build_failed "$svc" && build=FAILED
    printf '%-13s %9s %8s %6s %5s %8s %10s %6s\n' "$svc" "${R_SIZE[$svc]}" "$build" "${R_HEALTH[$svc]}" \
      "${R_EXIT[$svc]}" "${R_STOP[$svc]}" "${R_MIGR[$svc]}" "$( ((R_OK[$svc])) && echo ok || echo FAIL)"
    ((R_OK[$svc])) || failed+=("$svc")
  done
  echo
  ((${#failed[@]} == 0)) || die "FAILED: ${failed[*]} (a service must build, answer /health with 200 within ${HEALTH_TIMEOUT} s and exit 0 within ${STOP_LIMIT_MS} ms of SIGTERM)"
  log "every image answered /health and exited 0 on SIGTERM within ${STOP_LIMIT_MS} ms"
}

# ------------------------------------------------------------------------------------------- main

# The services, their ports and stores: packages/contracts/src/roster.ts, one "name port store" line
# each (store: postgres:<database>, mongodb:<database> or -).
declare -A PORTS=() STORES=()
ALL_SERVICES=()
ROSTER_LINES=$("$(command -v bun || bun_binary)" -e "import { ROSTER } from '$ROOT/packages/contracts/src/roster.ts'
for (const s of ROSTER) console.log(s.name, s.port, s.store ? s.store.kind + ':' + s.store.database : '-')") ||
  die "could not read packages/contracts/src/roster.ts with bun"
while read -r name port store; do
  ALL_SERVICES+=("$name")
  PORTS[$name]=$port
  STORES[$name]=$store
done <<<"$ROSTER_LINES"
((${#ALL_SERVICES[@]} > 0)) || die "no services in packages/contracts/src/roster.ts"
read -r -a SERVICES <<<"${PARLEY_SERVICES:-${ALL_SERVICES[*]}}"

for svc in "${SERVICES[@]}"; do
  [[ -n ${PORTS[$svc]:-} ]] || die "unknown service '$svc' (known: ${ALL_SERVICES[*]})"
done

case ${1:-all} in
all)
  cmd_build
  cmd_smoke
  ((${#REFUSE_FAILED[@]} == 0)) || die "$DOCKERFILE built target(s) ${REFUSE_FAILED[*]} without SERVICE (see above)"
  ;;
build)
  cmd_build
  ((${#BUILD_FAILED[@]} == 0)) || die "build failed for: ${BUILD_FAILED[*]}"
  ((${#REFUSE_FAILED[@]} == 0)) || die "$DOCKERFILE built target(s) ${REFUSE_FAILED[*]} without SERVICE (see above)"
  ;;
smoke) cmd_smoke ;;
base) cmd_base ;;
*)
  echo "usage: bash scripts/images.sh [all|build|smoke|base]" >&2
  exit 2
  ;;
esac
