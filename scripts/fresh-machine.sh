#!/usr/bin/env bash
# The README's two quick-start commands, exactly as written there, on a bare Debian 12: proves
# that they install everything they need. Not part of the test suite (it takes a while).
#
#   sudo bash scripts/fresh-machine.sh
#
# What it does:
#   1. a minimal Debian 12 root file system (debootstrap --variant=minbase, made once and kept
#      pristine in .cache/fresh-machine/base; every run starts from a new copy of it), with the
#      machine's apt sources and its local CA certificates (a site's machines trust its proxy)
#   2. a clean `git clone` of the current commit (HEAD, not the working tree) in /root/parley
#   3. inside it, in namespaces of its own (PID, mount, network; chroot): the network reaches the
#      package registries through slirp4netns but has its own loopback, so nothing listening on
#      this machine's 127.0.0.1 is seen, reused or disturbed
#   4. both README commands twice, cold then warm: the "up" command until the five services answer
#      /health and the gateway routes a request (then it is stopped with SIGINT), then the test
#      command; the local servers are stopped between the two rounds
#   5. prints pass/fail, each command's time and the test command's `tests:` line
#
# Environment (defaults in brackets):
#   PARLEY_FRESH_DIR [.cache/fresh-machine]   PARLEY_DEBIAN_SUITE [bookworm]
#   PARLEY_FRESH_UP_TIMEOUT [3600] seconds the up command may take to bring the stack up
#   PARLEY_FRESH_TEST_TIMEOUT [5400] seconds the test command may take
#   PARLEY_FRESH_ROUNDS [cold warm]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd -P)
CACHE=$ROOT/.cache
LOG_TAG=fresh-machine
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

WORK=${PARLEY_FRESH_DIR:-$CACHE/fresh-machine}
SUITE=${PARLEY_DEBIAN_SUITE:-bookworm}
UP_TIMEOUT=${PARLEY_FRESH_UP_TIMEOUT:-3600}
TEST_TIMEOUT=${PARLEY_FRESH_TEST_TIMEOUT:-5400}
read -r -a ROUNDS <<<"${PARLEY_FRESH_ROUNDS:-cold warm}"
BASE=$WORK/base
FRESH=$WORK/root

is_root || die "run as root (debootstrap, chroot and namespaces need it)"
mkdir -p "$WORK"
# one run at a time: a second one would delete the root the first is running in
exec 8>"$WORK.lock"
flock -n 8 || die "another fresh-machine run holds $WORK.lock"
need_tools debootstrap:debootstrap slirp4netns:slirp4netns unshare:util-linux git:git

