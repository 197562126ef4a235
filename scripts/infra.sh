#!/usr/bin/env bash
# Parley local infrastructure: real servers on 127.0.0.1 for `bun test` and `bun run dev`.
#
#   bash scripts/infra.sh up       start everything that is not already answering (idempotent)
#   bash scripts/infra.sh status   show each server (up/down, ours/reused) and its URL; exit 1 if any is down
#   bash scripts/infra.sh down     stop only what this script started (never a reused/system server)
#
# For each server, in this order:
#   1. something already answers on its port -> reuse it
#   2. the binary is installed                -> start it with its data under .data/
#   3. we are root                            -> apt-get install it, then start it
#      otherwise                              -> print the commands to run and exit non-zero
#
# Servers (data under .data/, logs in .data/logs, pidfiles in .data/pids):
#   postgres  PostgreSQL 15 cluster in .data/postgres (as root with .data out of the postgres user's reach:
#             /var/lib/parley/postgres-<hash>; fsync off: throwaway dev/test data),
#             superuser role parley/parley, databases parley and each service's (the roster in packages/contracts)
#   redis     redis-server, no persistence
#   rabbitmq  project-local node (RABBITMQ_NODENAME parley@localhost) with the management plugin and
#             rabbitmq_prometheus (queue depths for the consumer-lag alert) on 127.0.0.1:15692
#   mongodb   mongod if installed, else FerretDB, built once into .cache/bin/ferretdb, on its PostgreSQL
#             backend (database parley_ferretdb of the cluster above; SQLite with PARLEY_FERRETDB_HANDLER=sqlite),
#             with GIN twins of its indexes so its equality filters are index lookups (ferretdb-postgresql.sql)
#   smtp      packages/mail-sink (SMTP sink + Mailpit-like JSON API), run with bun
#   s3        versitygw (Apache-2.0 S3 gateway, posix backend: buckets are folders of .data/s3), built once
#             into .cache/bin/versitygw from the Go module source; root credentials parley/parley-dev-secret,
#             bucket parley (PARLEY_S3_BUCKETS: more, space-separated)
#
# Environment overrides (defaults in brackets):
#   PARLEY_DATA_DIR [.data]  PARLEY_CACHE_DIR [.cache]  PARLEY_WAIT_SECONDS [60]  PARLEY_RABBITMQ_WAIT_SECONDS [120]
#   PARLEY_PG_PORT [5432]  PARLEY_PG_USER [parley]  PARLEY_PG_PASSWORD [parley]  PARLEY_PG_DATABASE [parley]
#   PARLEY_PG_EXTRA_DATABASES [the PostgreSQL databases of the roster, packages/contracts/src/roster.ts]
#   PARLEY_PG_BIN [/usr/lib/postgresql/15/bin, else newest installed]  PARLEY_PG_MAX_CONNECTIONS [400]
#   PARLEY_REDIS_PORT [6379]
#   PARLEY_AMQP_PORT [5672]  PARLEY_RABBITMQ_MGMT_PORT [15672]  PARLEY_RABBITMQ_NODENAME [parley@localhost]
#   PARLEY_RABBITMQ_PROMETHEUS_PORT [15692]
#   PARLEY_MONGO_PORT [27017]  PARLEY_FERRETDB_BIN [.cache/bin/ferretdb]  PARLEY_FERRETDB_VERSION [1.24.2]
#   PARLEY_FERRETDB_HANDLER [postgresql; or sqlite]  PARLEY_FERRETDB_PG_DATABASE [parley_ferretdb]
#   PARLEY_FERRETDB_DEBUG_ADDR [- = disabled; e.g. 127.0.0.1:8088]  PARLEY_GO [go in PATH or /usr/local/go/bin/go]
#   (without a Go >= 1.21, scripts/lib.sh fetches one through the go command's own GOPROXY)
#   PARLEY_SMTP_PORT [1025]  PARLEY_MAIL_HTTP_PORT [8025]
#   PARLEY_S3_PORT [7070]  PARLEY_S3_BUCKETS [parley]  PARLEY_VERSITYGW_VERSION [1.8.0]
#   PARLEY_S3_ACCESS_KEY [parley]  PARLEY_S3_SECRET_KEY [parley-dev-secret]
set -euo pipefail
shopt -s inherit_errexit

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd -P)

DATA=$(mkdir -p "${PARLEY_DATA_DIR:-$ROOT/.data}" && cd "${PARLEY_DATA_DIR:-$ROOT/.data}" && pwd -P)
CACHE=$(mkdir -p "${PARLEY_CACHE_DIR:-$ROOT/.cache}" && cd "${PARLEY_CACHE_DIR:-$ROOT/.cache}" && pwd -P)
LOGS=$DATA/logs
PIDS=$DATA/pids
WAIT=${PARLEY_WAIT_SECONDS:-60}
RMQ_WAIT=${PARLEY_RABBITMQ_WAIT_SECONDS:-120}

