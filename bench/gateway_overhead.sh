#!/usr/bin/env bash
# Gateway overhead benchmark (issue 12): Tollgate against a plain nginx reverse-proxy hop, side by
# side, on loopback: non-streamed load, streaming, 10,000 open streams, footprint, and a callgrind
# instruction count per request.
#
#   cmake --build build --target tollgate && bench/gateway_overhead.sh
#
# What it does, all on 127.0.0.1, in a temporary directory it removes at the end:
#   - installs what is missing from Debian (apt-get, as root): nginx, libnginx-mod-http-echo (the
#     streaming mock), wrk, python3 (the streaming/scale/footprint/callgrind client,
#     gateway_overhead/bench_client.py, standard library only), valgrind (callgrind);
#   - raises the open-files limit (ulimit -n) to the hard limit for every process it starts;
#   - a mock upstream: nginx (one worker) answering POST /v1/chat/completions with a fixed
#     OpenAI chat.completion of about 660 bytes with usage (gateway_overhead/answer.json), and,
#     through the echo module, two OpenAI SSE streams (gateway_overhead/mock.conf.in):
#     /stream/v1/chat/completions, a role chunk and the first content chunk at once, then 63 more
#     content chunks 20 ms apart, the finish_reason chunk, the usage chunk and data: [DONE]
#     (64 content chunks "Tok01 " .. "Tok64 "); /long/v1/chat/completions, 90 content chunks 1 s
#     apart (the scale test);
#   - a private PostgreSQL (scripts/pg.sh, durable settings), database `tollgate`, migrated, one
#     prepaid API key (tollgate keys create --credits 1000);
#   - four targets:
#       mock        the mock directly (the floor)
#       nginx       nginx as a plain reverse proxy to the mock: one worker, upstream keep-alive,
#                   access log on, proxy_buffering off for the streams (gateway_overhead/proxy.conf.in)
#       tollgate    Tollgate, POST /v1/chat/completions with the real key: one I/O thread
#                   (server.io_threads: 1), authentication, admission, routing, metering (usage
#                   spool, rows written behind to PostgreSQL), access log on; the mock as an
#                   openai_compatible provider without preset, models bench/mock, bench/stream
#                   and bench/long (gateway_overhead/tollgate.yaml)
#       tollgate-anthropic   the same Tollgate, POST /v1/messages (Anthropic shape), translated
#                   to the OpenAI-style mock and back
#
# Parts (BENCH_PARTS, default "load stream scale footprint callgrind"; any subset, in this order):
#   load       a warm-up (every target, BENCH_WARMUP seconds at 32 connections), then BENCH_ROUNDS
#              rounds (default 3); each round runs every target (in an order rotated per round) with
#              wrk at 32 connections and at 1 connection, BENCH_SECONDS each (default 5). wrk uses 1
#              thread: the machines this runs on have 2 cores, one for the server under test
#              (Tollgate and nginx each serve on one thread) and one for the load generator. Same
#              request bytes and headers for every target (gateway_overhead/post.lua).
#              CPU per request: utime+stime of the serving process from /proc/PID/stat (nginx: its
#              worker; Tollgate: the whole process, all threads) before and after each run, divided
#              by the requests wrk completed; PostgreSQL's work for the usage rows is not included.
#              Peak memory: VmHWM of the same process; "flat" when it grew by at most 5% from the
#              end of round 1 to the end of the last round. Errors: wrk's non-2xx (status >= 400)
#              plus socket errors (connect, read, write, timeout), summed over all runs.
#   stream     streamed chat completions (stream: true) through every target, the targets
#              interleaved in 5 slices, at each "concurrency:streams per target" of
#              BENCH_STREAM_RUNS (default "1:25 16:200"); one new connection per stream. Per stream:
#              time from sending the request to the first content chunk (TTFT), the gaps between
#              consecutive content chunks, the number of content chunks (must be 64). Added TTFT:
#              the target's median (p99) TTFT minus the mock's, same concurrency. Gaps: median and
#              p99 minus the 20 ms the mock waits, and minus the mock's own median/p99 gap. A
#              content chunk is held back when it arrives in the same read as the next one or
#              less than 2 ms before it (the mock sent them 20 ms apart); counted for every
#              target, so the client's own noise shows on the mock and nginx rows.
#   scale      BENCH_STREAMS (default 10000) concurrent long streams (90 chunks 1 s apart) through
#              Tollgate, opened 256 at a time; when every stream has had its first chunk, Tollgate's
#              VmRSS, open fds and CPU time so far; RSS before, with the streams open, and per open
#              stream ((with - before) / streams still open); /healthz probed every 200 ms
#              meanwhile by a separate process; then every stream must end with its 90 chunks. Each stream needs two sockets in Tollgate (caller and upstream): when the
#              hard open-files limit cannot hold 2 x BENCH_STREAMS + 256 (containers often cap it
#              at 20000 and do not let root raise it), the test runs with as many streams as fit
#              and says so, projecting the RSS to BENCH_STREAMS from the per-stream figure.
#   footprint  BENCH_STARTS (default 5) fresh starts of Tollgate with the bench config (no local
#              model): time from exec to the first 200 from GET /readyz (polled every 2 ms by
#              bench_client.py, one connection per try, no process spawned per try), and VmRSS
#              1 s after ready; medians.
#   callgrind  Tollgate (`serve`, the bench config) and the nginx proxy (master_process off) each
#              under valgrind --tool=callgrind --instr-atstart=no; BENCH_CG_WARMUP (200) calls
#              uninstrumented, `callgrind_control -i on`, 20 more, `callgrind_control -z`, exactly
#              BENCH_CG_CALLS (2000) calls on one keep-alive connection, one after the other, 1 s
#              (the write-behind usage writer), `callgrind_control -d`: the dump's total Ir / calls,
#              all threads of the process. Tollgate: /v1/chat/completions, then /v1/messages (its
#              own warm-up, zero, calls, dump). The dumps are kept in the temporary directory
#              (callgrind/, with BENCH_KEEP=1) for callgrind_annotate; the top 15 functions of
#              Tollgate's chat-completions profile by self (exclusive) Ir go to stderr and to
#              callgrind/tollgate-chat.top15.txt.
#   Metering (whenever the main Tollgate ran): after the load, stream and scale parts Tollgate is
#   stopped gracefully (which flushes the write-behind usage writer) and usage_events is counted;
#   it must equal the calls the mock saw from Tollgate (its own access log), and be at least the
#   calls that completed through Tollgate (wrk's, the streams', the check calls; the difference,
#   at most the connections of each wrk run plus failed streams, are calls in flight when wrk
#   stopped). The footprint and callgrind Tollgates come after this count.
#
# Output: markdown tables on stdout (load: per target the medians over the rounds and Tollgate's
# ratios to nginx, per-round ratio, median over rounds; streaming; scale; footprint; callgrind;
# then every target of the issue with PASS/MISS), the header line with date and machine.
# Progress and every single run go to stderr. Total time with the defaults: about 10 minutes on
# 2 cores (load 3, stream 3.5, scale 2.5, footprint 0.2, callgrind 1, setup); the whole script
# is killed after BENCH_TIMEOUT seconds (default 1200).
#
# Environment: TOLLGATE_BIN (default build/bin/tollgate), BENCH_PARTS, BENCH_SECONDS (5),
# BENCH_ROUNDS (3), BENCH_WARMUP (2), BENCH_CONNECTIONS (32), BENCH_STREAM_RUNS ("1:25 16:200"),
# BENCH_STREAMS (10000), BENCH_STARTS (5), BENCH_CG_CALLS (2000), BENCH_CG_WARMUP (200),
# BENCH_TIMEOUT (1200), BENCH_KEEP=1 (keep the temporary directory: configs, logs, raw results,
# callgrind dumps).
set -euo pipefail

