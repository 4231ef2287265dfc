#!/usr/bin/env bash
# Private PostgreSQL cluster for development and tests (../shared/DEPENDENCIES.md section 4).
#
#   scripts/pg.sh start DIR [--test]   initdb DIR if it holds no cluster, start the server on a free
#                                      loopback port (the last one, DIR/port, unless something listens
#                                      on it; connections of the last run still closing do not count),
#                                      Unix socket inside DIR; print the libpq URI on stdout.
#                                      --test: fsync/synchronous_commit/full_page_writes off, for
#                                      throwaway clusters only.
#   scripts/pg.sh stop DIR             fast shutdown by the PID in DIR/postmaster.pid; waits until gone.
#   scripts/pg.sh url DIR              print the URI of the running cluster (exit 1 if not running).
#   scripts/pg.sh status DIR           exit 0 if the cluster in DIR is running, 1 if not.
#
# The URI is postgresql://postgres@127.0.0.1:PORT/postgres (superuser, trust auth, loopback only).
# As root the server runs as the `postgres` user (initdb refuses root), so DIR is chowned to it and
# every parent of DIR must be traversable by it. As any other user it runs as that user.
# Messages go to stderr; stdout carries only the URI.
set -euo pipefail

die() { echo "pg.sh: $*" >&2; exit 1; }
log() { echo "pg.sh: $*" >&2; }

usage() {
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

pg_bindir() {
  if [ -n "${PG_BINDIR:-}" ]; then echo "$PG_BINDIR"; return; fi
  local d
  # Newest installed major version first.
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -V -r); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return; fi
  done
  if command -v pg_ctl >/dev/null && command -v initdb >/dev/null; then
    dirname "$(command -v pg_ctl)"; return
  fi
  die "PostgreSQL server binaries not found (run scripts/setup.sh, or set PG_BINDIR)"
}

# Runs a server binary as the cluster owner, from a directory it can enter.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    (cd / && runuser -u postgres -- "$@")
  else
    (cd / && "$@")
  fi
}

# PID of the running postmaster of DIR, or nothing.
running_pid() {
  local dir=$1 pid
  [ -f "$dir/postmaster.pid" ] || return 0
  pid=$(head -n1 "$dir/postmaster.pid" 2>/dev/null || true)
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  if kill -0 "$pid" 2>/dev/null && [ "$(state_of "$pid")" != Z ]; then echo "$pid"; fi
}

state_of() { awk '{print $3}' "/proc/$1/stat" 2>/dev/null || echo Z; }

# The port the running postmaster of DIR listens on (line 4 of postmaster.pid), else DIR/port.
port_of() {
  local dir=$1 p=""
  if [ -f "$dir/postmaster.pid" ]; then p=$(sed -n 4p "$dir/postmaster.pid" 2>/dev/null || true); fi
  if ! [[ "$p" =~ ^[0-9]+$ ]] && [ -f "$dir/port" ]; then p=$(cat "$dir/port"); fi
  [[ "$p" =~ ^[0-9]+$ ]] && echo "$p"
}

uri_for() { echo "postgresql://postgres@127.0.0.1:$1/postgres"; }

# True if a socket LISTENS on TCP port PORT (any address). Connections on the port do not make it
# busy: after a stop, the old server's connections linger in FIN-WAIT/TIME-WAIT for up to a minute,
# and the server binds past them (PostgreSQL sets SO_REUSEADDR on its listening sockets), so a
# restart keeps its port. Anything else that still makes the bind fail is caught by the retry in
# cmd_start.
port_busy() {
  local port=$1 out
  if command -v ss >/dev/null && out=$(ss -Hltn "sport = :$port" 2>/dev/null); then
    [ -n "$out" ]
    return
  fi
  # No ss: a connect succeeds only if something listens (TIME-WAIT and FIN-WAIT sockets refuse).
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
  return 1
}

# A random port below Linux's ephemeral range (32768+), so outgoing connections do not take it.
random_port() { echo $(( 15000 + (RANDOM * 32768 + RANDOM) % 17000 )); }

check_traversable() {
  local dir=$1 d="" part
  [ "$(id -u)" -eq 0 ] || return 0
  # From / downwards, so the message names the first directory that blocks.
  local IFS=/
  for part in $(dirname "$dir"); do
    [ -n "$part" ] || continue
    d="$d/$part"
    if ! runuser -u postgres -- test -x "$d" 2>/dev/null; then
      die "user postgres cannot enter $d (mode $(stat -c %A "$d")), so it cannot reach $dir.
  Use a data directory outside it (for scripts/run.sh: TOLLGATE_PG_DIR=/var/tmp/tollgate-pg),
  or allow traversal: chmod o+x $d"
    fi
  done
}