PG_PORT=${PARLEY_PG_PORT:-5432}
PG_USER=${PARLEY_PG_USER:-parley}
PG_PASSWORD=${PARLEY_PG_PASSWORD:-parley}
PG_DATABASE=${PARLEY_PG_DATABASE:-parley}
PG_EXTRA_DATABASES=${PARLEY_PG_EXTRA_DATABASES:-}
PG_MAX_CONNECTIONS=${PARLEY_PG_MAX_CONNECTIONS:-400}
REDIS_PORT=${PARLEY_REDIS_PORT:-6379}
AMQP_PORT=${PARLEY_AMQP_PORT:-5672}
RMQ_MGMT_PORT=${PARLEY_RABBITMQ_MGMT_PORT:-15672}
RMQ_NODENAME=${PARLEY_RABBITMQ_NODENAME:-parley@localhost}
MONGO_PORT=${PARLEY_MONGO_PORT:-27017}
FERRETDB_VERSION=${PARLEY_FERRETDB_VERSION:-1.24.2}
FERRETDB_DEBUG_ADDR=${PARLEY_FERRETDB_DEBUG_ADDR:--}
FERRETDB_HANDLER=${PARLEY_FERRETDB_HANDLER:-postgresql}
FERRETDB_PG_DATABASE=${PARLEY_FERRETDB_PG_DATABASE:-parley_ferretdb}
SMTP_PORT=${PARLEY_SMTP_PORT:-1025}
MAIL_HTTP_PORT=${PARLEY_MAIL_HTTP_PORT:-8025}
S3_PORT=${PARLEY_S3_PORT:-7070}
S3_BUCKETS=${PARLEY_S3_BUCKETS:-parley}
S3_ACCESS_KEY=${PARLEY_S3_ACCESS_KEY:-parley}
S3_SECRET_KEY=${PARLEY_S3_SECRET_KEY:-parley-dev-secret}
VERSITYGW_VERSION=${PARLEY_VERSITYGW_VERSION:-1.8.0}

# Go, bun and the Erlang tools want a HOME (CI containers sometimes run without one).
if [[ -z ${HOME:-} ]]; then
  export HOME=$CACHE/home
  mkdir -p "$HOME"
fi


# ---------------------------------------------------------------------------------------------- helpers

LOG_TAG=infra
APT_LOG=$LOGS/apt.log
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

# roster_databases : sets PG_EXTRA_DATABASES (unless given) to the services' PostgreSQL databases
roster_databases() {
  [[ -z $PG_EXTRA_DATABASES ]] || return 0
  local bun
  bun=$(command -v bun) || die "bun reads the roster of services: run bash scripts/setup.sh first"
  PG_EXTRA_DATABASES=$("$bun" -e 'import { POSTGRES_DATABASES } from "./packages/contracts/src/roster"
console.log(POSTGRES_DATABASES.join(" "))') || die "could not read the roster (packages/contracts/src/roster.ts)"
}

# world_traversable DIR : every directory from / down to DIR lets other users through
world_traversable() {
  local dir=$1
  while [[ -n $dir && $dir != / ]]; do
    [[ $(stat -L -c %A "$dir") == *[xt] ]] || return 1
    dir=$(dirname "$dir")
  done
}

# As root, PostgreSQL runs as the postgres OS user, which must reach its cluster, socket and log:
# a clone in /root (mode 700) keeps them in /var/lib/parley instead, one folder per data folder.
PG_HOME=$DATA
if is_root && ! world_traversable "$DATA"; then
  PG_HOME=/var/lib/parley/postgres-$(sha256sum <<<"$DATA" | cut -c 1-12)
fi
PGDATA_DIR=$PG_HOME/postgres
PG_SOCK_DIR=$PG_HOME/run
PG_LOG=$PG_HOME/postgres.log
[[ $PG_HOME == "$DATA" ]] && PG_LOG=$LOGS/postgres.log
# The Unix socket path must fit in sun_path (108 bytes).
if ((${#PG_SOCK_DIR} > 90)); then PG_SOCK_DIR=/tmp/parley-pg-$(id -u); fi
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# log_tail FILE... : show the end of each existing log file (used when a server fails to come up)
log_tail() {
  local f
  for f in "$@"; do
    [[ -f $f ]] || continue
    printf -- '----- tail -n 40 %s -----\n' "$f" >&2
    tail -n 40 "$f" >&2 || true
  done
}

# wait_for NAME SECONDS LOGFILES CMD... : run CMD every 0.5 s until it succeeds; on timeout print the logs
# and fail. LOGFILES is a space-separated list.
wait_for() {
  local name=$1 secs=$2 logs=$3
  shift 3
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "$name did not become ready within ${secs}s"
      # shellcheck disable=SC2086
      log_tail $logs
      return 1
    fi
    sleep 0.5
  done
}

# pid_running PIDFILE PATTERN : the pidfile names a live process whose command line matches PATTERN
# (guards against killing an unrelated process that reused a stale PID)
pid_running() {
  local pidfile=$1 pattern=$2 pid cmdline
  [[ -s $pidfile ]] || return 1
  pid=$(head -n 1 "$pidfile" | tr -dc '0-9')
  [[ -n $pid ]] && alive "$pid" || return 1
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmdline =~ $pattern ]]
}

# alive PID : the process exists and is not a zombie
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != Z ]]
}

# stop_pidfile NAME PIDFILE PATTERN : TERM the process (then KILL after WAIT seconds)
stop_pidfile() {
  local name=$1 pidfile=$2 pattern=$3 pid deadline
  if ! pid_running "$pidfile" "$pattern"; then
    rm -f "$pidfile"
    return 0
  fi
  pid=$(head -n 1 "$pidfile" | tr -dc '0-9')
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + WAIT))
  while alive "$pid" && ((SECONDS < deadline)); do sleep 0.2; done
  if alive "$pid"; then
    log "$name did not exit, sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

# start_bg PIDFILE LOGFILE CMD... : start CMD detached (own session, immune to the caller's job control and
# hangups, no stdin, without our lock fd 9) and record its PID
start_bg() {
  local pidfile=$1 logfile=$2
  shift 2
  setsid nohup "$@" >>"$logfile" 2>&1 </dev/null 9>&- &
  echo $! >"$pidfile"
}

ensure_dirs() { mkdir -p "$LOGS" "$PIDS"; }

