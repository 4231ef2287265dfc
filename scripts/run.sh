#!/usr/bin/env bash
# Starts Tollgate with the bundled local model and a private PostgreSQL, ready for curl.
#
#   scripts/run.sh            serve on 127.0.0.1:8080 until Ctrl-C
#   scripts/run.sh --smoke    serve on a free port, send one plain and one streamed chat
#                             completion, show them and their usage rows, stop; exit 0 only if
#                             everything worked
#
# Steps: scripts/setup.sh; Release build of build/bin/tollgate (with the CUDA backend,
# -DENABLE_CUDA=ON, when nvcc is found and `nvidia-smi -L` lists a GPU, so local models run on
# it: providers' `device` defaults to auto); the model stories260K.gguf from
# models/ or ../shared/models/; PostgreSQL: TOLLGATE_DATABASE_URL if set, else a private cluster in
# .data/pg (scripts/pg.sh) with a database `tollgate`; `tollgate migrate`; a first API key (saved in
# .data/first-key and reused while it is valid; the database URL goes to .data/database-url);
# `tollgate serve`. On exit (Ctrl-C included) it stops the gateway and the PostgreSQL it started.
#
# Environment: TOLLGATE_DATABASE_URL (use this database instead of a private cluster),
# TOLLGATE_LISTEN (default 127.0.0.1:8080), TOLLGATE_CONFIG (default config/tollgate.yaml),
# TOLLGATE_MODEL_DIR (folder holding stories260K.gguf), TOLLGATE_PG_DIR (default .data/pg),
# TOLLGATE_BUILD_DIR (default build),
# OPENAI_API_KEY, DEEPSEEK_API_KEY, ... (switch on the remote providers in the config).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

smoke=0
for a in "$@"; do
  case $a in
    --smoke) smoke=1 ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument $a (try --help)" >&2; exit 2 ;;
  esac
done

say() { echo "run.sh: $*" >&2; }
die() { echo "run.sh: $*" >&2; exit 1; }

data=$root/.data
build_dir=$root/${TOLLGATE_BUILD_DIR:-build}
bin=$build_dir/bin/tollgate
config=${TOLLGATE_CONFIG:-$root/config/tollgate.yaml}
model_name=stories260K.gguf
hf_sha256=270cba1bd5109f42d03350f60406024560464db173c0e387d91f0426d3bd256d
shared_sha256=080568782485f81b839fafc50a7f0d478e337a42b5eb8ba68343042fcf1beec2

gw_pid=""
pg_dir=""
pg_started=0
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$gw_pid" ] && kill -0 "$gw_pid" 2>/dev/null; then
    say "stopping the gateway (pid $gw_pid)"
    kill -TERM "$gw_pid" 2>/dev/null || true
    local i
    for i in $(seq 1 200); do kill -0 "$gw_pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$gw_pid" 2>/dev/null; then
      say "gateway still running after 20 s; killing it"
      kill -KILL "$gw_pid" 2>/dev/null || true
    fi
    wait "$gw_pid" 2>/dev/null || true
  fi
  if [ "$pg_started" = 1 ]; then
    "$root/scripts/pg.sh" stop "$pg_dir" || true
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- 1. the model (fail fast)
find_model_dir() {
  local d
  for d in "${TOLLGATE_MODEL_DIR:-}" "$root/models" "$root/../shared/models"; do
    [ -n "$d" ] && [ -f "$d/$model_name" ] && { (cd "$d" && pwd -P); return 0; }
  done
  return 1
}
if ! TOLLGATE_MODEL_DIR=$(find_model_dir); then
  cat >&2 <<EOF
run.sh: the local model $model_name was not found in:
  ${TOLLGATE_MODEL_DIR:+$TOLLGATE_MODEL_DIR (TOLLGATE_MODEL_DIR)
  }$root/models
  $(cd "$root/.." && pwd)/shared/models
Download it from Hugging Face, repository ggml-org/tiny-llamas, file $model_name
(1,185,376 bytes; Karpathy's tinyllamas stories260K, MIT license):
  mkdir -p models
  curl -L -o models/$model_name https://huggingface.co/ggml-org/tiny-llamas/resolve/main/$model_name
  sha256sum models/$model_name   # must print $hf_sha256
then run scripts/run.sh again.
EOF
  exit 1
fi
export TOLLGATE_MODEL_DIR
model_sha=$(sha256sum "$TOLLGATE_MODEL_DIR/$model_name" | cut -d' ' -f1)
case $model_sha in
  "$hf_sha256"|"$shared_sha256") ;;
  *) say "warning: $TOLLGATE_MODEL_DIR/$model_name has sha256 $model_sha, expected $hf_sha256 (Hugging Face) or $shared_sha256" ;;
