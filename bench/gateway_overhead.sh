#!/usr/bin/env bash
# Gateway overhead benchmark (issue 12): Tollgate against a plain nginx reverse-proxy hop, side by
# side, on loopback, non-streamed calls.
#
#   cmake --build build --target tollgate && bench/gateway_overhead.sh
#
# What it does, all on 127.0.0.1, in a temporary directory it removes at the end:
#   - installs nginx and wrk from Debian if they are missing (apt-get, as root);
#   - a mock upstream: nginx (one worker) answering POST /v1/chat/completions with a fixed
#     OpenAI chat.completion of about 660 bytes with usage (gateway_overhead/answer.json);
#   - a private PostgreSQL (scripts/pg.sh, durable settings), database `tollgate`, migrated, one
#     prepaid API key (tollgate keys create --credits 1000);
#   - four targets:
#       mock        the mock directly (the floor)
#       nginx       nginx as a plain reverse proxy to the mock: one worker, upstream keep-alive,
#                   access log on (gateway_overhead/proxy.conf.in)
#       tollgate    Tollgate, POST /v1/chat/completions with the real key: one I/O thread
#                   (server.io_threads: 1), authentication, admission, routing, metering (usage
#                   spool, rows written behind to PostgreSQL), access log on; the mock as an
#                   openai_compatible provider without preset (gateway_overhead/tollgate.yaml)
#       tollgate-anthropic   the same Tollgate, POST /v1/messages (Anthropic shape), translated
#                   to the OpenAI-style mock and back
#   - a warm-up (every target, BENCH_WARMUP seconds at 32 connections), then BENCH_ROUNDS rounds
#     (default 3); each round runs every target (in an order rotated per round) with wrk at 32
#     connections and at 1 connection, BENCH_SECONDS each (default 5). wrk uses 1 thread: the
#     machines this runs on have 2 cores, one for the server under test (Tollgate and nginx each
#     serve on one thread) and one for the load generator, which is never saturated by one thread
#     at these rates. Same request bytes and headers for every target (gateway_overhead/post.lua).
#   - CPU per request: utime+stime of the serving process from /proc/PID/stat (nginx: its worker;
#     Tollgate: the whole process, all threads) before and after each run, divided by the
#     requests wrk completed. PostgreSQL's work for the usage rows is not included.
#     Peak memory: VmHWM of the same process after the last round.
#   - errors: wrk's non-2xx (status >= 400) plus socket errors (connect, read, write, timeout),
#     summed over all runs.
#   - metering: after the runs Tollgate is stopped gracefully (which flushes the write-behind
#     usage writer) and usage_events is counted; it must equal the calls the mock saw from
#     Tollgate (its own access log), and be at least wrk's completed Tollgate requests (the
#     difference, at most the connections of each run, are calls in flight when wrk stopped).
#   - prints a markdown table on stdout: per target the medians over the rounds, and Tollgate's
#     ratios to nginx (per-round ratio, median over rounds); the header line has date and
#     machine. Progress and every single run go to stderr.
# Total time with the defaults: about 3 minutes (4 targets x 2 runs x 5 s x 3 rounds + warm-up
# + setup); the whole script is killed after BENCH_TIMEOUT seconds (default 600).
#
# Environment: TOLLGATE_BIN (default build/bin/tollgate), BENCH_SECONDS (5), BENCH_ROUNDS (3),
# BENCH_WARMUP (2), BENCH_CONNECTIONS (32), BENCH_TIMEOUT (600), BENCH_KEEP=1 (keep the
# temporary directory: configs, logs, raw results).
#
# TODO (issue 12, not measured yet): the streaming mock (64 chunks 20 ms apart) with added time
# to first token, added inter-chunk delay and no chunk held back; 10,000 concurrent open streams
# through Tollgate and memory per stream; idle memory and time from start to ready; a callgrind
# instruction count per request.
set -euo pipefail