# One `up`/`down` at a time (e.g. test and dev scripts starting in parallel). Servers are started with fd 9
# closed (`9>&-`) so that they do not keep holding the lock.
lock() {
  command -v flock >/dev/null || return 0
  exec 9>"$PIDS/infra.lock"
  flock -w 600 9 || die "another scripts/infra.sh is still running (lock $PIDS/infra.lock)"
}

# ------------------------------------------------------------------------------------------- postgres

pg_bin_dir() {
  local d
  if [[ -n ${PARLEY_PG_BIN:-} ]]; then
    echo "$PARLEY_PG_BIN"
    return 0
  fi
  # shellcheck disable=SC2012
  for d in /usr/lib/postgresql/15/bin $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -rV); do
    if [[ -x $d/initdb && -x $d/pg_ctl ]]; then
      echo "$d"
      return 0
    fi
  done
  if command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
    dirname "$(command -v initdb)"
    return 0
  fi
  return 1
}

psql_bin() {
  local d
  if d=$(pg_bin_dir) && [[ -x $d/psql ]]; then echo "$d/psql"; else command -v psql; fi
}

# run_as_pg CMD... : initdb/postgres refuse to run as root, so use the postgres OS user when we are root
run_as_pg() {
  if is_root; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

pg_ours_running() { pid_running "$PGDATA_DIR/postmaster.pid" 'postgres|postmaster'; }

pg_url() { echo "postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DATABASE"; }

pg_admin_sql() {
  local db dbs="'$PG_DATABASE'"
  for db in $PG_EXTRA_DATABASES; do dbs+=",'$db'"; done
  cat <<SQL
DO \$\$BEGIN
  IF EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
    ALTER ROLE "$PG_USER" WITH LOGIN SUPERUSER PASSWORD '$PG_PASSWORD';
  ELSE
    CREATE ROLE "$PG_USER" WITH LOGIN SUPERUSER PASSWORD '$PG_PASSWORD';
  END IF;
END\$\$;
SELECT format('CREATE DATABASE %I OWNER %I', d, '$PG_USER')
  FROM unnest(ARRAY[$dbs]) AS d
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = d) \gexec
SQL
}

# Role parley (superuser) and the databases exist? (one quick query over TCP as parley)
pg_objects_ok() {
  local psql db dbs="'$PG_DATABASE'" n=1 out
  psql=$(psql_bin) || return 1
  for db in $PG_EXTRA_DATABASES; do
    dbs+=",'$db'"
    n=$((n + 1))
  done
  out=$(PGPASSWORD=$PG_PASSWORD PGCONNECT_TIMEOUT=5 "$psql" -XqAt -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" \
    -d postgres -c "SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
      AND count(*) = $n FROM pg_database WHERE datname IN ($dbs)" 2>/dev/null) || return 1
  [[ $out == t ]]
}

pg_ensure_objects() {
  local psql
  pg_objects_ok && return 0
  psql=$(psql_bin) || die "psql not found"
  if pg_ours_running; then
    pg_admin_sql | run_as_pg "$psql" -Xq -v ON_ERROR_STOP=1 -h "$PG_SOCK_DIR" -p "$PG_PORT" -U postgres \
      -d postgres -f - >/dev/null
  elif is_root && id postgres >/dev/null 2>&1; then
    # a reused (system) cluster: its default socket directory, peer auth as postgres
    pg_admin_sql | (cd / && runuser -u postgres -- "$psql" -Xq -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres \
      -f -) >/dev/null
  else
    log "PostgreSQL on port $PG_PORT is not ours; run this as a superuser of that server:"
    pg_admin_sql >&2
    exit 1
  fi
  pg_objects_ok || die "role $PG_USER / databases still missing on PostgreSQL port $PG_PORT"
}

pg_up() {
  local bin logfile=$PG_LOG
  roster_databases
  # FerretDB's backend database, created with the others when FerretDB will run on PostgreSQL.
  if ferretdb_on_postgresql && [[ " $PG_EXTRA_DATABASES " != *" $FERRETDB_PG_DATABASE "* ]]; then
    PG_EXTRA_DATABASES+=" $FERRETDB_PG_DATABASE"
  fi
  if port_open "$PG_PORT"; then
    pg_ours_running && PG_NOTE='' || PG_NOTE='(reused)'
    pg_ensure_objects
    return 0
  fi
  if ! bin=$(pg_bin_dir); then
    apt_install postgresql-15
    # the Debian package may have created and started its own "main" cluster on this port
    if port_open "$PG_PORT"; then
      PG_NOTE='(reused)'
      pg_ensure_objects
      return 0
    fi
    bin=$(pg_bin_dir) || die "PostgreSQL binaries not found after install"
  fi
  if is_root; then
    id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' OS user to run initdb as"
  fi
  mkdir -p "$PGDATA_DIR" "$PG_SOCK_DIR"
  [[ $PG_HOME == "$DATA" ]] || log "PostgreSQL files in $PG_HOME (the postgres OS user cannot reach $DATA)"
  touch "$logfile"
  if is_root; then
    [[ $(stat -c %U "$PGDATA_DIR") == postgres ]] || chown -R postgres:postgres "$PGDATA_DIR"
    chown postgres:postgres "$PG_SOCK_DIR" "$logfile"
    runuser -u postgres -- test -w "$PGDATA_DIR" ||
      die "the postgres OS user cannot write $PGDATA_DIR (a parent directory is not world-traversable?)"
  fi
  chmod 700 "$PGDATA_DIR"
  if [[ ! -s $PGDATA_DIR/PG_VERSION ]]; then
    log "initdb $PGDATA_DIR"
    run_as_pg "$bin/initdb" -D "$PGDATA_DIR" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      --encoding=UTF8 --locale=C.UTF-8 --no-instructions >>"$logfile" 2>&1 || {
      log_tail "$logfile"
      die "initdb failed"
    }
  fi
  log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
  run_as_pg "$bin/pg_ctl" -D "$PGDATA_DIR" -l "$logfile" -w -t "$WAIT" start -o "-k '$PG_SOCK_DIR' \
-c listen_addresses=127.0.0.1 -p $PG_PORT -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
-c max_connections=$PG_MAX_CONNECTIONS" >/dev/null 9>&- || {
    log_tail "$logfile"
    die "PostgreSQL did not start"
  }
  wait_for postgres "$WAIT" "$logfile" "$bin/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" || exit 1
  PG_NOTE=''
  pg_ensure_objects
}