cmd_start() {
  local dir=$1 test_mode=$2 bindir pid port tries opts log_file sockdir
  bindir=$(pg_bindir)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd -P)

  pid=$(running_pid "$dir")
  if [ -n "$pid" ]; then
    port=$(port_of "$dir") || die "cluster in $dir runs (pid $pid) but its port is unknown"
    log "already running in $dir (pid $pid, port $port)"
    uri_for "$port"
    return 0
  fi

  check_traversable "$dir"
  if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$dir"; fi
  chmod 0700 "$dir"

  if [ ! -f "$dir/PG_VERSION" ]; then
    if [ -n "$(ls -A "$dir")" ]; then
      die "$dir is not empty and holds no PostgreSQL cluster; refusing to initdb there"
    fi
    local initdb_opts=(-D "$dir" -U postgres -A trust -E UTF8 --locale=C)
    [ "$test_mode" = 1 ] && initdb_opts+=(--no-sync)
    log "initdb $dir"
    local out
    if ! out=$(as_owner "$bindir/initdb" "${initdb_opts[@]}" 2>&1); then
      echo "$out" >&2
      die "initdb failed"
    fi
  fi

  # Unix socket paths are limited to 107 bytes; a deep DIR gets no socket (TCP still works).
  sockdir=$dir
  if [ $(( ${#dir} + 20 )) -gt 100 ]; then
    sockdir=""
    log "note: $dir is too long for a Unix socket path; listening on TCP only"
  fi

  log_file="$dir/server.log"
  for tries in 1 2 3 4 5 6 7 8; do
    port=""
    if [ "$tries" -eq 1 ] && [ -f "$dir/port" ]; then
      port=$(cat "$dir/port")
      [[ "$port" =~ ^[0-9]+$ ]] || port=""
    fi
    if [ -z "$port" ] || port_busy "$port"; then
      port=$(random_port)
      while port_busy "$port"; do port=$(random_port); done
    fi
    opts="-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories='$sockdir'"
    if [ "$test_mode" = 1 ]; then
      opts+=" -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    fi
    if as_owner "$bindir/pg_ctl" -D "$dir" -l "$log_file" -w -t 60 -o "$opts" start >/dev/null 2>&1; then
      echo "$port" >"$dir/port"
      log "started in $dir on 127.0.0.1:$port (log $log_file)"
      uri_for "$port"
      return 0
    fi
    # Lost a race for the port (someone bound it between our check and the server's bind)? Retry.
    if tail -n 20 "$log_file" 2>/dev/null | grep -qiE 'could not (bind|create listen)|address already in use'; then
      log "port $port was taken, trying another"
      continue
    fi
    tail -n 20 "$log_file" >&2 2>/dev/null || true
    die "server failed to start (see $log_file)"
  done
  die "no free port found after $tries tries"
}

cmd_stop() {
  local dir=$1 pid i
  [ -d "$dir" ] || die "no such directory: $dir"
  pid=$(running_pid "$dir")
  if [ -z "$pid" ]; then
    log "not running in $dir"
    return 0
  fi
  # SIGINT = fast shutdown: roll back open transactions, disconnect clients, checkpoint, exit.
  kill -INT "$pid"
  for i in $(seq 1 300); do
    # postmaster.pid is removed last; a <defunct> entry may linger in ps (pitfall 11), ignore it.
    if [ ! -f "$dir/postmaster.pid" ] || [ -z "$(running_pid "$dir")" ]; then
      log "stopped $dir (pid $pid)"
      return 0
    fi
    sleep 0.1
  done
  log "still running after 30 s; sending SIGQUIT (immediate shutdown)"
  kill -QUIT "$pid" 2>/dev/null || true
  for i in $(seq 1 100); do
    [ -z "$(running_pid "$dir")" ] && { log "stopped $dir (pid $pid)"; return 0; }
    sleep 0.1
  done
  die "could not stop pid $pid"
}

cmd_url() {
  local dir=$1 port
  [ -n "$(running_pid "$dir")" ] || die "no cluster running in $dir"
  port=$(port_of "$dir") || die "cannot tell the port of the cluster in $dir"
  uri_for "$port"
}

[ $# -ge 2 ] || usage
action=$1
dir=$2
shift 2
test_mode=0
for a in "$@"; do
  case $a in
    --test) test_mode=1 ;;
    *) usage ;;
  esac
done
case $action in
  start) cmd_start "$dir" "$test_mode" ;;
  stop) cmd_stop "$dir" ;;
  url) cmd_url "$dir" ;;
  status) [ -n "$(running_pid "$dir")" ] ;;
  *) usage ;;
esac
