#!/usr/bin/env bash
# Soak benchmark (issue 13, "Faults"): memory, file descriptors and threads of one Tollgate stay
# flat over a long, mixed load with faults.
#
#   cmake --build build --target tollgate && bench/soak.sh          # 5 minutes
#   BENCH_SECONDS=180 TOLLGATE_BIN=/path/to/tollgate bench/soak.sh
#
# What it does, all on 127.0.0.1, in a temporary directory it removes at the end:
#   - a private PostgreSQL (scripts/pg.sh --test), database `tollgate`, migrated, one prepaid key
#     (tollgate keys create --credits 1000);
#   - a fault-injecting OpenAI-compatible upstream (tests/e2e/mock_faults.mjs, its own node
#     process) with BENCH_FAULTS (default: 100 healthy answers to 3 each of 500, reset before the
#     first byte, reset after it, truncated and malformed streams and delays, and 6 slow drips; no
#     429s: a 429 with Retry-After: 1 takes its endpoint out for a second, and with both endpoints
#     out every call is an instant 429 from routing, which then make most of the calls; add
#     429=1 to BENCH_FAULTS for that; test/chaos.test.mjs covers it);
#   - Tollgate (server.io_threads 2, usage spool on, access log on) with model soak/m on two
#     endpoints of that upstream (ordered, one retry, fallback to the second);
#   - the load (bench/soak/load.mjs, its own node process): BENCH_CONCURRENCY (16) calls at a time
#     for BENCH_SECONDS (300), /v1/chat/completions, /v1/messages and /v1/responses, half streamed,
#     about 5% client errors (401, 404, 400) and about 5% of the streams left by their client
#     mid-way;
#   - every BENCH_SAMPLE_S (5) seconds: Tollgate's VmRSS and VmHWM (/proc/PID/status), open fds
#     (entries of /proc/PID/fd; the least of 5 readings 50 ms apart, so calls in flight add less
#     noise than a leak would), threads, and the load's counts so far.
# Output (stdout): a table (time s, RSS MiB, fds, threads, calls, errors = well-formed errors +
# broken streams + client disconnects, bad = calls that ended neither complete nor well-formed),
# then the verdict: least-squares slopes of RSS and fds over the second half of the samples (the
# first half is warm-up: pools, caches and arenas fill). Flat means
#   RSS slope <= max(BENCH_RSS_TOL_MIB (2) MiB, BENCH_RSS_TOL_PCT (2) % of the second half's mean
#               RSS) per minute (a leak of 1 KiB per call at 60 calls/s is 3.5 MiB/min),
#   fd slope  <= 3 per minute (a leak of one socket per call would be hundreds per minute), and
#               3 s after the load the fds at most those before it + 2 x BENCH_CONCURRENCY (idle
#               pooled upstream connections),
#   threads   the same at the end as at the end of the first half,
# and no `bad` call, and the process alive at the end. Exit status 0 when flat, 1 when not.
# After the load Tollgate is stopped gracefully and usage_events is counted: at least every call
# that ended with a complete answer (the rest: errors before any provider, left calls).
#
# Environment: TOLLGATE_BIN (default build/bin/tollgate), BENCH_SECONDS (300), BENCH_SAMPLE_S (5),
# BENCH_CONCURRENCY (16), BENCH_FAULTS (mock_faults.mjs --weights), BENCH_RSS_TOL_MIB (2), BENCH_RSS_TOL_PCT (2),
# BENCH_KEEP=1 (keep the temporary directory: config, logs, samples). Needs node and
# tests/e2e/node_modules (npm ci there; scripts/test.sh does it) for the load's `openai` client
# share (without it those calls go through raw fetch).
set -euo pipefail

# The whole run is bounded: re-run this script under timeout (same PID, exec).
if [ -z "${BENCH_INNER:-}" ]; then
  export BENCH_INNER=1
  exec timeout --foreground -s TERM -k 30 "$(( ${BENCH_SECONDS:-300} + 180 ))" "$0" "$@"
fi

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${TOLLGATE_BIN:-$root/build/bin/tollgate}
secs=${BENCH_SECONDS:-300}
sample_s=${BENCH_SAMPLE_S:-5}
conc=${BENCH_CONCURRENCY:-16}
faults=${BENCH_FAULTS:-ok=100,500=3,reset-before=3,reset-after-first=3,truncated=3,malformed=3,delay=3,drip=6}
rss_tol_mib=${BENCH_RSS_TOL_MIB:-2}
rss_tol_pct=${BENCH_RSS_TOL_PCT:-2}