pg_down() {
  local bin
  pg_ours_running || return 0
  bin=$(pg_bin_dir) || die "pg_ctl not found"
  log "stopping PostgreSQL"
  run_as_pg "$bin/pg_ctl" -D "$PGDATA_DIR" -m fast -w -t "$WAIT" stop >/dev/null
}

# ---------------------------------------------------------------------------------------------- redis

REDIS_PIDFILE=$PIDS/redis.pid

redis_ping() { # pure bash: PING over /dev/tcp, expect +PONG
  (
    exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT" || exit 1
    printf 'PING\r\n' >&3
    IFS= read -r -t 2 reply <&3 || exit 1
    [[ $reply == +PONG* ]]
  ) 2>/dev/null
}

redis_up() {
  local logfile=$LOGS/redis.log
  if port_open "$REDIS_PORT"; then
    pid_running "$REDIS_PIDFILE" redis-server && REDIS_NOTE='' || REDIS_NOTE='(reused)'
    return 0
  fi
  if ! command -v redis-server >/dev/null; then
    apt_install redis-server
    if port_open "$REDIS_PORT"; then # the Debian package may start its own service
      REDIS_NOTE='(reused)'
      return 0
    fi
  fi
  mkdir -p "$DATA/redis"
  log "starting Redis on 127.0.0.1:$REDIS_PORT"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes --dir "$DATA/redis" \
    --pidfile "$REDIS_PIDFILE" --logfile "$logfile" --save '' --appendonly no </dev/null >/dev/null 9>&- ||
    die "redis-server failed to start"
  wait_for redis "$WAIT" "$logfile" redis_ping || exit 1
  REDIS_NOTE=''
}

redis_down() { stop_pidfile Redis "$REDIS_PIDFILE" redis-server; }

# ------------------------------------------------------------------------------------------- rabbitmq

RMQ_BASE=$DATA/rabbitmq
RMQ_PROMETHEUS_PORT=${PARLEY_RABBITMQ_PROMETHEUS_PORT:-15692}
RMQ_PIDFILE=$PIDS/rabbitmq.pid
RMQ_LOGDIR=$LOGS/rabbitmq
RMQ_STARTLOG=$LOGS/rabbitmq-startup.log
RMQ_ENV=(
  "HOME=$RMQ_BASE/home" # keeps the Erlang cookie project-local; ctl/diagnostics use the same
  "RABBITMQ_NODENAME=$RMQ_NODENAME"
  "RABBITMQ_NODE_IP_ADDRESS=127.0.0.1"
  "RABBITMQ_NODE_PORT=$AMQP_PORT"
  "RABBITMQ_DIST_PORT=$((AMQP_PORT + 20000))"
  "RABBITMQ_MNESIA_BASE=$RMQ_BASE/mnesia"
  "RABBITMQ_LOG_BASE=$RMQ_LOGDIR"
  "RABBITMQ_PID_FILE=$RMQ_PIDFILE"
  "RABBITMQ_ENABLED_PLUGINS_FILE=$RMQ_BASE/enabled_plugins"
  "RABBITMQ_CONFIG_FILE=$RMQ_BASE/rabbitmq.conf"
  "RABBITMQ_ADVANCED_CONFIG_FILE=$RMQ_BASE/advanced.config"
  "RABBITMQ_CONF_ENV_FILE=$RMQ_BASE/rabbitmq-env.conf" # instead of /etc/rabbitmq/rabbitmq-env.conf
  "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}"
  "ERL_EPMD_ADDRESS=127.0.0.1"
)

# Debian's /usr/sbin/rabbitmq* wrappers switch to the rabbitmq user and /var/lib/rabbitmq: call the real
# scripts so the node runs as us, with our environment.
rmq_bin_dir() {
  if [[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]]; then
    echo /usr/lib/rabbitmq/bin
  elif command -v rabbitmq-server >/dev/null; then
    dirname "$(command -v rabbitmq-server)"
  else
    return 1
  fi
}

rmq() {
  local cmd=$1
  shift
  env "${RMQ_ENV[@]}" "$(rmq_bin_dir)/$cmd" "$@"
}

rmq_ours_running() { pid_running "$RMQ_PIDFILE" beam; }
rmq_launcher_running() { pid_running "$PIDS/rabbitmq-launcher.pid" rabbitmq-server; }

rmq_mgmt_ok() {
  curl -fsS -m 5 -o /dev/null -u guest:guest "http://127.0.0.1:$RMQ_MGMT_PORT/api/overview"
}

rmq_ready() { rmq_mgmt_ok && rmq rabbitmq-diagnostics -q ping; }