# The two commands of the README's quick start: the two lines of its first sh block.
mapfile -t COMMANDS < <(awk '
  /^## Quick start/ { section = 1 }
  section && /^```sh/ { block = 1; next }
  block && /^```/ { exit }
  block && NF { sub(/[ \t]+#.*$/, ""); print }
' README.md)
((${#COMMANDS[@]} == 2)) || die "expected two commands in the README quick start, found ${#COMMANDS[@]}"
UP_COMMAND=${COMMANDS[0]}
TEST_COMMAND=${COMMANDS[1]}
log "up command:   $UP_COMMAND"
log "test command: $TEST_COMMAND"

# ------------------------------------------------------------------------------ the bare root

if [[ ! -f $BASE.ok ]]; then
  mirror=$(debian_mirror "$SUITE")
  log "debootstrap --variant=minbase $SUITE from $mirror into $BASE (a few minutes, once)"
  rm -rf "$BASE" "$BASE.tmp"
  timeout 1800 debootstrap --variant=minbase "$SUITE" "$BASE.tmp" "$mirror" >"$WORK/debootstrap.log" 2>&1 || {
    tail -n 20 "$WORK/debootstrap.log" >&2
    die "debootstrap failed (log: $WORK/debootstrap.log)"
  }
  mv "$BASE.tmp" "$BASE"
  touch "$BASE.ok"
fi

log "a new bare root in $FRESH"
rm -rf "$FRESH"
cp -a "$BASE" "$FRESH"
# The machine's own apt sources (security and updates included) and its local trust anchors.
if compgen -G '/etc/apt/sources.list.d/*.sources' >/dev/null; then
  rm -f "$FRESH/etc/apt/sources.list"
  cp /etc/apt/sources.list.d/*.sources "$FRESH/etc/apt/sources.list.d/"
fi
if compgen -G '/usr/local/share/ca-certificates/*' >/dev/null; then
  mkdir -p "$FRESH/usr/local/share/ca-certificates"
  cp -r /usr/local/share/ca-certificates/. "$FRESH/usr/local/share/ca-certificates/"
fi
# slirp4netns answers DNS on 10.0.2.3 with the resolvers of this machine
echo 'nameserver 10.0.2.3' >"$FRESH/etc/resolv.conf"
echo fresh >"$FRESH/etc/hostname"
printf '127.0.0.1 localhost fresh\n::1 localhost ip6-localhost ip6-loopback\n' >"$FRESH/etc/hosts"

commit=$(git rev-parse HEAD)
git clone --quiet --no-hardlinks "$ROOT" "$FRESH/root/parley"
git -C "$FRESH/root/parley" checkout --quiet "$commit"
log "clone of $commit in /root/parley (dirty files of this checkout are not in it)"

# ------------------------------------------------------------------------------ inside the root

# Runs in the chroot: each round's two commands, then a summary line per command in results.
cat >"$FRESH/root/fresh-run.sh" <<'INNER'
set -uo pipefail
cd /root/parley
results=/root/fresh-results
: >"$results"

http_ok() { # PORT PATH: an HTTP GET on 127.0.0.1 answers 200 (bash only: curl may not exist yet)
  local reply
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$2" >&3
  IFS= read -r -t 5 reply <&3
  exec 3>&-
  [[ $reply == "HTTP/1.1 200"* ]]
} 2>/dev/null

stack_up() {
  local port
  for port in 4000 4001 4002 4003 4004; do http_ok "$port" /health || return 1; done
  http_ok 4000 /api/v1/auth/.well-known/jwks.json
}

for round in $ROUNDS; do
  echo "=== $round: $UP_COMMAND"
  started=$SECONDS
  setsid bash -c "$UP_COMMAND" >"/root/up-$round.log" 2>&1 </dev/null &
  up_pid=$!
  state=timeout
  while ((SECONDS - started < UP_TIMEOUT)); do
    if stack_up; then state=up; break; fi
    kill -0 "$up_pid" 2>/dev/null || { state=exited; break; }
    sleep 1
  done
  up_seconds=$((SECONDS - started))
  kill -INT -- "-$up_pid" 2>/dev/null
  for _ in $(seq 1 30); do kill -0 "$up_pid" 2>/dev/null || break; sleep 1; done
  kill -KILL -- "-$up_pid" 2>/dev/null
  wait "$up_pid" 2>/dev/null
  echo "up $round $state ${up_seconds}s" >>"$results"
  [[ $state == up ]] || tail -n 40 "/root/up-$round.log"

  echo "=== $round: $TEST_COMMAND"
  started=$SECONDS
  timeout "$TEST_TIMEOUT" bash -c "$TEST_COMMAND" </dev/null >"/root/test-$round.log" 2>&1
  code=$?
  test_seconds=$((SECONDS - started))
  tests=$(grep -a '^tests: ' "/root/test-$round.log" | tail -n 1)
  echo "test $round exit=$code ${test_seconds}s ${tests:-tests: (no summary line)}" >>"$results"
  ((code == 0)) || grep -a -E '^\(fail\)|FAILED|error' "/root/test-$round.log" | head -n 40

  # the next round starts the servers again too
  bash scripts/infra.sh down >/dev/null 2>&1
done
INNER

# Runs in the new namespaces: mounts, then the chroot. PID 1 of the namespace is this shell, so
# every process started inside ends with it.
cat >"$WORK/enter.sh" <<'ENTER'
set -euo pipefail
fresh=$1
shift
mount --make-rprivate /
ip link set lo up
# the root a mount point of its own, as / is on a real machine (podman remounts it)
mount --bind "$fresh" "$fresh"
mount -t proc proc "$fresh/proc"
mount --rbind /sys "$fresh/sys"
mount --rbind /dev "$fresh/dev"
mount -t tmpfs -o mode=1777 tmpfs "$fresh/dev/shm"
mount -t tmpfs -o mode=755 tmpfs "$fresh/run"
exec chroot "$fresh" /usr/bin/env -i "$@" /bin/bash /root/fresh-run.sh
ENTER

# A new machine's environment: nothing of ours, but the site's CA settings if this machine has
# them (they point at the system bundle, which exists once ca-certificates is installed).
inner_env=(HOME=/root USER=root LOGNAME=root LANG=C.UTF-8 TERM=dumb
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  "ROUNDS=${ROUNDS[*]}" "UP_COMMAND=$UP_COMMAND" "TEST_COMMAND=$TEST_COMMAND"
  "UP_TIMEOUT=$UP_TIMEOUT" "TEST_TIMEOUT=$TEST_TIMEOUT")
for name in NODE_EXTRA_CA_CERTS SSL_CERT_FILE SSL_CERT_DIR CURL_CA_BUNDLE REQUESTS_CA_BUNDLE GIT_SSL_CAINFO; do
  [[ -n ${!name:-} ]] && inner_env+=("$name=${!name}")
done

log "running the rounds (${ROUNDS[*]}); logs: $FRESH/root/{up,test}-<round>.log"
ready=$WORK/netns.ready
rm -f "$ready"
started=$SECONDS
unshare --net --pid --mount --fork --kill-child bash -c \
  'while [[ ! -e $0 ]]; do sleep 0.1; done; exec bash "$@"' "$ready" "$WORK/enter.sh" "$FRESH" "${inner_env[@]}" &
ns_pid=$!
# the network namespace is that of unshare's child
for _ in $(seq 1 50); do
  child=$(cat "/proc/$ns_pid/task/$ns_pid/children" 2>/dev/null | awk '{print $1}')
  [[ -n $child ]] && break
  sleep 0.1
done
[[ -n ${child:-} ]] || die "the namespace did not start"
slirp4netns --configure --mtu=65520 --disable-host-loopback "$child" tap0 >"$WORK/slirp4netns.log" 2>&1 &
slirp_pid=$!
# Interrupted: end the namespace (SIGKILL to its PID 1 ends every process in it) and the network.
trap 'kill -KILL "$child" "$slirp_pid" 2>/dev/null; exit 130' INT TERM
sleep 1
touch "$ready"
status=0
wait "$ns_pid" || status=$?
kill "$slirp_pid" 2>/dev/null || true
wait "$slirp_pid" 2>/dev/null || true
total=$((SECONDS - started))

# ------------------------------------------------------------------------------ summary

echo
echo "fresh-machine summary (Debian $SUITE minbase, commit ${commit:0:12}, total ${total}s):"
pass=1
results=$FRESH/root/fresh-results
[[ -s $results ]] || pass=0
for round in "${ROUNDS[@]}"; do
  up=$(awk -v r="$round" '$1 == "up" && $2 == r' "$results" 2>/dev/null)
  test_line=$(awk -v r="$round" '$1 == "test" && $2 == r' "$results" 2>/dev/null)
  echo "  $round  $UP_COMMAND: ${up:-missing}"
  echo "  $round  $TEST_COMMAND: ${test_line:-missing}"
  [[ $up == *" up "* ]] || pass=0
  [[ $test_line == *"exit=0"* && $test_line =~ tests:\ [1-9][0-9]*\ passed,\ 0\ failed ]] || pass=0
done
if ((pass == 1 && status == 0)); then
  echo "fresh-machine: PASS"
else
  echo "fresh-machine: FAIL (logs in $FRESH/root)"
  exit 1
fi