say() { echo "soak: $*" >&2; }
die() { echo "soak: $*" >&2; exit 2; }

[ -x "$bin" ] || die "$bin not built (cmake --build build --target tollgate), or set TOLLGATE_BIN"
node_bin=$(command -v node || true)
[ -n "$node_bin" ] || die "node not found (run scripts/setup.sh)"
[ "$secs" -ge 20 ] || die "BENCH_SECONDS must be at least 20 (two halves of samples)"
[ -d "$root/tests/e2e/node_modules/openai" ] || say "note: tests/e2e/node_modules/openai missing (npm ci in tests/e2e); every chat call goes through raw fetch"

# ---------------------------------------------------------------- cleanup (by PID)
dir=$(mktemp -d /tmp/tollgate-soak.XXXXXX)
chmod 755 "$dir"
pg_started=0
tg_pid=""
mock_pid=""
load_pid=""
ok=0

# stop_pid PID SIG SECS (bench/bench_lib.sh)
. "$(dirname "${BASH_SOURCE[0]}")/bench_lib.sh"
cleanup() {
  local rc=$?
  trap - EXIT
  trap '' INT TERM  # a second Ctrl-C must not cut the cleanup short
  stop_pid "$load_pid" TERM 5
  stop_pid "$tg_pid" TERM 20
  stop_pid "$mock_pid" TERM 5
  if [ "$pg_started" = 1 ]; then "$root/scripts/pg.sh" stop "$dir/pg" >/dev/null 2>&1 || true; fi
  if [ "$ok" = 1 ] && [ "${BENCH_KEEP:-0}" != 1 ]; then
    rm -rf "$dir"
  else
    say "kept $dir (config, logs, samples)"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Open fds of PID.
fd_count() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
fd_min() { # PID: the least of 5 readings 50 ms apart
  local i n m=""
  for i in 1 2 3 4 5; do
    n=$(fd_count "$1")
    if [ -z "$m" ] || [ "$n" -lt "$m" ]; then m=$n; fi
    [ "$i" -lt 5 ] && sleep 0.05
  done
  echo "$m"
}

# ---------------------------------------------------------------- PostgreSQL, key
url=$("$root/scripts/pg.sh" start "$dir/pg" --test)
pg_started=1
psql_bin=$(command -v psql || ls /usr/lib/postgresql/*/bin/psql 2>/dev/null | sort -V | tail -n1)
[ -n "$psql_bin" ] || die "psql not found (run scripts/setup.sh)"
"$psql_bin" -X -q -d "$url" -c 'CREATE DATABASE tollgate' >/dev/null
db_url=${url%/postgres}/tollgate
export TOLLGATE_DATABASE_URL=$db_url
"$bin" migrate >"$dir/migrate.log" 2>&1 || { cat "$dir/migrate.log" >&2; die "tollgate migrate failed"; }
key=$("$bin" keys create --name soak --credits 1000 2>"$dir/keys.log") || { cat "$dir/keys.log" >&2; die "keys create failed"; }

# ---------------------------------------------------------------- the fault mock
"$node_bin" "$root/tests/e2e/mock_faults.mjs" --port 0 --seed 13 --weights "$faults" --drip-ms 20 \
  >"$dir/mock.port" 2>"$dir/mock.log" &
mock_pid=$!
for _ in $(seq 1 100); do [ -s "$dir/mock.port" ] && break; kill -0 "$mock_pid" 2>/dev/null || break; sleep 0.1; done
mock_port=$(head -n1 "$dir/mock.port" 2>/dev/null || true)
[[ "$mock_port" =~ ^[0-9]+$ ]] || { cat "$dir/mock.log" >&2; die "the fault mock did not start"; }

# ---------------------------------------------------------------- Tollgate
cat >"$dir/tollgate.yaml" <<YAML
# Written by bench/soak.sh.
server:
  listen: "127.0.0.1:0"
  io_threads: 2
  max_body_bytes: 1048576
  request_timeout_ms: 30000
database:
  url: "$db_url"
log:
  access: true
usage:
  flush_interval_ms: 200
  batch_size: 256
  spool_dir: "$dir/spool"
routing:
  breaker: {consecutive_failures: 5, open_ms: 1000, max_open_ms: 4000}
  default_cooldown_ms: 1000
  max_cooldown_ms: 2000
providers:
  faults:
    type: openai_compatible
    display_name: Faults
    base_url: "http://127.0.0.1:$mock_port/v1"
    api_key: "sk-mock-faults-key"
models:
  - id: soak/m
    name: "Soak: two endpoints on the fault mock"
    context_length: 8192
    routing: {strategy: ordered, retries: 1, retry_backoff_ms: 20}
    endpoints:
      - {id: soak-a, provider: faults, model: soak-upstream-a, pricing: {prompt: "1.00", completion: "2.00"}}
      - {id: soak-b, provider: faults, model: soak-upstream-b, pricing: {prompt: "0.50", completion: "3.00"}}
YAML
"$bin" serve --config "$dir/tollgate.yaml" --listen 127.0.0.1:0 --port-file "$dir/tollgate.port" >"$dir/tollgate.log" 2>&1 &
tg_pid=$!
tg_port=""
for _ in $(seq 1 300); do
  kill -0 "$tg_pid" 2>/dev/null || { tail -n 30 "$dir/tollgate.log" >&2; die "tollgate exited at start"; }
  tg_port=$(cat "$dir/tollgate.port" 2>/dev/null || true)
  if [[ "$tg_port" =~ ^[0-9]+$ ]] && curl -s -m 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$tg_port/readyz" 2>/dev/null | grep -q 200; then break; fi
  tg_port=""
  sleep 0.1
done
[ -n "$tg_port" ] || die "tollgate not ready within 30 s"
say "tollgate pid $tg_pid on 127.0.0.1:$tg_port; fault mock pid $mock_pid on $mock_port ($faults); load: $conc at a time for $secs s"

# ---------------------------------------------------------------- load and samples
progress=$dir/progress.json
fds_before=$(fd_min "$tg_pid")
"$node_bin" "$root/bench/soak/load.mjs" --url "http://127.0.0.1:$tg_port" --key "$key" --model soak/m \
  --seconds "$secs" --concurrency "$conc" --progress "$progress" >"$dir/load.log" 2>&1 &
load_pid=$!

samples=$dir/samples.tsv  # t_s rss_kib fds threads calls errors bad hwm_kib
: >"$samples"
status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
counts() { # -> "calls errors bad" from the load's progress file
  "$node_bin" -e '
    const fs = require("fs");
    let s = { calls: 0, by: {} };
    try { s = JSON.parse(fs.readFileSync(process.argv[1], "utf8")); } catch {}
    const b = s.by || {};
    console.log(`${s.calls || 0} ${(b.error || 0) + (b.stream_error || 0) + (b.aborted || 0)} ${b.bad || 0}`);
  ' "$1"
}
printf '| time s | RSS MiB | fds | threads | calls | errors | bad |\n|---:|---:|---:|---:|---:|---:|---:|\n'
t0=$(date +%s)
while :; do
  sleep "$sample_s"
  kill -0 "$tg_pid" 2>/dev/null || { tail -n 30 "$dir/tollgate.log" >&2; die "TOLLGATE DIED during the soak"; }
  kill -0 "$load_pid" 2>/dev/null || break  # only samples taken under load
  t=$(( $(date +%s) - t0 ))
  rss=$(status_kib "$tg_pid" VmRSS)
  hwm=$(status_kib "$tg_pid" VmHWM)
  thr=$(awk '$1 == "Threads:" { print $2 }' "/proc/$tg_pid/status")
  fds=$(fd_min "$tg_pid")
  read -r calls errs bad < <(counts "$progress")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$rss" "$fds" "$thr" "$calls" "$errs" "$bad" "$hwm" >>"$samples"
  printf '| %d | %.1f | %d | %d | %d | %d | %d |\n' "$t" "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')" "$fds" "$thr" "$calls" "$errs" "$bad"
done
wait "$load_pid" || die "the load generator failed: $(tail -n 20 "$dir/load.log")"
load_pid=""
alive=1
kill -0 "$tg_pid" 2>/dev/null || alive=0
fds_after=0
if [ "$alive" = 1 ]; then sleep 3; fds_after=$(fd_min "$tg_pid"); fi

# ---------------------------------------------------------------- verdict
# Least-squares slope of column COL (per minute) over the second half of the samples.
verdict=$(awk -F'\t' -v tol_pct="$rss_tol_pct" -v tol_mib="$rss_tol_mib" '
  { t[NR] = $1; rss[NR] = $2; fd[NR] = $3; th[NR] = $4; n = NR }
  function slope(v, from, to,   i, k, st, sv, stt, stv, mt, mv) {
    k = 0; st = 0; sv = 0; stt = 0; stv = 0
    for (i = from; i <= to; i++) { k++; st += t[i]; sv += v[i] }
    mt = st / k; mv = sv / k
    for (i = from; i <= to; i++) { stt += (t[i] - mt) ^ 2; stv += (t[i] - mt) * (v[i] - mv) }
    return stt > 0 ? stv / stt * 60 : 0
  }
  END {
    if (n < 4) { print "too few samples"; exit }
    from = int(n / 2) + 1
    mean = 0; for (i = from; i <= n; i++) mean += rss[i]; mean /= (n - from + 1)
    rs = slope(rss, from, n); fs = slope(fd, from, n)
    tol = mean * tol_pct / 100; if (tol < tol_mib * 1024) tol = tol_mib * 1024
    flat = (rs <= tol && fs <= 3 && th[n] == th[from - 1])
    printf "%s\t%.1f\t%.1f\t%.2f\t%d\t%d\t%.1f\t%.1f\t%.1f\n", flat ? "FLAT" : "GROWING", rs / 1024, tol / 1024, fs, th[from - 1], th[n], mean / 1024, rss[1] / 1024, rss[n] / 1024
  }' "$samples")
IFS=$'\t' read -r flat rss_slope rss_tol fd_slope th_mid th_end rss_mean rss_first rss_last <<<"$verdict"
read -r calls errs bad < <(counts "$progress")
hwm_end=$(awk -F'\t' 'END { printf "%.1f", $8 / 1024 }' "$samples")

# Graceful stop (flushes the usage writer), then the rows.
stop_pid "$tg_pid" TERM 30
tg_pid=""
rows=$("$psql_bin" -X -At -d "$db_url" -c 'SELECT count(*) FROM usage_events')
by_status=$("$psql_bin" -X -At -d "$db_url" -c "SELECT string_agg(status || ':' || n, ' ' ORDER BY status) FROM (SELECT status, count(*) n FROM usage_events GROUP BY 1) s")
ok_calls=$("$node_bin" -e 'const s = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); console.log(s.by.ok)' "$progress")
bad_examples=$("$node_bin" -e 'const s = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); console.log(s.bad_examples.join("\n"))' "$progress")
api_mix=$("$node_bin" -e 'const s = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); console.log(JSON.stringify(s.api), JSON.stringify(s.by), "by status", JSON.stringify(s.status))' "$progress")

echo
echo "Soak $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $secs s, $conc at a time: $calls calls $api_mix"
echo "RSS: first sample $rss_first MiB, last $rss_last MiB, peak (VmHWM) $hwm_end MiB; second half: mean $rss_mean MiB, slope $rss_slope MiB/min (tolerance $rss_tol MiB/min)"
echo "fds: second-half slope $fd_slope per minute (tolerance 3); before the load $fds_before, 3 s after it $fds_after (allowed $(( fds_before + 2 * conc ))); threads $th_mid at mid-run, $th_end at the end"
echo "usage rows after a graceful stop: $rows ($by_status); complete answers seen by clients: $ok_calls"
err_examples=$("$node_bin" -e 'const s = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); for (const [k, v] of Object.entries(s.error_examples)) console.log(`  ${k}: ${v}`)' "$progress")
echo "first error message per status:"
echo "$err_examples"
[ -n "$bad_examples" ] && printf 'bad calls (first 20):\n%s\n' "$bad_examples"
result=0
if [ "$alive" != 1 ]; then echo "VERDICT: the gateway died"; result=1
elif [ "$bad" != 0 ]; then echo "VERDICT: $flat, but $bad calls ended neither complete nor well-formed"; result=1
elif [ "$rows" -lt "$ok_calls" ]; then echo "VERDICT: $flat, but fewer usage rows ($rows) than complete answers ($ok_calls)"; result=1
elif [ "$flat" != FLAT ]; then echo "VERDICT: GROWING (RSS or fds rise over the second half, or threads changed)"; result=1
elif [ "$fds_after" -gt $(( fds_before + 2 * conc )) ]; then echo "VERDICT: fds left open after the load: $fds_after, $fds_before before it"; result=1
else echo "VERDICT: FLAT (memory, fds and threads steady over the second half)"; fi
ok=1
exit "$result"