# rmq_start: returns without waiting (rmq_wait does), so the node boots while the other servers start
RMQ_STARTED=0
rmq_start() {
  if port_open "$AMQP_PORT"; then
    rmq_ours_running && RMQ_NOTE='' || RMQ_NOTE='(reused)'
    return 0
  fi
  if rmq_ours_running || rmq_launcher_running; then # ours, still booting
    RMQ_NOTE=''
    return 0
  fi
  if ! rmq_bin_dir >/dev/null; then
    apt_install rabbitmq-server
    if port_open "$AMQP_PORT"; then # the Debian package may start the system node
      RMQ_NOTE='(reused)'
      return 0
    fi
  fi
  mkdir -p "$RMQ_BASE/home" "$RMQ_BASE/mnesia" "$RMQ_LOGDIR"
  chmod 700 "$RMQ_BASE/home"
  echo '[rabbitmq_management,rabbitmq_prometheus].' >"$RMQ_BASE/enabled_plugins"
  cat >"$RMQ_BASE/rabbitmq.conf" <<CONF
# generated by scripts/infra.sh
listeners.tcp.default = 127.0.0.1:$AMQP_PORT
management.tcp.ip = 127.0.0.1
management.tcp.port = $RMQ_MGMT_PORT
prometheus.tcp.ip = 127.0.0.1
prometheus.tcp.port = $RMQ_PROMETHEUS_PORT
CONF
  echo '# generated by scripts/infra.sh (settings come from the environment)' >"$RMQ_BASE/rabbitmq-env.conf"
  port_open 4369 || touch "$PIDS/epmd.started-by-infra"
  log "starting RabbitMQ node $RMQ_NODENAME on 127.0.0.1:$AMQP_PORT (management $RMQ_MGMT_PORT)"
  rm -f "$RMQ_PIDFILE"
  start_bg "$PIDS/rabbitmq-launcher.pid" "$RMQ_STARTLOG" env "${RMQ_ENV[@]}" "$(rmq_bin_dir)/rabbitmq-server"
  RMQ_STARTED=1
  RMQ_NOTE=''
}

rmq_wait() {
  local launcher deadline logs="$RMQ_STARTLOG $RMQ_LOGDIR/$RMQ_NODENAME.log"
  if ((RMQ_STARTED == 1)); then
    launcher=$(cat "$PIDS/rabbitmq-launcher.pid")
    deadline=$((SECONDS + RMQ_WAIT))
    until rmq_mgmt_ok >/dev/null 2>&1; do
      if ! alive "$launcher" && ! rmq_ours_running; then
        log "RabbitMQ exited during startup"
        # shellcheck disable=SC2086
        log_tail $logs
        exit 1
      fi
      if ((SECONDS >= deadline)); then
        log "RabbitMQ did not become ready within ${RMQ_WAIT}s"
        # shellcheck disable=SC2086
        log_tail $logs
        exit 1
      fi
      sleep 1
    done
    wait_for rabbitmq 30 "$logs" rmq rabbitmq-diagnostics -q ping || exit 1
    return 0
  fi
  rmq_mgmt_ok 2>/dev/null && return 0
  if rmq_ours_running || rmq_launcher_running; then
    wait_for rabbitmq "$RMQ_WAIT" "$logs" rmq_ready || exit 1
    return 0
  fi
  # a reused node without the management plugin (e.g. the Debian system service)
  if is_root && command -v rabbitmq-plugins >/dev/null; then
    log "enabling rabbitmq_management on the reused RabbitMQ node"
    rabbitmq-plugins enable rabbitmq_management </dev/null >/dev/null 9>&-
    wait_for rabbitmq-management "$WAIT" "/var/log/rabbitmq/rabbit@$(hostname -s).log" rmq_mgmt_ok || exit 1
    return 0
  fi
  log "RabbitMQ on port $AMQP_PORT is not ours and its management API (port $RMQ_MGMT_PORT) does not answer."
  printf '  Run: sudo rabbitmq-plugins enable rabbitmq_management\n' >&2
  exit 1
}

rmq_prometheus_ok() { curl -fsS -m 5 -o /dev/null "http://127.0.0.1:$RMQ_PROMETHEUS_PORT/metrics/detailed?family=queue_coarse_metrics"; }

# rmq_prometheus: enables rabbitmq_prometheus on a node of ours started before it was in enabled_plugins
# (the listener settings are applied first: the node read rabbitmq.conf before the plugin existed there).
rmq_prometheus() {
  rmq_prometheus_ok 2>/dev/null && return 0
  if ! rmq_ours_running; then
    log "RabbitMQ is not ours: enable rabbitmq_prometheus on it for the consumer-lag alert (queue depths)"
    return 0
  fi
  log "enabling rabbitmq_prometheus on 127.0.0.1:$RMQ_PROMETHEUS_PORT"
  rmq rabbitmqctl -q eval \
    "application:set_env(rabbitmq_prometheus, tcp_config, [{ip, \"127.0.0.1\"}, {port, $RMQ_PROMETHEUS_PORT}])." \
    </dev/null >/dev/null
  rmq rabbitmq-plugins -q enable rabbitmq_prometheus </dev/null >/dev/null 9>&-
  wait_for rabbitmq-prometheus "$WAIT" "$RMQ_LOGDIR/$RMQ_NODENAME.log" rmq_prometheus_ok || exit 1
}

rmq_down() {
  local epmd
  if rmq_ours_running; then
    log "stopping RabbitMQ node $RMQ_NODENAME"
    timeout "$((WAIT + 30))" env "${RMQ_ENV[@]}" "$(rmq_bin_dir)/rabbitmqctl" -q stop "$RMQ_PIDFILE" \
      </dev/null >/dev/null 2>&1 || stop_pidfile RabbitMQ "$RMQ_PIDFILE" beam
  fi
  stop_pidfile 'RabbitMQ launcher' "$PIDS/rabbitmq-launcher.pid" rabbitmq-server
  rm -f "$RMQ_PIDFILE"
  # epmd outlives the node; stop it only if we started it (epmd refuses while other nodes are registered)
  if [[ -f $PIDS/epmd.started-by-infra ]]; then
    if epmd=$(command -v epmd); then ERL_EPMD_ADDRESS=127.0.0.1 "$epmd" -kill >/dev/null 2>&1 || true; fi
    rm -f "$PIDS/epmd.started-by-infra"
  fi
}