# The whole run is bounded: re-run this script under timeout (same PID, exec).
if [ -z "${BENCH_INNER:-}" ]; then
  export BENCH_INNER=1
  exec timeout --foreground -s TERM -k 30 "${BENCH_TIMEOUT:-1200}" "$0" "$@"
fi

root=$(cd "$(dirname "$0")/.." && pwd)
here=$root/bench/gateway_overhead
bin=${TOLLGATE_BIN:-$root/build/bin/tollgate}
secs=${BENCH_SECONDS:-5}
rounds=${BENCH_ROUNDS:-3}
warmup=${BENCH_WARMUP:-2}
conns=${BENCH_CONNECTIONS:-32}
parts=" ${BENCH_PARTS-load stream scale footprint callgrind} "
stream_runs=${BENCH_STREAM_RUNS:-1:25 16:200}
streams_wanted=${BENCH_STREAMS:-10000}
starts=${BENCH_STARTS:-5}
cg_calls=${BENCH_CG_CALLS:-2000}
cg_warmup=${BENCH_CG_WARMUP:-200}
stream_chunks=64
long_chunks=90  # much longer than opening 10,000 streams takes (40 to 55 s seen), so all are open at once

say() { echo "gateway_overhead: $*" >&2; }
die() { echo "gateway_overhead: $*" >&2; exit 1; }
part() { [[ "$parts" == *" $1 "* ]]; }
for p in $parts; do
  case $p in load|stream|scale|footprint|callgrind) ;; *) die "unknown part '$p' in BENCH_PARTS" ;; esac
done
part load || part stream || part scale || part footprint || part callgrind || die "BENCH_PARTS names no part"
main_tg=0
if part load || part stream || part scale; then main_tg=1; fi

[ -x "$bin" ] || die "$bin not built (cmake --build build --target tollgate), or set TOLLGATE_BIN"

# ---------------------------------------------------------------- open-files limit
# Every stream through Tollgate holds two sockets there (caller, upstream). Raise the hard
# limit where allowed, then the soft one to it, for every process started below.
fd_need=$(( 2 * streams_wanted + 256 ))
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$fd_need" ]; then
  ulimit -Hn "$fd_need" 2>/dev/null || true
fi
ulimit -n "$(ulimit -Hn)"
nofile=$(ulimit -n)
[ "$nofile" = unlimited ] && nofile=1048576

# ---------------------------------------------------------------- tools
echo_module=/usr/lib/nginx/modules/ngx_http_echo_module.so
missing=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
[ -f "$echo_module" ] || missing+=(libnginx-mod-http-echo)
if part load; then command -v wrk >/dev/null 2>&1 || missing+=(wrk); fi
py=/usr/bin/python3
[ -x "$py" ] || py=$(command -v python3 || true)
[ -n "$py" ] || missing+=(python3)
if part callgrind; then command -v valgrind >/dev/null 2>&1 && command -v callgrind_control >/dev/null 2>&1 || missing+=(valgrind); fi
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || die "missing: ${missing[*]} (apt-get install ${missing[*]}, as root)"
  say "installing ${missing[*]} from Debian"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; then
    apt-get update >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
  fi
  py=/usr/bin/python3
  [ -x "$py" ] || py=$(command -v python3)