# The whole run is bounded: re-run this script under timeout (same PID, exec).
if [ -z "${BENCH_INNER:-}" ]; then
  export BENCH_INNER=1
  exec timeout --foreground -s TERM -k 30 "${BENCH_TIMEOUT:-600}" "$0" "$@"
fi

root=$(cd "$(dirname "$0")/.." && pwd)
here=$root/bench/gateway_overhead
bin=${TOLLGATE_BIN:-$root/build/bin/tollgate}
secs=${BENCH_SECONDS:-5}
rounds=${BENCH_ROUNDS:-3}
warmup=${BENCH_WARMUP:-2}
conns=${BENCH_CONNECTIONS:-32}

say() { echo "gateway_overhead: $*" >&2; }
die() { echo "gateway_overhead: $*" >&2; exit 1; }

[ -x "$bin" ] || die "$bin not built (cmake --build build --target tollgate), or set TOLLGATE_BIN"

# ---------------------------------------------------------------- tools
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || die "missing: ${missing[*]} (apt-get install ${missing[*]}, as root)"
  say "installing ${missing[*]} from Debian"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; then
    apt-get update >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
psql_bin=$(command -v psql || ls /usr/lib/postgresql/*/bin/psql 2>/dev/null | sort -V | tail -n1)
[ -n "$psql_bin" ] || die "psql not found (run scripts/setup.sh)"
psql_q() { "$psql_bin" -X -q -v ON_ERROR_STOP=1 "$@"; }

# ---------------------------------------------------------------- cleanup (by PID)
dir=$(mktemp -d /tmp/tollgate-overhead.XXXXXX)
chmod 755 "$dir"
pg_started=0
tg_pid=""
mock_pid=""
proxy_pid=""
wrk_pid=""
ok=0

# Stops PID (our child) with SIG, waits up to SECS, then SIGKILL.
stop_pid() { # PID SIG SECS
  local pid=$1 i
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill "-$2" "$pid" 2>/dev/null || true
  for i in $(seq 1 $(( $3 * 10 ))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    say "pid $pid still running after $3 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}
# An nginx master and its workers (the workers exit with the master; any left are killed by PID).
stop_nginx() { # MASTER_PID
  local master=$1 workers w
  [ -n "$master" ] || return 0
  workers=$(pgrep -P "$master" 2>/dev/null || true)
  stop_pid "$master" TERM 10
  for w in $workers; do
    if kill -0 "$w" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$w/stat" 2>/dev/null)" != Z ]; then
      kill -KILL "$w" 2>/dev/null || true
    fi
  done
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_pid "$wrk_pid" TERM 5
  stop_pid "$tg_pid" TERM 20
  stop_nginx "$proxy_pid"
  stop_nginx "$mock_pid"
  if [ "$pg_started" = 1 ]; then "$root/scripts/pg.sh" stop "$dir/pg" >/dev/null 2>&1 || true; fi
  if [ "$ok" = 1 ] && [ "${BENCH_KEEP:-0}" != 1 ]; then
    rm -rf "$dir"
  else
    say "kept $dir (logs, configs, raw results)"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- ports, configs
port_busy() { [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }
taken=" "
free_port() {
  local p
  while :; do
    p=$(( 15000 + (RANDOM * 32768 + RANDOM) % 17000 ))
    [[ "$taken" == *" $p "* ]] && continue
    port_busy "$p" && continue
    taken+="$p "
    echo "$p"
    return
  done
}
mock_port=$(free_port); taken+="$mock_port "
mock_tg_port=$(free_port); taken+="$mock_tg_port "
proxy_port=$(free_port); taken+="$proxy_port "

shopt -u patsub_replacement 2>/dev/null || true
answer=$(cat "$here/answer.json")
fill() { # TEMPLATE -> stdout
  local t
  t=$(cat "$1")
  t=${t//@DIR@/$dir}
  t=${t//@MOCK_PORT@/$mock_port}
  t=${t//@MOCK_TG_PORT@/$mock_tg_port}
  t=${t//@PROXY_PORT@/$proxy_port}
  t=${t//@ANSWER@/$answer}
  printf '%s\n' "$t"
}
mkdir -p "$dir/nginx-tmp"
fill "$here/mock.conf.in" >"$dir/mock.conf"
fill "$here/proxy.conf.in" >"$dir/proxy.conf"

wait_http() { # URL PID WHAT [LOG]
  local i
  for i in $(seq 1 200); do
    kill -0 "$2" 2>/dev/null || { [ -n "${4:-}" ] && tail -n 20 "$4" >&2; die "$3 exited before it was ready"; }
    curl -s -o /dev/null -X POST -d '{}' "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  die "$3 not ready within 20 s"
}
worker_of() { # MASTER_PID
  local i w
  for i in $(seq 1 50); do
    w=$(pgrep -P "$1" | head -n1 || true)
    [ -n "$w" ] && { echo "$w"; return; }
    sleep 0.1
  done
  die "no nginx worker under pid $1"
}

# ---------------------------------------------------------------- mock and nginx proxy
setsid "$nginx_bin" -p "$dir" -c "$dir/mock.conf" -e "$dir/mock-error.log" >"$dir/mock.out" 2>&1 &
mock_pid=$!
wait_http "http://127.0.0.1:$mock_port/v1/chat/completions" "$mock_pid" "mock nginx" "$dir/mock-error.log"
wait_http "http://127.0.0.1:$mock_tg_port/v1/chat/completions" "$mock_pid" "mock nginx" "$dir/mock-error.log"
mock_worker=$(worker_of "$mock_pid")
# The readiness probe above is in the mock's Tollgate log: count only what comes after it.
mock_tg_probes=$(wc -l <"$dir/mock-tollgate-access.log")
setsid "$nginx_bin" -p "$dir" -c "$dir/proxy.conf" -e "$dir/proxy-error.log" >"$dir/proxy.out" 2>&1 &
proxy_pid=$!
wait_http "http://127.0.0.1:$proxy_port/v1/chat/completions" "$proxy_pid" "proxy nginx" "$dir/proxy-error.log"
proxy_worker=$(worker_of "$proxy_pid")
say "mock on :$mock_port (Tollgate's upstream :$mock_tg_port), worker pid $mock_worker; nginx proxy on :$proxy_port, worker pid $proxy_worker"

# ---------------------------------------------------------------- PostgreSQL, schema, key
pg_started=1
admin_url=$("$root/scripts/pg.sh" start "$dir/pg")
psql_q -d "$admin_url" -c 'CREATE DATABASE tollgate'
db_url=${admin_url%/*}/tollgate
export TOLLGATE_DATABASE_URL=$db_url
export TOLLGATE_SPOOL_DIR=$dir/spool
export BENCH_MOCK_TG_PORT=$mock_tg_port
unset TOLLGATE_ADMIN_TOKEN
"$bin" migrate >"$dir/migrate.log" 2>&1 || { cat "$dir/migrate.log" >&2; die "tollgate migrate failed"; }
key=$("$bin" keys create --name bench --credits 1000 2>>"$dir/migrate.log")
[[ "$key" == tg-* ]] || die "tollgate keys create printed no key"

# ---------------------------------------------------------------- Tollgate
setsid "$bin" serve --config "$here/tollgate.yaml" --listen 127.0.0.1:0 --port-file "$dir/tollgate.port" \
  >"$dir/tollgate.log" 2>&1 &
tg_pid=$!
for i in $(seq 1 300); do
  kill -0 "$tg_pid" 2>/dev/null || { tail -n 30 "$dir/tollgate.log" >&2; die "tollgate serve exited before it was ready"; }
  if [ -s "$dir/tollgate.port" ] && tg_port=$(tr -dc 0-9 <"$dir/tollgate.port") && [ -n "$tg_port" ] \
      && curl -fsS -o /dev/null "http://127.0.0.1:$tg_port/healthz" 2>/dev/null; then
    break
  fi
  sleep 0.1
done
[ -n "${tg_port:-}" ] || die "tollgate serve not ready within 30 s"
say "tollgate on :$tg_port, pid $tg_pid (one I/O thread), database $db_url"

# One call per Tollgate target first: they must answer 200 before anything is measured.
check_call() { # PATH BODY_FILE
  local code
  code=$(curl -sS -o "$dir/check.out" -w '%{http_code}' "http://127.0.0.1:$tg_port$1" \
    -H "Authorization: Bearer $key" -H 'Content-Type: application/json' -H 'anthropic-version: 2023-06-01' \
    --data-binary "@$2") || code=000
  [ "$code" = 200 ] || { cat "$dir/check.out" >&2; echo >&2; tail -n 5 "$dir/tollgate.log" >&2; die "POST $1 through Tollgate: HTTP $code"; }
}
check_call /v1/chat/completions "$here/openai_request.json"
check_call /v1/messages "$here/anthropic_request.json"
checked_calls=2

# ---------------------------------------------------------------- runs
targets=(mock nginx tollgate tollgate-anthropic)
target_url() {
  case $1 in
    mock) echo "http://127.0.0.1:$mock_port/v1/chat/completions" ;;
    nginx) echo "http://127.0.0.1:$proxy_port/v1/chat/completions" ;;
    tollgate) echo "http://127.0.0.1:$tg_port/v1/chat/completions" ;;
    tollgate-anthropic) echo "http://127.0.0.1:$tg_port/v1/messages" ;;
  esac
}
target_pid() {
  case $1 in
    mock) echo "$mock_worker" ;;
    nginx) echo "$proxy_worker" ;;
    tollgate*) echo "$tg_pid" ;;
  esac
}
cpu_ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }  # utime+stime (fields 14, 15)
hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
clk_tck=$(getconf CLK_TCK)
results=$dir/results.tsv
printf 'round\ttarget\tconns\trequests\trps\tp50_us\tp99_us\terrors\tcpu_us_per_req\thwm_kb\n' >"$results"
tg_wrk_requests=0

run_wrk() { # ROUND TARGET CONNS SECONDS
  local round=$1 t=$2 c=$3 s=$4 pid body anth=0 before after out line
  pid=$(target_pid "$t")
  body=$here/openai_request.json
  if [ "$t" = tollgate-anthropic ]; then body=$here/anthropic_request.json; anth=1; fi
  before=$(cpu_ticks "$pid")
  BENCH_BODY=$body BENCH_KEY=$key BENCH_ANTHROPIC=$anth \
    setsid wrk -t1 -c"$c" -d"${s}s" --timeout 10s --latency -s "$here/post.lua" "$(target_url "$t")" \
    >"$dir/wrk.out" 2>&1 &
  wrk_pid=$!
  wait "$wrk_pid" || { wrk_pid=""; cat "$dir/wrk.out" >&2; die "wrk failed ($t, $c connections)"; }
  wrk_pid=""
  after=$(cpu_ticks "$pid")
  cat "$dir/wrk.out" >>"$dir/wrk-all.out"
  line=$(grep '^RESULT ' "$dir/wrk.out") || { cat "$dir/wrk.out" >&2; die "no RESULT from wrk ($t)"; }
  # RESULT requests=N duration_us=N connect=N read=N write=N status=N timeout=N p50_us=N p99_us=N
  out=$(awk -v round="$round" -v t="$t" -v c="$c" -v cpu=$(( after - before )) -v tck="$clk_tck" \
              -v hwm="$(hwm_kb "$pid")" '{
      for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
      err = v["connect"] + v["read"] + v["write"] + v["status"] + v["timeout"]
      rps = v["duration_us"] > 0 ? v["requests"] / (v["duration_us"] / 1e6) : 0
      cpr = v["requests"] > 0 ? cpu * 1e6 / tck / v["requests"] : 0
      printf "%s\t%s\t%d\t%d\t%.0f\t%d\t%d\t%d\t%.1f\t%d\n", round, t, c, v["requests"], rps, v["p50_us"], v["p99_us"], err, cpr, hwm
    }' <<<"$line")
  printf '%s\n' "$out" >>"$results"
  case $t in tollgate*) tg_wrk_requests=$(( tg_wrk_requests + $(cut -f4 <<<"$out") )) ;; esac
  awk -F'\t' '{ printf "gateway_overhead: round %s  %-18s c=%-3s %7s req/s  p50 %6s us  p99 %6s us  errors %s  cpu %6s us/req  hwm %s kB\n", $1, $2, $3, $5, $6, $7, $8, $9, $10 }' <<<"$out" >&2
}

say "warm-up: ${warmup} s per target at $conns connections"
for t in "${targets[@]}"; do run_wrk warmup "$t" "$conns" "$warmup"; done
for r in $(seq 1 "$rounds"); do
  n=${#targets[@]}
  for k in $(seq 0 $(( n - 1 ))); do
    t=${targets[$(( (k + r - 1) % n ))]}
    run_wrk "$r" "$t" "$conns" "$secs"
    run_wrk "$r" "$t" 1 "$secs"
  done
done

# ---------------------------------------------------------------- metering check
tg_hwm=$(hwm_kb "$tg_pid")
say "stopping Tollgate (SIGTERM: drains, flushes the usage writer)"
kill -TERM "$tg_pid"
tg_rc=0
for i in $(seq 1 300); do kill -0 "$tg_pid" 2>/dev/null || break; sleep 0.1; done
wait "$tg_pid" || tg_rc=$?
tg_pid=""
[ "$tg_rc" = 0 ] || say "warning: tollgate exited with status $tg_rc"
rows=$(psql_q -At -d "$db_url" -c 'SELECT count(*) FROM usage_events')
rows_200=$(psql_q -At -d "$db_url" -c 'SELECT count(*) FROM usage_events WHERE status = 200')
by_status=$(psql_q -At -F ' ' -d "$db_url" -c 'SELECT status, count(*) FROM usage_events GROUP BY 1 ORDER BY 1' | tr '\n' ',' | sed 's/,$//; s/,/, /g')
upstream_calls=$(( $(wc -l <"$dir/mock-tollgate-access.log") - mock_tg_probes ))
wrk_total=$(( tg_wrk_requests + checked_calls ))
tg_runs=$(awk -F'\t' 'NR > 1 && $2 ~ /^tollgate/' "$results" | wc -l)
max_inflight=$(awk -F'\t' 'NR > 1 && $2 ~ /^tollgate/ { s += $3 } END { print s + 0 }' "$results")
metering=ok
[ "$rows" = "$upstream_calls" ] || metering=MISMATCH
if [ "$rows" -lt "$wrk_total" ] || [ "$(( rows - wrk_total ))" -gt "$max_inflight" ]; then metering=MISMATCH; fi

# ---------------------------------------------------------------- table
cpu_model=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
machine="${cpu_model:-unknown CPU}, $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, Linux $(uname -r)"
versions="$("$nginx_bin" -v 2>&1 | sed 's/.*version: //'), $(wrk -v 2>&1 | head -n1 | awk '{print $1, $2}'), Tollgate $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')"
echo
echo "Gateway overhead, $(date -u '+%Y-%m-%d %H:%M UTC'); $machine; $versions"
echo "wrk -t1, ${secs} s per run at $conns and at 1 connection, $rounds rounds (medians), ${warmup} s warm-up; one I/O thread / one nginx worker; non-streamed ~${#answer}-byte answer"
echo
awk -F'\t' -v C="$conns" -v R="$rounds" '
  function median(s,   a, n, i, j, x) {
    n = split(s, a, " ")
    if (n == 0) return ""
    for (i = 2; i <= n; i++) { x = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  function add(k, v) { list[k] = (k in list) ? list[k] " " v : v }
  function fmt(v, d) { return v == "" ? "-" : sprintf("%." d "f", v) }
  NR == 1 { next }
  { err[$2] += $8; if ($10 > hwm[$2]) hwm[$2] = $10 }
  $1 == "warmup" { next }
  $3 == C { rps[$1, $2] = $5; p50c[$1, $2] = $6; p99c[$1, $2] = $7; cpu[$1, $2] = $9 }
  $3 == 1 { p50s[$1, $2] = $6; cpu1[$1, $2] = $9 }
  END {
    n = split("mock nginx tollgate tollgate-anthropic", T, " ")
    for (r = 1; r <= R; r++) for (i = 1; i <= n; i++) {
      t = T[i]
      add("rps" t, rps[r, t]); add("p50c" t, p50c[r, t]); add("p99c" t, p99c[r, t])
      add("p50s" t, p50s[r, t]); add("cpu" t, cpu[r, t]); add("cpu1" t, cpu1[r, t])
      added = p50s[r, t] - p50s[r, "mock"]
      if (t != "mock") add("added" t, added)
      if (t ~ /^tollgate/) {
        if (rps[r, "nginx"] > 0) add("rrps" t, rps[r, t] / rps[r, "nginx"])
        if (cpu[r, "nginx"] > 0) add("rcpu" t, cpu[r, t] / cpu[r, "nginx"])
        an = p50s[r, "nginx"] - p50s[r, "mock"]
        if (an > 0) add("radd" t, added / an)
      }
    }
    printf "| target | req/s @%d | p50 @%d | p99 @%d | p50 @1 | added p50 @1 | CPU/req @%d | CPU/req @1 | peak RSS | errors | req/s vs nginx | CPU/req vs nginx | added vs nginx |\n", C, C, C, C
    print "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for (i = 1; i <= n; i++) {
      t = T[i]
      tg = t ~ /^tollgate/
      printf "| %s | %s | %s µs | %s µs | %s µs | %s | %s µs | %s µs | %.1f MiB | %d | %s | %s | %s |\n", t,
        fmt(median(list["rps" t]), 0), fmt(median(list["p50c" t]), 0), fmt(median(list["p99c" t]), 0),
        fmt(median(list["p50s" t]), 0), t == "mock" ? "-" : fmt(median(list["added" t]), 0) " µs",
        fmt(median(list["cpu" t]), 1), fmt(median(list["cpu1" t]), 1), hwm[t] / 1024, err[t],
        tg ? fmt(median(list["rrps" t]), 2) "x" : "-", tg ? fmt(median(list["rcpu" t]), 2) "x" : "-",
        tg ? fmt(median(list["radd" t]), 2) "x" : "-"
    }
  }' "$results"
echo
echo "added p50 @1: the target's median latency at 1 connection minus the mock's in the same round. CPU/req: utime+stime of the serving process (nginx: its worker; Tollgate: all its threads, PostgreSQL not included) over the requests wrk completed. Peak RSS: VmHWM. Errors: non-2xx and socket errors, all runs including warm-up. Ratios: per round, median over rounds."
echo
echo "Metering: $metering. usage_events rows: $rows ($rows_200 with status 200; by status: $by_status); calls Tollgate sent to the mock: $upstream_calls; requests wrk completed through Tollgate plus $checked_calls check calls: $wrk_total (rows may exceed this by calls in flight when wrk stopped, at most $max_inflight over $tg_runs runs)."
say "raw results: $results$( [ "${BENCH_KEEP:-0}" = 1 ] || echo ' (set BENCH_KEEP=1 to keep it)')"
[ "$metering" = ok ] || exit 3
ok=1