# -------------------------------------------------------------------------------------------- mongodb

MONGO_PIDFILE=$PIDS/mongo.pid

ferretdb_works() { [[ -x $1 && $("$1" --version 2>/dev/null) == *"v$FERRETDB_VERSION"* ]]; }

# ferretdb_bin: print the path of a working FerretDB binary, building it into .cache/bin once
ferretdb_bin() {
  local bin=${PARLEY_FERRETDB_BIN:-$CACHE/bin/ferretdb} go src buildlog=$LOGS/ferretdb-build.log
  if ferretdb_works "$bin"; then
    echo "$bin"
    return 0
  fi
  if command -v ferretdb >/dev/null && ferretdb_works "$(command -v ferretdb)"; then
    command -v ferretdb
    return 0
  fi
  bin=$CACHE/bin/ferretdb
  mkdir -p "$CACHE/bin"
  go=$(go_bin)
  log "building FerretDB v$FERRETDB_VERSION into $bin with $go (1-3 min, log: $buildlog)"
  # From the module source rather than `go install`: a binary built that way panics without
  # build/version/version.txt, and some proxies refuse the version list `go install` asks for.
  src=$(go_module_dir "github.com/FerretDB/FerretDB@v$FERRETDB_VERSION")
  echo "v$FERRETDB_VERSION" >"$src/build/version/version.txt"
  (cd "$src" && GOTOOLCHAIN=auto GOFLAGS=-buildvcs=false "$go" build -o "$bin.tmp" ./cmd/ferretdb) \
    >>"$buildlog" 2>&1 || {
    log_tail "$buildlog"
    die "building FerretDB failed"
  }
  mv "$bin.tmp" "$bin"
  ferretdb_works "$bin" || die "the FerretDB binary $bin does not run"
  echo "$bin"
}

# ferretdb_on_postgresql : FerretDB (no mongod) will run on the PostgreSQL backend
ferretdb_on_postgresql() {
  case $FERRETDB_HANDLER in
  postgresql) ! command -v mongod >/dev/null ;;
  sqlite) return 1 ;;
  *) die "PARLEY_FERRETDB_HANDLER must be postgresql or sqlite, not '$FERRETDB_HANDLER'" ;;
  esac
}

# mongo_ours_handler : the --handler of the FerretDB this script started (empty for mongod or none)
mongo_ours_handler() {
  local cmdline
  pid_running "$MONGO_PIDFILE" ferretdb || return 0
  cmdline=$(tr '\0' ' ' <"/proc/$(head -n 1 "$MONGO_PIDFILE" | tr -dc '0-9')/cmdline" 2>/dev/null) || return 0
  [[ $cmdline =~ --handler=([a-z]+) ]] && echo "${BASH_REMATCH[1]}"
}

mongo_note() {
  local handler
  handler=$(mongo_ours_handler)
  if [[ -n $handler ]]; then
    MONGO_NOTE="(ferretdb $FERRETDB_VERSION / $handler)"
  elif pid_running "$MONGO_PIDFILE" mongod; then
    MONGO_NOTE='(mongod)'
  else
    MONGO_NOTE='(reused)'
  fi
}

