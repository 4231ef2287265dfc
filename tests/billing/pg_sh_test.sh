#!/usr/bin/env bash
# scripts/pg.sh: a cluster restarted right after a stop keeps its port although the old server's
# connections still linger on it (FIN-WAIT/TIME-WAIT); a port something else LISTENS on is not
# reused. Needs the PostgreSQL server binaries and psql (label pg); starts and stops its own clusters.
#   tests/billing/pg_sh_test.sh [PATH/TO/pg.sh]
set -euo pipefail

pg_sh=${1:-$(cd "$(dirname "$0")/../.." && pwd)/scripts/pg.sh}
fail() { echo "FAIL: $*" >&2; exit 1; }
port_of_uri() { sed -E 's|.*:([0-9]+)/postgres$|\1|' <<<"$1"; }

a=$(mktemp -d /tmp/tg_pgsh_a.XXXXXX)
b=$(mktemp -d /tmp/tg_pgsh_b.XXXXXX)
chmod 0755 "$a" "$b"  # pg.sh tightens them; as root, user postgres must be able to enter
hold_pid=""
cleanup() {
  [ -n "$hold_pid" ] && kill "$hold_pid" 2>/dev/null || true
  "$pg_sh" stop "$a" >/dev/null 2>&1 || true
  "$pg_sh" stop "$b" >/dev/null 2>&1 || true
  rm -rf "$a" "$b"
}
trap cleanup EXIT

command -v psql >/dev/null || fail "psql not found"

uri=$("$pg_sh" start "$a" --test)
port=$(port_of_uri "$uri")
[ "$(psql "$uri" -tAc 'SELECT 1')" = 1 ] || fail "cannot query the first server"

# A client that stays connected through the stop: the server closes first, so its side of the
# connection lingers on the port after it exited (FIN-WAIT-2, then TIME-WAIT).
(sleep 5 | psql "$uri" -q -f - >/dev/null 2>&1) &
hold_pid=$!
for _ in $(seq 1 50); do
  [ "$(psql "$uri" -tAc "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")" -ge 2 ] && break
  sleep 0.1
done
psql "$uri" -tAc 'SELECT 1' >/dev/null
"$pg_sh" stop "$a" 2>/dev/null

if command -v ss >/dev/null; then
  lingering=$(ss -Htan "sport = :$port" | grep -v LISTEN || true)
  [ -n "$lingering" ] || fail "test setup: expected connections lingering on port $port after the stop"
  echo "lingering on $port after stop: $(awk '{print $1}' <<<"$lingering" | sort | uniq -c | xargs)"
fi

uri2=$("$pg_sh" start "$a" --test)
[ "$(port_of_uri "$uri2")" = "$port" ] || fail "restart moved from port $port to $(port_of_uri "$uri2")"
[ "$(psql "$uri2" -tAc 'SELECT 2')" = 2 ] || fail "cannot query the restarted server"
"$pg_sh" stop "$a" 2>/dev/null
echo "restart kept port $port"

# Something else listening on the saved port: a different port is chosen.
uri_b=$("$pg_sh" start "$b" --test)
port_b=$(port_of_uri "$uri_b")
echo "$port_b" >"$a/port"
uri3=$("$pg_sh" start "$a" --test)
[ "$(port_of_uri "$uri3")" != "$port_b" ] || fail "started on port $port_b, where another server listens"
[ "$(psql "$uri3" -tAc 'SELECT 3')" = 3 ] || fail "cannot query the server started on a new port"
echo "saved port $port_b busy (listening): started on $(port_of_uri "$uri3") instead"
echo PASS