esac
say "model: $TOLLGATE_MODEL_DIR/$model_name"

mkdir -p "$data"

# ---------------------------------------------------------------- 2. dependencies and build
bash "$root/scripts/setup.sh"
# The CUDA backend where it can run: a CUDA toolkit, an NVIDIA driver and a GPU.
# Elsewhere the build folder keeps what it had (a CUDA build also runs without
# a GPU, on the CPU; scripts/test.sh builds with CUDA wherever nvcc is), so
# switching between the two scripts rebuilds nothing.
cuda_flag=()
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  gpus=$(nvidia-smi -L 2>/dev/null || true)  # "GPU 0: NVIDIA H200 (UUID: ...)" per device
  if grep -q '^GPU ' <<<"$gpus"; then cuda_flag=(-DENABLE_CUDA=ON); fi
elif nvidia-smi -L >/dev/null 2>&1; then
  say "an NVIDIA GPU is here but no CUDA toolkit (nvcc): building for the CPU only"
fi
cuda_note=", CUDA setting of the build folder kept"
[ ${#cuda_flag[@]} -gt 0 ] && cuda_note=", with the CUDA backend"
say "building ${bin#$root/} (Release$cuda_note)"
cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release "${cuda_flag[@]}" >/dev/null
cmake --build "$build_dir" -j"$(nproc)" --target tollgate
[ -x "$bin" ] || die "build finished but $bin is missing"

psql_bin=$(command -v psql || true)
[ -n "$psql_bin" ] || psql_bin=$(ls /usr/lib/postgresql/*/bin/psql 2>/dev/null | sort -V | tail -n1)
[ -n "$psql_bin" ] || die "psql not found (run scripts/setup.sh)"
psql_q() { "$psql_bin" -X -q -v ON_ERROR_STOP=1 "$@"; }

# ---------------------------------------------------------------- 3. PostgreSQL
if [ -n "${TOLLGATE_DATABASE_URL:-}" ]; then
  db_url=$TOLLGATE_DATABASE_URL
  say "database: $db_url (TOLLGATE_DATABASE_URL)"
else
  pg_dir=${TOLLGATE_PG_DIR:-$data/pg}
  # The server runs as user postgres, which must be able to reach the data directory.
  if [ -z "${TOLLGATE_PG_DIR:-}" ] && [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$data" 2>/dev/null; then
    pg_dir=/var/tmp/tollgate-pg-$(printf '%s' "$root" | sha256sum | cut -c1-12)
    say "note: user postgres cannot enter $data (a parent directory is private); using $pg_dir instead"
  fi
  scripts/pg.sh status "$pg_dir" || pg_started=1
  admin_url=$(scripts/pg.sh start "$pg_dir")
  if [ "$pg_started" = 0 ]; then say "PostgreSQL in $pg_dir was already running; leaving it running on exit"; fi
  if [ "$(psql_q -At -d "$admin_url" -c "SELECT 1 FROM pg_database WHERE datname = 'tollgate'")" != 1 ]; then
    psql_q -d "$admin_url" -c 'CREATE DATABASE tollgate'
    say "created database tollgate"
  fi
  db_url=${admin_url%/*}/tollgate
fi
export TOLLGATE_DATABASE_URL=$db_url
printf '%s\n' "$db_url" >"$data/database-url"

# ---------------------------------------------------------------- 4. schema and first key
"$bin" migrate

key_is_valid() {
  # key_hash is the lowercase hex SHA-256 of the key (migrations/001_init.sql).
  local n
  n=$(psql_q -At -d "$db_url" -v k="$1" 2>/dev/null <<'SQL' || true
SELECT count(*) FROM api_keys
 WHERE revoked_at IS NULL AND key_hash = encode(sha256(convert_to(:'k', 'UTF8')), 'hex');
SQL
)
  [ "$n" = 1 ]
}
key=""
if [ -s "$data/first-key" ]; then
  saved=$(head -n1 "$data/first-key")
  if key_is_valid "$saved"; then
    key=$saved
    say "reusing the API key in .data/first-key"
  else
    say "the key in .data/first-key is not valid in this database; creating a new one"
  fi
fi
if [ -z "$key" ]; then
  key=$("$bin" keys create --name first-key)
  [[ "$key" == tg-* ]] || die "tollgate keys create printed no key"
  (umask 077 && printf '%s\n' "$key" >"$data/first-key")
  say "created an API key (saved in .data/first-key)"
fi

# The admin API's token (billing.admin_token): TOLLGATE_ADMIN_TOKEN, else one made once and kept
# in .data/admin-token.
if [ -z "${TOLLGATE_ADMIN_TOKEN:-}" ]; then
  if [ ! -s "$data/admin-token" ]; then
    (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$data/admin-token")
    say "created an admin API token (saved in .data/admin-token)"
  fi
  TOLLGATE_ADMIN_TOKEN=$(cat "$data/admin-token")
fi
export TOLLGATE_ADMIN_TOKEN

# ---------------------------------------------------------------- 5. serve
# Sets gw_pid and port. Not to be called in $(...): the gateway must be this shell's child.
start_gateway() { # LISTEN PORT_FILE [LOG] [HINT]
  rm -f "$2"
  # Own session: a terminal Ctrl-C reaches only this script, whose trap stops the gateway once,
  # with SIGTERM, by PID.
  if [ -n "${3:-}" ]; then  # log file
    setsid "$bin" serve --config "$config" --listen "$1" --port-file "$2" >"$3" 2>&1 &
  else
    setsid "$bin" serve --config "$config" --listen "$1" --port-file "$2" &
  fi
  gw_pid=$!
  local i
  for i in $(seq 1 600); do
    if ! kill -0 "$gw_pid" 2>/dev/null; then
      local rc=0
      wait "$gw_pid" 2>/dev/null || rc=$?
      gw_pid=""
      [ -n "${3:-}" ] && tail -n 30 "$3" >&2
      die "tollgate serve exited with status $rc before it was ready${4:-}"
    fi
    if [ -s "$2" ] && port=$(tr -dc 0-9 <"$2") && [ -n "$port" ] \
        && curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  die "tollgate serve did not become healthy within 60 s"
}

if [ "$smoke" = 0 ]; then
  listen=${TOLLGATE_LISTEN:-127.0.0.1:8080}
  start_gateway "$listen" "$data/port" "" " (if $listen is taken, pick another address with TOLLGATE_LISTEN=HOST:PORT)"
  host=${listen%:*}
  [ "$host" = 0.0.0.0 ] && host=127.0.0.1
  url="http://$host:$port"
  stops_pg=""
  [ "$pg_started" = 1 ] && stops_pg=" and the PostgreSQL it started"
  cat >&2 <<EOF

Tollgate is running on $url  (Ctrl-C stops it$stops_pg)
  API key:   $key   (.data/first-key)
  Admin API: $url/admin/v1   (Authorization: Bearer \$(cat .data/admin-token); README "Accounts, credits and limits")
  Dashboard: $url/dashboard   (paste the API key, or the admin token for everything)
  Database:  $db_url   (.data/database-url)
  Models:    curl -sS $url/v1/models

Try it:
curl -sS $url/v1/chat/completions -H "Authorization: Bearer $key" -H "Content-Type: application/json" -d '{"model": "local/stories260k", "messages": [{"role": "user", "content": "Once upon a time"}], "max_tokens": 64}'

EOF
  rc=0
  wait "$gw_pid" || rc=$?
  gw_pid=""
  say "the gateway exited with status $rc"
  exit "$rc"
fi

# ---------------------------------------------------------------- --smoke
smoke_dir=$data/smoke
rm -rf "$smoke_dir"
mkdir -p "$smoke_dir"
# Its own usage spool: a gateway started by `scripts/run.sh` may hold .data/spool.
TOLLGATE_SPOOL_DIR=$smoke_dir/spool start_gateway 127.0.0.1:0 "$smoke_dir/port" "$smoke_dir/gateway.log"
url="http://127.0.0.1:$port"
say "gateway pid $gw_pid on $url (log .data/smoke/gateway.log)"
max_tokens=32
prompt="Once upon a time"
body_plain=$(printf '{"model": "local/stories260k", "messages": [{"role": "user", "content": "%s"}], "temperature": 0, "max_tokens": %d}' "$prompt" "$max_tokens")
body_stream=$(printf '{"model": "local/stories260k", "messages": [{"role": "user", "content": "%s"}], "temperature": 0, "max_tokens": %d, "stream": true, "stream_options": {"include_usage": true}}' "$prompt" "$max_tokens")

failed=0
echo "== POST /v1/chat/completions (plain)" >&2
echo "\$ curl -sS $url/v1/chat/completions -H 'Authorization: Bearer tg-...' -d '$body_plain'" >&2
code=$(curl -sS -o "$smoke_dir/plain.json" -D "$smoke_dir/plain.headers" -w '%{http_code}' \
  "$url/v1/chat/completions" -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
  -d "$body_plain") || code=000
cat "$smoke_dir/plain.json" >&2; echo >&2
[ "$code" = 200 ] || { say "FAIL plain call: HTTP $code"; failed=1; }

echo "== POST /v1/chat/completions (streamed)" >&2
echo "\$ curl -sS -N $url/v1/chat/completions -H 'Authorization: Bearer tg-...' -d '$body_stream'" >&2
code=$(curl -sS -N -o "$smoke_dir/stream.sse" -w '%{http_code}' \
  "$url/v1/chat/completions" -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
  -d "$body_stream") || code=000
# The first and last events are enough to see the shape; the whole stream is in .data/smoke/stream.sse.
awk 'BEGIN { RS = ""; ORS = "\n\n" } { ev[NR] = $0 }
     END { for (i = 1; i <= NR; i++) if (i <= 3 || i > NR - 3) print ev[i]; else if (i == 4) print "... (" NR - 6 " more events)" }' \
  "$smoke_dir/stream.sse" >&2
[ "$code" = 200 ] || { say "FAIL streamed call: HTTP $code"; failed=1; }

echo "== checks" >&2
checks=$(node "$root/scripts/smoke_check.mjs" "$smoke_dir/plain.json" "$smoke_dir/stream.sse" "$max_tokens" \
  "$TOLLGATE_MODEL_DIR/stories260K-reference.json" "$prompt") || failed=1
eval "$checks"

echo "== usage_events rows" >&2
if [ -n "${PLAIN_ID:-}" ] && [ -n "${STREAM_ID:-}" ]; then
  rows_sql="SELECT request_id, model, provider, prompt_tokens, completion_tokens, cost_nano_usd, status,
                   streamed, finish_reason, latency_ms, ttft_ms
              FROM usage_events WHERE request_id IN ('$PLAIN_ID', '$STREAM_ID') ORDER BY created_at"
  found=""
  for i in $(seq 1 50); do  # rows are written behind (within ~200 ms); wait up to 5 s
    found=$(psql_q -At -F ' ' -d "$db_url" -c "SELECT request_id, prompt_tokens, completion_tokens, streamed, status FROM usage_events WHERE request_id IN ('$PLAIN_ID', '$STREAM_ID')" 2>/dev/null || true)
    [ "$(printf '%s\n' "$found" | grep -c .)" -ge 2 ] && break
    sleep 0.1
  done
  psql_q -d "$db_url" -c "$rows_sql" >&2 || true
  want_plain="$PLAIN_ID $PLAIN_PROMPT $PLAIN_COMPLETION f 200"
  want_stream="$STREAM_ID $STREAM_PROMPT $STREAM_COMPLETION t 200"
  for want in "$want_plain" "$want_stream"; do
    if printf '%s\n' "$found" | grep -qxF "$want"; then
      echo "  ok    row ${want%% *}: tokens, streamed flag and status match the response" >&2
    else
      echo "  FAIL  no row matching '$want' (found: ${found:-nothing})" >&2
      failed=1
    fi
  done
else
  echo "  FAIL  no request ids to look up" >&2
  failed=1
fi

echo "== GET /api/v1/key, GET /admin/v1/ledger/check" >&2
code=$(curl -sS -o "$smoke_dir/key.json" -w '%{http_code}' "$url/api/v1/key" -H "Authorization: Bearer $key") || code=000
cat "$smoke_dir/key.json" >&2; echo >&2
if [ "$code" = 200 ] && grep -q '"label"' "$smoke_dir/key.json"; then
  echo "  ok    /api/v1/key answers for the key" >&2
else
  echo "  FAIL  /api/v1/key: HTTP $code" >&2
  failed=1
fi
code=$(curl -sS -o "$smoke_dir/check.json" -w '%{http_code}' "$url/admin/v1/ledger/check" \
  -H "Authorization: Bearer $TOLLGATE_ADMIN_TOKEN") || code=000
if [ "$code" = 200 ] && grep -q '"ok":true' "$smoke_dir/check.json"; then
  echo "  ok    every balance equals its ledger (admin API /ledger/check)" >&2
else
  echo "  FAIL  /admin/v1/ledger/check: HTTP $code $(cat "$smoke_dir/check.json")" >&2
  failed=1
fi

echo "== GET /api/v1/stats/models, GET /dashboard" >&2
code=$(curl -sS -o "$smoke_dir/models.json" -w '%{http_code}' "$url/api/v1/stats/models?window=1h" \
  -H "Authorization: Bearer $TOLLGATE_ADMIN_TOKEN") || code=000
if [ "$code" = 200 ] && grep -q '"model":"local/stories260k"' "$smoke_dir/models.json"; then
  echo "  ok    the model rankings count the calls (usage rollups)" >&2
else
  echo "  FAIL  /api/v1/stats/models: HTTP $code $(cat "$smoke_dir/models.json")" >&2
  failed=1
fi
code=$(curl -sS -o "$smoke_dir/dashboard.html" -w '%{http_code}' "$url/dashboard") || code=000
if [ "$code" = 200 ] && grep -q '<title>' "$smoke_dir/dashboard.html"; then
  echo "  ok    the dashboard is served at $url/dashboard" >&2
else
  echo "  FAIL  /dashboard: HTTP $code" >&2
  failed=1
fi

echo "== POST /v1/responses, then previous_response_id, GET and DELETE /v1/responses/{id}" >&2
body_resp=$(printf '{"model": "local/stories260k", "input": "%s", "max_output_tokens": %d}' "$prompt" "$max_tokens")
echo "\$ curl -sS $url/v1/responses -H 'Authorization: Bearer tg-...' -d '$body_resp'" >&2
code=$(curl -sS -o "$smoke_dir/response.json" -w '%{http_code}' "$url/v1/responses" \
  -H "Authorization: Bearer $key" -H 'Content-Type: application/json' -d "$body_resp") || code=000
cat "$smoke_dir/response.json" >&2; echo >&2
resp_id=$(grep -o '"id":"resp_[0-9A-Za-z]*"' "$smoke_dir/response.json" | head -n 1 | cut -d'"' -f4)
if [ "$code" = 200 ] && [ -n "$resp_id" ] && grep -q '"output_text":"[^"]' "$smoke_dir/response.json"; then
  echo "  ok    a response object with text ($resp_id)" >&2
else
  echo "  FAIL  POST /v1/responses: HTTP $code" >&2
  failed=1
fi
code=$(curl -sS -o "$smoke_dir/response2.json" -w '%{http_code}' "$url/v1/responses" \
  -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
  -d "{\"model\": \"local/stories260k\", \"previous_response_id\": \"$resp_id\", \"input\": \"And then?\", \"max_output_tokens\": 8}") || code=000
get=$(curl -sS -o /dev/null -w '%{http_code}' "$url/v1/responses/$resp_id" -H "Authorization: Bearer $key") || get=000
del=$(curl -sS -o /dev/null -w '%{http_code}' -X DELETE "$url/v1/responses/$resp_id" -H "Authorization: Bearer $key") || del=000
gone=$(curl -sS -o /dev/null -w '%{http_code}' "$url/v1/responses/$resp_id" -H "Authorization: Bearer $key") || gone=000
if [ "$code" = 200 ] && grep -q "\"previous_response_id\":\"$resp_id\"" "$smoke_dir/response2.json" &&
   [ "$get" = 200 ] && [ "$del" = 200 ] && [ "$gone" = 404 ]; then
  echo "  ok    previous_response_id continues it; GET 200, DELETE 200, then GET 404" >&2
else
  echo "  FAIL  stored responses: continue HTTP $code, GET $get, DELETE $del, GET after delete $gone" >&2
  failed=1
fi

# Stop the gateway now (SIGTERM, graceful) and check it exits cleanly.
kill -TERM "$gw_pid" 2>/dev/null || true
rc=0
wait "$gw_pid" || rc=$?
gw_pid=""
if [ "$rc" = 0 ]; then
  echo "  ok    gateway stopped cleanly on SIGTERM" >&2
else
  echo "  FAIL  gateway exited with status $rc on SIGTERM (log .data/smoke/gateway.log)" >&2
  tail -n 20 "$smoke_dir/gateway.log" >&2
  failed=1
fi

if [ "$failed" = 0 ]; then
  echo "smoke: all checks passed" >&2
  exit 0
fi
echo "smoke: FAILED (gateway log: .data/smoke/gateway.log)" >&2
exit 1