# ferretdb_pg_tune : indexes FerretDB's equality filters can use (scripts/ferretdb-postgresql.sql) in its
# backend database; restarts our running FerretDB the first time, as only new connections get custom plans
ferretdb_pg_tune() {
  local psql tuned
  psql=$(psql_bin) || die "psql not found"
  local pg=(env "PGPASSWORD=$PG_PASSWORD" PGCONNECT_TIMEOUT=5 "$psql" -XqAt -v ON_ERROR_STOP=1 -h 127.0.0.1
    -p "$PG_PORT" -U "$PG_USER" -d "$FERRETDB_PG_DATABASE")
  tuned=$("${pg[@]}" -c "SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
    WHERE d.datname = current_database() AND 'plan_cache_mode=force_custom_plan' = ANY (s.setconfig)") ||
    die "cannot reach FerretDB's database $FERRETDB_PG_DATABASE on PostgreSQL port $PG_PORT"
  "${pg[@]}" -f "$ROOT/scripts/ferretdb-postgresql.sql" >/dev/null ||
    die "could not install FerretDB's index twins in $FERRETDB_PG_DATABASE (scripts/ferretdb-postgresql.sql)"
  if [[ $tuned == 0 && $(mongo_ours_handler) == postgresql ]]; then
    log "FerretDB's database is tuned now: restarting FerretDB for custom plans"
    mongo_down
  fi
}

mongo_up() {
  local logfile bin handler
  ferretdb_on_postgresql && ferretdb_pg_tune
  handler=$(mongo_ours_handler)
  # Ours on the other backend (e.g. SQLite from an earlier run): restart it, by its pidfile, on the wanted one.
  if [[ -n $handler && $handler != "$FERRETDB_HANDLER" ]] && ! command -v mongod >/dev/null; then
    log "FerretDB runs on $handler, PARLEY_FERRETDB_HANDLER is $FERRETDB_HANDLER: restarting it"
    mongo_down
  fi
  if port_open "$MONGO_PORT"; then
    mongo_note
    return 0
  fi
  if pid_running "$MONGO_PIDFILE" 'ferretdb|mongod'; then # ours, still starting
    wait_for mongodb "$WAIT" "$LOGS/ferretdb.log $LOGS/mongod.log" port_open "$MONGO_PORT" || exit 1
    mongo_note
    return 0
  fi
  if command -v mongod >/dev/null; then
    logfile=$LOGS/mongod.log
    mkdir -p "$DATA/mongo"
    log "starting mongod on 127.0.0.1:$MONGO_PORT"
    mongod --bind_ip 127.0.0.1 --port "$MONGO_PORT" --dbpath "$DATA/mongo" --fork --logpath "$logfile" \
      --logappend --pidfilepath "$MONGO_PIDFILE" </dev/null >/dev/null 9>&- || {
      log_tail "$logfile"
      die "mongod failed to start"
    }
  else
    logfile=$LOGS/ferretdb.log
    bin=$(ferretdb_bin)
    mkdir -p "$DATA/ferretdb-state"
    local backend=(--handler=sqlite --sqlite-url="file:$DATA/ferretdb/")
    if ferretdb_on_postgresql; then
      # The URL (with its password) goes in the environment, not on the command line `ps` shows.
      backend=(env "FERRETDB_POSTGRESQL_URL=postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$FERRETDB_PG_DATABASE"
        "$bin" --handler=postgresql)
    else
      mkdir -p "$DATA/ferretdb"
      backend=("$bin" "${backend[@]}")
    fi
    log "starting FerretDB ($FERRETDB_HANDLER backend) on 127.0.0.1:$MONGO_PORT"
    start_bg "$MONGO_PIDFILE" "$logfile" "${backend[@]}" \
      --listen-addr="127.0.0.1:$MONGO_PORT" --state-dir="$DATA/ferretdb-state" --telemetry=disable \
      --log-level=warn --debug-addr="$FERRETDB_DEBUG_ADDR"
  fi
  wait_for mongodb "$WAIT" "$logfile" port_open "$MONGO_PORT" || exit 1
  mongo_note
}

mongo_down() { stop_pidfile MongoDB "$MONGO_PIDFILE" 'ferretdb|mongod'; }

# ---------------------------------------------------------------------------------------- smtp (sink)

SMTP_PIDFILE=$PIDS/mail-sink.pid

mail_health() { curl -fsS -m 3 -o /dev/null "http://127.0.0.1:$MAIL_HTTP_PORT/health"; }

smtp_up() {
  local logfile=$LOGS/mail-sink.log bun
  if port_open "$SMTP_PORT"; then
    pid_running "$SMTP_PIDFILE" mail-sink && SMTP_NOTE='' || SMTP_NOTE='(reused)'
    mail_health 2>/dev/null || log "warning: something answers SMTP on $SMTP_PORT but not the mail API on $MAIL_HTTP_PORT"
    return 0
  fi
  if pid_running "$SMTP_PIDFILE" mail-sink; then # ours, still starting
    wait_for mail-sink "$WAIT" "$logfile" mail_health || exit 1
    SMTP_NOTE=''
    return 0
  fi
  bun=$(command -v bun || echo "${BUN_INSTALL:-$HOME/.bun}/bin/bun")
  [[ -x $bun ]] || die "bun is required for the SMTP sink (npm i -g bun@1.3.14)"
  if [[ ! -d packages/mail-sink/node_modules/smtp-server || ! -d packages/mail-sink/node_modules/mailparser ]]; then
    log "installing workspace dependencies (bun install) for packages/mail-sink"
    "$bun" install </dev/null >>"$logfile" 2>&1 || {
      log_tail "$logfile"
      die "bun install failed"
    }
  fi
  log "starting the SMTP sink on 127.0.0.1:$SMTP_PORT (messages API on $MAIL_HTTP_PORT)"
  start_bg "$SMTP_PIDFILE" "$logfile" env MAIL_SINK_SMTP_PORT="$SMTP_PORT" MAIL_SINK_HTTP_PORT="$MAIL_HTTP_PORT" \
    "$bun" "$ROOT/packages/mail-sink/src/index.ts"
  wait_for mail-sink "$WAIT" "$logfile" port_open "$SMTP_PORT" || exit 1
  wait_for mail-sink "$WAIT" "$logfile" mail_health || exit 1
  SMTP_NOTE=''
}

smtp_down() { stop_pidfile 'SMTP sink' "$SMTP_PIDFILE" mail-sink; }

# ---------------------------------------------------------------------------------------- s3 (versitygw)

S3_PIDFILE=$PIDS/versitygw.pid

versitygw_works() { [[ -x $1 && $("$1" --version 2>/dev/null) == *"v$VERSITYGW_VERSION"* ]]; }

# versitygw_bin : print the path of a working versitygw, building it into .cache/bin once per version
versitygw_bin() {
  local bin=$CACHE/bin/versitygw go src buildlog=$LOGS/versitygw-build.log
  if versitygw_works "$bin"; then
    echo "$bin"
    return 0
  fi
  mkdir -p "$CACHE/bin"
  go=$(go_bin)
  log "building versitygw v$VERSITYGW_VERSION into $bin with $go (2-6 min, log: $buildlog)"
  # From the module source (as FerretDB): some proxies refuse the version list `go install` asks for.
  src=$(go_module_dir "github.com/versity/versitygw@v$VERSITYGW_VERSION")
  (cd "$src" && GOTOOLCHAIN=auto GOFLAGS=-buildvcs=false timeout 1800 "$go" build -trimpath \
    -ldflags "-X=main.Version=v$VERSITYGW_VERSION" -o "$bin.tmp" ./cmd/versitygw) >>"$buildlog" 2>&1 || {
    log_tail "$buildlog"
    die "building versitygw failed"
  }
  mv "$bin.tmp" "$bin"
  versitygw_works "$bin" || die "the versitygw binary $bin does not run"
  echo "$bin"
}

s3_health() { curl -fsS -m 3 -o /dev/null "http://127.0.0.1:$S3_PORT/health"; }

# s3_buckets : the posix backend serves each top-level folder as a bucket
s3_buckets() {
  local bucket
  for bucket in $S3_BUCKETS; do mkdir -p "$DATA/s3/$bucket"; done
}

s3_up() {
  local logfile=$LOGS/versitygw.log bin
  mkdir -p "$DATA/s3"
  s3_buckets
  # Built even when a server already answers: tests start private ones from it (object store down).
  bin=$(versitygw_bin)
  if port_open "$S3_PORT"; then
    pid_running "$S3_PIDFILE" versitygw && S3_NOTE='' || S3_NOTE='(reused)'
    return 0
  fi
  if pid_running "$S3_PIDFILE" versitygw; then # ours, still starting
    wait_for versitygw "$WAIT" "$logfile" s3_health || exit 1
    S3_NOTE=''
    return 0
  fi
  log "starting versitygw (S3) on 127.0.0.1:$S3_PORT, buckets in $DATA/s3"
  # The credentials go in the environment, not on the command line `ps` shows.
  start_bg "$S3_PIDFILE" "$logfile" env "ROOT_ACCESS_KEY_ID=$S3_ACCESS_KEY" "ROOT_SECRET_ACCESS_KEY=$S3_SECRET_KEY" \
    "$bin" --port "127.0.0.1:$S3_PORT" --health /health --keep-alive --quiet posix "$DATA/s3"
  wait_for versitygw "$WAIT" "$logfile" s3_health || exit 1
  S3_NOTE=''
}

s3_down() { stop_pidfile versitygw "$S3_PIDFILE" versitygw; }

# ------------------------------------------------------------------------------------------- commands

url_line() { # NAME URL [NOTE...]
  local name=$1 url=$2 notes
  shift 2
  notes=$(printf '%s ' "$@" | tr -s ' ')
  notes=${notes% }
  printf '%-9s %s%s\n' "$name" "$url" "${notes:+  $notes}"
}

print_urls() {
  url_line postgres "$(pg_url)" "${PG_NOTE:-}"
  url_line redis "redis://127.0.0.1:$REDIS_PORT" "${REDIS_NOTE:-}"
  url_line rabbitmq "amqp://guest:guest@127.0.0.1:$AMQP_PORT" "(management http://127.0.0.1:$RMQ_MGMT_PORT)" \
    "${RMQ_NOTE:-}"
  url_line mongodb "mongodb://127.0.0.1:$MONGO_PORT" "${MONGO_NOTE:-}"
  url_line smtp "smtp://127.0.0.1:$SMTP_PORT" "(messages http://127.0.0.1:$MAIL_HTTP_PORT/api/v1/messages)" \
    "${SMTP_NOTE:-}"
  url_line s3 "http://127.0.0.1:$S3_PORT" "(buckets: $S3_BUCKETS)" "${S3_NOTE:-}"
}

cmd_up() {
  ensure_dirs
  lock
  need_tools curl:curl
  pg_up
  redis_up
  rmq_start
  mongo_up
  smtp_up
  s3_up
  rmq_wait
  rmq_prometheus
  print_urls
}

cmd_down() {
  ensure_dirs
  lock
  s3_down
  smtp_down
  mongo_down
  rmq_down
  redis_down
  pg_down
  log "stopped everything this script had started (reused servers are left alone)"
}

# status_line NAME UP(0/1) OURS(0/1) URL
status_line() {
  local state=down owner=''
  if (($2 == 0)); then
    state=up
    if (($3 == 0)); then owner='(ours)'; else owner='(reused)'; fi
  fi
  printf '%-9s %-5s %-9s %s\n' "$1" "$state" "$owner" "$4"
}

cmd_status() {
  local down=0 up ours
  roster_databases
  up=1 ours=1
  port_open "$PG_PORT" && up=0
  pg_ours_running && ours=0
  status_line postgres $up $ours "$(pg_url)"
  ((up == 0)) || down=1

  up=1 ours=1
  redis_ping 2>/dev/null && up=0
  pid_running "$REDIS_PIDFILE" redis-server && ours=0
  status_line redis $up $ours "redis://127.0.0.1:$REDIS_PORT"
  ((up == 0)) || down=1

  up=1 ours=1
  port_open "$AMQP_PORT" && rmq_mgmt_ok 2>/dev/null && up=0
  rmq_ours_running && ours=0
  status_line rabbitmq $up $ours "amqp://guest:guest@127.0.0.1:$AMQP_PORT  (management http://127.0.0.1:$RMQ_MGMT_PORT)"
  ((up == 0)) || down=1

  up=1 ours=1
  port_open "$MONGO_PORT" && up=0
  pid_running "$MONGO_PIDFILE" 'ferretdb|mongod' && ours=0
  mongo_note
  status_line mongodb $up $ours "mongodb://127.0.0.1:$MONGO_PORT  ${MONGO_NOTE/(reused)/}"
  ((up == 0)) || down=1

  up=1 ours=1
  port_open "$SMTP_PORT" && mail_health 2>/dev/null && up=0
  pid_running "$SMTP_PIDFILE" mail-sink && ours=0
  status_line smtp $up $ours "smtp://127.0.0.1:$SMTP_PORT  (messages http://127.0.0.1:$MAIL_HTTP_PORT/api/v1/messages)"
  ((up == 0)) || down=1

  up=1 ours=1
  port_open "$S3_PORT" && s3_health 2>/dev/null && up=0
  pid_running "$S3_PIDFILE" versitygw && ours=0
  status_line s3 $up $ours "http://127.0.0.1:$S3_PORT  (buckets: $S3_BUCKETS)"
  ((up == 0)) || down=1
  return $down
}

case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
*)
  echo "usage: bash scripts/infra.sh up|down|status" >&2
  exit 2
  ;;
esac