fi
[ -f "$echo_module" ] || die "$echo_module missing (libnginx-mod-http-echo)"
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
psql_bin=$(command -v psql || ls /usr/lib/postgresql/*/bin/psql 2>/dev/null | sort -V | tail -n1)
[ -n "$psql_bin" ] || die "psql not found (run scripts/setup.sh)"
psql_q() { "$psql_bin" -X -q -v ON_ERROR_STOP=1 "$@"; }
client() { "$py" "$here/bench_client.py" "$@"; }

# ---------------------------------------------------------------- cleanup (by PID)
dir=$(mktemp -d /tmp/tollgate-overhead.XXXXXX)
chmod 755 "$dir"
pg_started=0
tg_pid=""
mock_pid=""
proxy_pid=""
wrk_pid=""
helper_pid=""
cg_pid=""
ok=0

# stop_pid PID SIG SECS (bench/bench_lib.sh)
. "$(dirname "${BASH_SOURCE[0]}")/bench_lib.sh"
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
  trap - EXIT
  trap '' INT TERM  # a second Ctrl-C (the terminal's, forwarded by timeout) must not cut the cleanup short
  stop_pid "$wrk_pid" TERM 5
  stop_pid "$helper_pid" TERM 25  # bench_client.py stops its own child (footprint) by PID
  stop_pid "$cg_pid" TERM 20
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

# Runs a helper command in the background (its PID known to cleanup) and waits for it.
run_helper() { # OUT_FILE CMD...
  local out=$1 rc=0
  shift
  "$@" >"$out" &
  helper_pid=$!
  wait "$helper_pid" || rc=$?
  helper_pid=""
  return "$rc"
}

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
start_port=$(free_port); taken+="$start_port "
cg_proxy_port=$(free_port); taken+="$cg_proxy_port "

# The streams' echo directives (mock.conf.in): OpenAI chat.completion.chunk events, each
# `data: JSON` and a blank line; echo_flush after each content chunk.
sse() { # CHOICES_JSON [MORE_FIELDS]
  printf "      echo 'data: {\"id\":\"chatcmpl-benchstream\",\"object\":\"chat.completion.chunk\",\"created\":1733400000,\"model\":\"mock-model\",\"system_fingerprint\":\"fp_bench01\",\"choices\":[%s]%s}\\\\n';\n" "$1" "${2:-}"
}
chunk() { sse "{\"index\":0,\"delta\":$1,\"logprobs\":null,\"finish_reason\":$2}"; }
stream_echo() { # CONTENT_CHUNKS GAP_SECONDS
  local i
  chunk '{"role":"assistant","content":""}' null
  for i in $(seq 1 "$1"); do
    [ "$i" -gt 1 ] && echo "      echo_sleep $2;"
    chunk "$(printf '{"content":"Tok%02d "}' "$i")" null
    echo "      echo_flush;"
  done
  echo "      echo_sleep $2;"
  chunk '{}' '"stop"'
  sse '' ",\"usage\":{\"prompt_tokens\":14,\"completion_tokens\":$1,\"total_tokens\":$(( 14 + $1 ))}"
  echo "      echo 'data: [DONE]\\n';"
}

shopt -u patsub_replacement 2>/dev/null || true
answer=$(cat "$here/answer.json")
stream_directives=$(stream_echo "$stream_chunks" 0.02)
long_directives=$(stream_echo "$long_chunks" 1)
fill() { # TEMPLATE -> stdout
  local t
  t=$(cat "$1")
  t=${t//@DIR@/$dir}
  t=${t//@MOCK_PORT@/$mock_port}
  t=${t//@MOCK_TG_PORT@/$mock_tg_port}
  t=${t//@PROXY_PORT@/$proxy_port}
  t=${t//@ANSWER@/$answer}
  t=${t//@ECHO_MODULE@/$echo_module}
  t=${t//@NOFILE@/$nofile}
  t=${t//@STREAM_ECHO@/$stream_directives}
  t=${t//@LONG_ECHO@/$long_directives}
  printf '%s\n' "$t"
}
mkdir -p "$dir/nginx-tmp"
fill "$here/mock.conf.in" >"$dir/mock.conf"
fill "$here/proxy.conf.in" >"$dir/proxy.conf"

wait_http() { # URL PID WHAT [LOG] [TRIES]
  local i
  for i in $(seq 1 "${5:-200}"); do
    kill -0 "$2" 2>/dev/null || { [ -n "${4:-}" ] && tail -n 20 "$4" >&2; die "$3 exited before it was ready"; }
    curl -s -m 2 -o /dev/null -X POST -d '{}' "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  die "$3 not ready within $(( ${5:-200} / 10 )) s"
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
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
# Numeric helpers (awk: floats).
calc() { awk "BEGIN { printf \"%.6f\", $1 }"; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && a + 0 <= b + 0) }'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && a + 0 >= b + 0) }'; }
verdict_le() { if le "$1" "$2"; then echo PASS; else echo MISS; fi; }
verdict_ge() { if ge "$1" "$2"; then echo PASS; else echo MISS; fi; }
checks=$dir/checks.tsv  # target of the issue, measured, verdict
: >"$checks"
check() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$checks"; }

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
nginx_idle_kb=$(( $(rss_kb "$proxy_pid") + $(rss_kb "$proxy_worker") ))
say "mock on :$mock_port (Tollgate's upstream :$mock_tg_port), worker pid $mock_worker; nginx proxy on :$proxy_port, worker pid $proxy_worker; open files limit $nofile"

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
export BENCH_KEY=$key

# Starts `tollgate serve` with the bench config on a port of its choosing; sets tg_port.
start_tollgate() { # LOG PORT_FILE [WRAPPER...]; the PID in $started_pid
  local log=$1 port_file=$2 i
  shift 2
  rm -f "$port_file"
  setsid "$@" "$bin" serve --config "$here/tollgate.yaml" --listen 127.0.0.1:0 --port-file "$port_file" >"$log" 2>&1 &
  started_pid=$!
  started_port=""
  for i in $(seq 1 1200); do
    kill -0 "$started_pid" 2>/dev/null || { tail -n 30 "$log" >&2; die "tollgate serve exited before it was ready"; }
    if [ -s "$port_file" ] && started_port=$(tr -dc 0-9 <"$port_file") && [ -n "$started_port" ] \
        && curl -fsS -o /dev/null "http://127.0.0.1:$started_port/healthz" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  die "tollgate serve not ready within 120 s"
}

# One call per Tollgate target first: they must answer 200 before anything is measured.
check_call() { # PORT PATH BODY_FILE
  local code
  code=$(curl -sS -o "$dir/check.out" -w '%{http_code}' "http://127.0.0.1:$1$2" \
    -H "Authorization: Bearer $key" -H 'Content-Type: application/json' -H 'anthropic-version: 2023-06-01' \
    --data-binary "@$3") || code=000
  [ "$code" = 200 ] || { cat "$dir/check.out" >&2; echo >&2; die "POST $2 through Tollgate on :$1: HTTP $code"; }
}

# ---------------------------------------------------------------- Tollgate
checked_calls=0
tg_wrk_requests=0
tg_stream_ok=0
tg_stream_failed=0
scale_complete=0
scale_failed=0
if [ "$main_tg" = 1 ]; then
  start_tollgate "$dir/tollgate.log" "$dir/tollgate.port"
  tg_pid=$started_pid
  tg_port=$started_port
  say "tollgate on :$tg_port, pid $tg_pid (one I/O thread), database $db_url"
  check_call "$tg_port" /v1/chat/completions "$here/openai_request.json"
  check_call "$tg_port" /v1/messages "$here/anthropic_request.json"
  checked_calls=2
fi
if part stream; then
  # One stream each way through Tollgate: 64 content chunks, or nothing is measured.
  run_helper "$dir/check-stream.out" "$py" "$here/bench_client.py" stream --concurrency 1 --count 1 --slices 1 \
    --chunks "$stream_chunks" \
    --target tollgate "$tg_port" /v1/chat/completions "$here/openai_stream_request.json" 0 \
    --target tollgate-anthropic "$tg_port" /v1/messages "$here/anthropic_stream_request.json" 1 \
    2>"$dir/check-stream.err" || { cat "$dir/check-stream.err" >&2; die "stream check failed"; }
  if awk -F'\t' '$4 != 0 || $5 != 0 { bad = 1 } END { exit !bad }' "$dir/check-stream.out"; then
    cat "$dir/check-stream.err" "$dir/check-stream.out" >&2
    die "a stream through Tollgate failed (columns: target conc streams errors bad_chunks ...)"
  fi
  checked_calls=$(( checked_calls + 2 ))
fi

# ---------------------------------------------------------------- load (wrk)
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

if part load; then
  say "load: warm-up ${warmup} s per target at $conns connections"
  for t in "${targets[@]}"; do run_wrk warmup "$t" "$conns" "$warmup"; done
  for r in $(seq 1 "$rounds"); do
    n=${#targets[@]}
    for k in $(seq 0 $(( n - 1 ))); do
      t=${targets[$(( (k + r - 1) % n ))]}
      run_wrk "$r" "$t" "$conns" "$secs"
      run_wrk "$r" "$t" 1 "$secs"
    done
  done
fi

# ---------------------------------------------------------------- stream
stream_tsv=$dir/stream.tsv
: >"$stream_tsv"
if part stream; then
  for run in $stream_runs; do
    c=${run%%:*}
    n=${run#*:}
    say "streaming: $n streams per target at concurrency $c (64 chunks 20 ms apart, ~$(( (n + c - 1) / c * 13 * 4 / 10 )) s)"
    run_helper "$dir/stream.out" "$py" "$here/bench_client.py" stream --concurrency "$c" --count "$n" --slices 5 \
      --chunks "$stream_chunks" \
      --target mock "$mock_port" /stream/v1/chat/completions "$here/openai_stream_request.json" 0 \
      --target nginx "$proxy_port" /stream/v1/chat/completions "$here/openai_stream_request.json" 0 \
      --target tollgate "$tg_port" /v1/chat/completions "$here/openai_stream_request.json" 0 \
      --target tollgate-anthropic "$tg_port" /v1/messages "$here/anthropic_stream_request.json" 1 \
      || die "the streaming client failed"
    cat "$dir/stream.out" >>"$stream_tsv"
    awk -F'\t' '{ printf "gateway_overhead: stream c=%-3s %-18s streams %s errors %s bad %s  TTFT p50 %s us p99 %s us  gap p50 %s us p99 %s us  held back %s of %s\n", $2, $1, $3, $4, $5, $6, $7, $8, $9, $10, $11 }' "$dir/stream.out" >&2
  done
  tg_stream_ok=$(awk -F'\t' '$1 ~ /^tollgate/ { s += $3 - $4 } END { print s + 0 }' "$stream_tsv")
  tg_stream_failed=$(awk -F'\t' '$1 ~ /^tollgate/ { s += $4 } END { print s + 0 }' "$stream_tsv")
fi

# ---------------------------------------------------------------- scale
scale_n=0
scale_limited=0
if part scale; then
  scale_n=$streams_wanted
  fit=$(( (nofile - 256) / 2 ))
  if [ "$scale_n" -gt "$fit" ]; then
    scale_n=$(( fit / 100 * 100 ))
    scale_limited=1
    say "scale: the open-files hard limit ($nofile, not raisable here) holds $scale_n streams through Tollgate, not $streams_wanted (2 sockets each)"
  fi
  say "scale: $scale_n concurrent streams through Tollgate ($long_chunks chunks 1 s apart)"
  run_helper "$dir/scale.out" "$py" "$here/bench_client.py" scale --port "$tg_port" --path /v1/chat/completions \
    --body "$here/openai_long_request.json" --n "$scale_n" --pid "$tg_pid" --health-port "$tg_port" \
    --chunks "$long_chunks" || die "the scale client failed"
  scale_line=$(grep '^RESULT ' "$dir/scale.out") || die "no RESULT from the scale client"
  declare -A sc
  for kv in ${scale_line#RESULT }; do sc[${kv%%=*}]=${kv#*=}; done
  scale_complete=${sc[complete]}
  scale_failed=$(( sc[errors] + sc[bad_chunks] ))
  say "scale: $scale_line"
fi

# ---------------------------------------------------------------- metering check
metering=skipped
if [ "$main_tg" = 1 ]; then
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
  completed=$(( tg_wrk_requests + checked_calls + tg_stream_ok + scale_complete ))
  tg_runs=$(awk -F'\t' 'NR > 1 && $2 ~ /^tollgate/' "$results" | wc -l)
  max_inflight=$(( $(awk -F'\t' 'NR > 1 && $2 ~ /^tollgate/ { s += $3 } END { print s + 0 }' "$results") + tg_stream_failed + scale_failed ))
  metering=ok
  [ "$rows" = "$upstream_calls" ] || metering=MISMATCH
  if [ "$rows" -lt "$completed" ] || [ "$(( rows - completed ))" -gt "$max_inflight" ]; then metering=MISMATCH; fi
fi
# (The Tollgates below write usage rows too; they are not counted.)

# ---------------------------------------------------------------- footprint
if part footprint; then
  say "footprint: $starts starts of Tollgate, ready = first 200 from GET /readyz"
  run_helper "$dir/footprint.out" "$py" "$here/bench_client.py" start --port "$start_port" --runs "$starts" \
    --log "$dir/footprint-tollgate.log" -- "$bin" serve --config "$here/tollgate.yaml" --listen "127.0.0.1:$start_port" \
    || { tail -n 20 "$dir/footprint-tollgate.log" >&2; die "footprint: Tollgate did not start"; }
  fp_line=$(grep '^RESULT ' "$dir/footprint.out") || die "no RESULT from the footprint client"
  declare -A fp
  for kv in ${fp_line#RESULT }; do fp[${kv%%=*}]=${kv#*=}; done
fi

# ---------------------------------------------------------------- callgrind
cg_out=$dir/callgrind
declare -A cg_ir
cg_measure() { # NAME PORT PATH BODY_FILE ANTHROPIC(0/1) OUT_BASE
  local name=$1 port=$2 path=$3 body=$4 anth=() base=$6 f i
  [ "$5" = 1 ] && anth=(--anthropic)
  say "callgrind $name: $cg_warmup calls uninstrumented, instrumentation on, 20 calls, zero, $cg_calls calls, dump"
  run_helper "$dir/cg-calls.out" "$py" "$here/bench_client.py" calls --port "$port" --path "$path" --body "$body" \
    "${anth[@]}" --n "$cg_warmup" || die "callgrind $name: warm-up calls failed"
  callgrind_control -i on "$cg_pid" >>"$dir/callgrind_control.log" 2>&1 || die "callgrind_control -i on $cg_pid failed"
  run_helper "$dir/cg-calls.out" "$py" "$here/bench_client.py" calls --port "$port" --path "$path" --body "$body" \
    "${anth[@]}" --n 20 || die "callgrind $name: calls failed"
  callgrind_control -z "$cg_pid" >>"$dir/callgrind_control.log" 2>&1 || die "callgrind_control -z $cg_pid failed"
  run_helper "$dir/cg-calls.out" "$py" "$here/bench_client.py" calls --port "$port" --path "$path" --body "$body" \
    "${anth[@]}" --n "$cg_calls" || die "callgrind $name: calls failed"
  sleep 1  # the usage writer's flush (200 ms interval) of the last calls
  rm -f "$base".[0-9]*
  callgrind_control --dump="$name" "$cg_pid" >>"$dir/callgrind_control.log" 2>&1 || die "callgrind_control -d $cg_pid failed"
  callgrind_control -i off "$cg_pid" >>"$dir/callgrind_control.log" 2>&1 || true
  f=""
  for i in $(seq 1 300); do
    f=$(ls "$base".[0-9]* 2>/dev/null | sort -V | tail -n1 || true)
    [ -n "$f" ] && grep -q '^totals:' "$f" 2>/dev/null && break
    f=""
    sleep 0.1
  done
  [ -n "$f" ] || die "callgrind $name: no dump in $cg_out"
  mv "$f" "$cg_out/$name.callgrind.out"
  cg_ir[$name]=$(awk '/^totals:/ { print $2; exit }' "$cg_out/$name.callgrind.out")
  say "callgrind $name: ${cg_ir[$name]} Ir over $cg_calls calls ($(( cg_ir[$name] / cg_calls )) Ir/call)"
}
if part callgrind; then
  mkdir -p "$cg_out"
  sed -e 's/master_process on;/master_process off;/' -e "s/127\.0\.0\.1:$proxy_port /127.0.0.1:$cg_proxy_port /" \
      -e "s#$dir/proxy.pid#$dir/cg-proxy.pid#" -e "s#$dir/proxy-access.log#$dir/cg-proxy-access.log#" \
      "$dir/proxy.conf" >"$dir/cg-proxy.conf"
  setsid valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$cg_out/nginx.out" \
    "$nginx_bin" -p "$dir" -c "$dir/cg-proxy.conf" -e "$dir/cg-proxy-error.log" >"$dir/cg-nginx.log" 2>&1 &
  cg_pid=$!
  wait_http "http://127.0.0.1:$cg_proxy_port/v1/chat/completions" "$cg_pid" "nginx under callgrind" "$dir/cg-nginx.log" 600
  cg_measure nginx "$cg_proxy_port" /v1/chat/completions "$here/openai_request.json" 0 "$cg_out/nginx.out"
  stop_pid "$cg_pid" TERM 20
  cg_pid=""
  start_tollgate "$dir/cg-tollgate.log" "$dir/cg-tollgate.port" \
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$cg_out/tollgate.out"
  cg_pid=$started_pid
  check_call "$started_port" /v1/chat/completions "$here/openai_request.json"
  cg_measure tollgate-chat "$started_port" /v1/chat/completions "$here/openai_request.json" 0 "$cg_out/tollgate.out"
  cg_measure tollgate-anthropic "$started_port" /v1/messages "$here/anthropic_request.json" 1 "$cg_out/tollgate.out"
  stop_pid "$cg_pid" TERM 60
  cg_pid=""
  callgrind_annotate --inclusive=no "$cg_out/tollgate-chat.callgrind.out" 2>/dev/null \
    | awk 'found && NF && !/^-+$/ && n < 15 { print; n++ } /file:function/ { found = 1 }' >"$cg_out/tollgate-chat.top15.txt" || true
  {
    echo "gateway_overhead: Tollgate /v1/chat/completions, top 15 functions by self (exclusive) Ir over $cg_calls calls (callgrind_annotate --inclusive=no; $cg_out/tollgate-chat.top15.txt):"
    sed 's/^/    /' "$cg_out/tollgate-chat.top15.txt"
  } >&2
fi

# ---------------------------------------------------------------- tables
cpu_model=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
machine="${cpu_model:-unknown CPU}, $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, Linux $(uname -r)"
versions="$("$nginx_bin" -v 2>&1 | sed 's/.*version: //')"
if part load; then versions+=", $(wrk -v 2>&1 | head -n1 | awk '{print $1, $2}' || true)"; fi  # wrk -v exits 1
if part callgrind; then versions+=", $(valgrind --version || true)"; fi
versions+=", Python $("$py" -c 'import platform; print(platform.python_version())'), Tollgate $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')"
mib() { calc "$1 / 1024" | xargs printf '%.1f'; }
ms() { calc "$1 / 1000" | xargs printf '%.1f ms'; }  # from µs
echo
echo "Gateway overhead, $(date -u '+%Y-%m-%d %H:%M UTC'); $machine; $versions; parts: $(echo $parts)"

if part load; then
  echo
  echo "### Non-streamed load"
  echo
  echo "wrk -t1, ${secs} s per run at $conns and at 1 connection, $rounds rounds (medians), ${warmup} s warm-up; one I/O thread / one nginx worker; non-streamed ~${#answer}-byte answer"
  echo
  awk -F'\t' -v C="$conns" -v R="$rounds" -v S="$dir/load-summary" '
    function median(s,   a, n, i, j, x) {
      n = split(s, a, " ")
      if (n == 0) return ""
      for (i = 2; i <= n; i++) { x = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function add(k, v) { list[k] = (k in list) ? list[k] " " v : v }
    function fmt(v, d) { return v == "" ? "-" : sprintf("%." d "f", v) }
    NR == 1 { next }
    { err[$2] += $8; if ($10 > hwm[$2]) hwm[$2] = $10; if ($1 == 1 && $10 > hwm1[$2]) hwm1[$2] = $10 }
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
        if (tg) printf "rrps_%s %s\nrcpu_%s %s\nradd_%s %s\n", t, median(list["rrps" t]), t, median(list["rcpu" t]), t, median(list["radd" t]) >S
      }
      h1 = hwm1["tollgate"]; if (hwm1["tollgate-anthropic"] > h1) h1 = hwm1["tollgate-anthropic"]
      printf "errors_tollgate %d\nhwm1_tollgate %d\nhwm_tollgate %d\n", err["tollgate"] + err["tollgate-anthropic"], h1, hwm["tollgate"] >S
    }' "$results"
  echo
  echo "added p50 @1: the target's median latency at 1 connection minus the mock's in the same round. CPU/req: utime+stime of the serving process (nginx: its worker; Tollgate: all its threads, PostgreSQL not included) over the requests wrk completed. Peak RSS: VmHWM. Errors: non-2xx and socket errors, all runs including warm-up. Ratios: per round, median over rounds."
  declare -A ls_
  while read -r k v; do ls_[$k]=$v; done <"$dir/load-summary"
  v=${ls_[rcpu_tollgate]:-}; check "CPU per request at most 1.5x nginx's (@$conns)" "${v:+$(printf '%.2f' "$v")x}" "$(verdict_le "$v" 1.5)"
  v=${ls_[rcpu_tollgate-anthropic]:-}; check "CPU per request, translating (/v1/messages), at most 2x nginx's" "${v:+$(printf '%.2f' "$v")x}" "$(verdict_le "$v" 2)"
  v=${ls_[rrps_tollgate]:-}; check "Requests per second at $conns connections at least 0.8x nginx's" "${v:+$(printf '%.2f' "$v")x}" "$(verdict_ge "$v" 0.8)"
  v=${ls_[radd_tollgate]:-}; check "Added median latency at 1 connection at most 1.5x nginx's" "${v:+$(printf '%.2f' "$v")x}" "$(verdict_le "$v" 1.5)"
  check "Zero errors (load, through Tollgate)" "${ls_[errors_tollgate]}" "$( [ "${ls_[errors_tollgate]}" = 0 ] && echo PASS || echo MISS)"
  if [ "$rounds" -ge 2 ]; then
    v=$(calc "(${ls_[hwm_tollgate]} - ${ls_[hwm1_tollgate]}) * 100 / ${ls_[hwm1_tollgate]}")
    check "Memory flat across rounds (Tollgate VmHWM grows at most 5% after round 1)" \
      "$(mib "${ls_[hwm1_tollgate]}") MiB after round 1, $(mib "${ls_[hwm_tollgate]}") MiB after round $rounds ($(printf '%+.1f' "$v")%)" "$(verdict_le "$v" 5)"
  fi
fi

if part stream; then
  echo
  echo "### Streaming"
  echo
  echo "OpenAI SSE mock: 64 content chunks, the first at once, then 20 ms apart; one new connection per stream; per concurrency the targets interleaved in 5 slices. Added = target minus the mock directly, same concurrency; gap = time between consecutive content chunks at the client."
  echo
  echo "| target | conc. | streams | errors | TTFT p50 | TTFT p99 | added TTFT p50 | added TTFT p99 | added TTFT p50 vs nginx | gap p50 − 20 ms | gap p99 − 20 ms | gap vs mock p50 / p99 | held back | verdict |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
  awk -F'\t' -v S="$dir/stream-summary" '
    { key[NR] = $1 SUBSEP $2; for (i = 1; i <= 11; i++) v[$1, $2, i] = $i; order[NR] = $1 "\t" $2 }
    function us(x) { return x == "" ? "-" : sprintf("%d µs", x) }
    function sgn(x) { return sprintf("%+d µs", x) }
    END {
      for (r = 1; r <= NR; r++) {
        split(order[r], k, "\t"); t = k[1]; c = k[2]
        m50 = v["mock", c, 6]; m99 = v["mock", c, 7]; g50 = v["mock", c, 8]; g99 = v["mock", c, 9]
        a50 = v[t, c, 6] - m50; a99 = v[t, c, 7] - m99; n50 = v["nginx", c, 6] - m50
        ratio = (t ~ /^tollgate/ && n50 > 0) ? sprintf("%.2fx", a50 / n50) : "-"
        errs = v[t, c, 4] + v[t, c, 5]
        verdict = "-"
        if (t ~ /^tollgate/) {
          why = ""
          if (a50 > 500) why = why sprintf(", added TTFT %d µs > 500", a50)
          if (v[t, c, 10] > 0) why = why sprintf(", %d chunks held back", v[t, c, 10])
          if (errs > 0) why = why sprintf(", %d failed streams", errs)
          verdict = why == "" ? "PASS" : "MISS (" substr(why, 3) ")"
          printf "%s\t%s\t%d\t%d\t%d\t%d\t%d\n", t, c, a50, a99, v[t, c, 10], v[t, c, 11], errs >S
        }
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", t, c, v[t, c, 3], errs,
          us(v[t, c, 6]), us(v[t, c, 7]), t == "mock" ? "-" : sgn(a50), t == "mock" ? "-" : sgn(a99), ratio,
          sgn(v[t, c, 8] - 20000), sgn(v[t, c, 9] - 20000),
          t == "mock" ? "-" : sgn(v[t, c, 8] - g50) " / " sgn(v[t, c, 9] - g99),
          v[t, c, 10] " of " v[t, c, 11], verdict
      }
    }' "$stream_tsv"
  echo
  echo "errors: failed streams (connection or HTTP errors, or not 64 content chunks). held back: content chunks that arrived in the same read as the next one or less than 2 ms before it, of all consecutive pairs (63 per stream); the mock and nginx rows show the client's own share. Target (issue): added TTFT (median) at most 0.5 ms, no chunk held back."
  while IFS=$'\t' read -r t c a50 a99 held pairs errs; do
    check "Streaming: added time to first token at most 0.5 ms ($t, concurrency $c)" "p50 ${a50} µs (p99 ${a99} µs)" "$(verdict_le "$a50" 500)"
    check "Streaming: no chunk held back ($t, concurrency $c)" "$held of $pairs$( [ "$errs" = 0 ] || echo ", $errs failed streams")" \
      "$( [ "$held" = 0 ] && [ "$errs" = 0 ] && echo PASS || echo MISS)"
  done <"$dir/stream-summary"
fi

if part scale; then
  # The issue's figure is 10,000 streams in at most 200 MB (taken as 200 x 10^6 bytes of VmRSS).
  issue_streams=10000
  opened=${sc[open]}
  per_kb=0
  [ "$opened" -gt 0 ] && per_kb=$(calc "(${sc[rss_open_kb]} - ${sc[rss_before_kb]}) / $opened")
  echo
  echo "### Scale: concurrent open streams through Tollgate"
  echo
  echo "Long streams ($long_chunks content chunks 1 s apart) opened 256 at a time by one Python asyncio client (on the same 2 cores); RSS and fds read once every stream had its first chunk (streams that had already ended by then do not count as open); /healthz probed every 200 ms throughout by a separate process, one connection per probe (10 s timeout)."
  echo
  echo "| streams open at once | all had a first chunk after (Tollgate CPU meanwhile, per stream; includes relaying the open streams' chunks) | RSS before | RSS with streams open | RSS per stream | fds open | completed | failed | /healthz ok / failed (p50, p99, max) | RSS after they ended | RSS at 10,000 streams ≤ 200 MB |"
  echo "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
  if [ "$opened" -ge "$issue_streams" ]; then
    rss_at=${sc[rss_open_kb]}
    rss_note="$(mib "$rss_at") MiB at $opened streams"
  else
    rss_at=$(calc "${sc[rss_before_kb]} + $per_kb * $issue_streams")
    rss_note="$(mib "$rss_at") MiB projected from $opened streams"
  fi
  scale_verdict=$(verdict_le "$rss_at" $(( 200 * 1000 * 1000 / 1024 )))
  [ "$opened" = "$scale_n" ] || scale_verdict="MISS ($opened of $scale_n streams open at once)"
  [ "$scale_failed" = 0 ] || scale_verdict="MISS ($scale_failed streams failed)"
  [ "${sc[health_failed]}" = 0 ] || scale_verdict="MISS (${sc[health_failed]} /healthz probes failed)"
  echo "| $opened of $scale_n | ${sc[open_s]} s (${sc[cpu_open_s]} s, $(calc "${sc[cpu_open_s]} * 1000000 / ${sc[first]}" | xargs printf '%.0f') µs) | $(mib "${sc[rss_before_kb]}") MiB | $(mib "${sc[rss_open_kb]}") MiB | $(printf '%.1f' "$per_kb") KiB | ${sc[fds_open]} | ${sc[complete]} | $scale_failed | ${sc[health_ok]} / ${sc[health_failed]} ($(ms "${sc[health_p50_us]}"), $(ms "${sc[health_p99_us]}"), $(ms "${sc[health_max_us]}")) | $(mib "${sc[rss_after_kb]}") MiB | $rss_note: $scale_verdict |"
  if [ "$scale_limited" = 1 ]; then
    echo
    echo "Not measured at $streams_wanted streams: the open-files hard limit here is $nofile and cannot be raised (no CAP_SYS_RESOURCE); each stream holds two sockets in Tollgate (caller and upstream), so $scale_n streams were opened."
  fi
  if [ "$opened" -lt "$issue_streams" ]; then
    echo
    echo "RSS at 10,000 streams projected as RSS before + 10,000 x RSS per stream."
  fi
  check "10,000 open streams in at most 200 MB (VmRSS)" "$rss_note; $(printf '%.1f' "$per_kb") KiB per stream" "$scale_verdict"
fi

if part footprint; then
  echo
  echo "### Footprint"
  echo
  echo "| starts | ready p50 (exec → first 200 from /readyz) | ready max | idle RSS p50 (1 s after ready) | nginx proxy idle RSS (master + worker) | idle RSS vs nginx | ready < 0.5 s |"
  echo "| ---: | ---: | ---: | ---: | ---: | ---: | --- |"
  echo "| ${fp[runs]} | ${fp[ready_ms_p50]} ms | ${fp[ready_ms_max]} ms | $(mib "${fp[rss_kb_p50]}") MiB | $(mib "$nginx_idle_kb") MiB | $(calc "${fp[rss_kb_p50]} / $nginx_idle_kb" | xargs printf '%.1f')x | $(verdict_le "${fp[ready_ms_p50]}" 499.999) |"
  check "Ready in under half a second with no local model (median of ${fp[runs]} starts)" "${fp[ready_ms_p50]} ms" "$(verdict_le "${fp[ready_ms_p50]}" 499.999)"
  check "Idle memory (no target; for the record)" "$(mib "${fp[rss_kb_p50]}") MiB" "-"
fi

if part callgrind; then
  echo
  echo "### Instructions per request (callgrind)"
  echo
  echo "valgrind --tool=callgrind, all threads of the process, $cg_calls calls on one keep-alive connection after $cg_warmup + 20 warm-up calls; the same ~${#answer}-byte non-streamed answer. Stable across runs, unlike the timings."
  echo
  echo "| target | calls | Ir | Ir per call | vs nginx | target (as for CPU per request) |"
  echo "| --- | ---: | ---: | ---: | ---: | --- |"
  n_ir=$(( cg_ir[nginx] / cg_calls ))
  for t in nginx tollgate-chat tollgate-anthropic; do
    per=$(( cg_ir[$t] / cg_calls ))
    if [ "$t" = nginx ]; then
      echo "| nginx proxy | $cg_calls | ${cg_ir[$t]} | $per | - | - |"
    else
      limit=1.5
      [ "$t" = tollgate-anthropic ] && limit=2
      r=$(calc "$per / $n_ir" | xargs printf '%.2f')
      echo "| $t | $cg_calls | ${cg_ir[$t]} | $per | ${r}x | ≤ ${limit}x: $(verdict_le "$r" "$limit") |"
      check "Instructions per request at most ${limit}x nginx's ($t, callgrind)" "$per Ir (${r}x)" "$(verdict_le "$r" "$limit")"
    fi
  done
  echo
  echo "Top 15 functions of Tollgate's /v1/chat/completions profile by self Ir: stderr$( [ "${BENCH_KEEP:-0}" = 1 ] && echo " and $cg_out/tollgate-chat.top15.txt; dumps in $cg_out (callgrind_annotate FILE)" || echo " (BENCH_KEEP=1 keeps the dumps)")."
fi

if [ "$main_tg" = 1 ]; then
  echo
  echo "Metering: $metering. usage_events rows: $rows ($rows_200 with status 200; by status: $by_status); calls Tollgate sent to the mock: $upstream_calls; calls completed through Tollgate: $completed (wrk $tg_wrk_requests, streams $tg_stream_ok, scale $scale_complete, checks $checked_calls; rows may exceed this by calls in flight when wrk stopped or failed streams, at most $max_inflight)."
  check "Every call metered exactly once (usage rows = upstream calls)" "$rows rows, $upstream_calls upstream calls, $completed completed" "$( [ "$metering" = ok ] && echo PASS || echo MISS)"
fi

echo
echo "### Targets (issue 12)"
echo
echo "| target | measured | verdict |"
echo "| --- | --- | --- |"
awk -F'\t' '{ printf "| %s | %s | %s |\n", $1, $2 == "" ? "-" : $2, $3 }' "$checks"
say "raw results in $dir$( [ "${BENCH_KEEP:-0}" = 1 ] || echo ' (set BENCH_KEEP=1 to keep them)')"
[ "$metering" != MISMATCH ] || exit 3
ok=1
