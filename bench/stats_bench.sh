#!/usr/bin/env bash
# Usage statistics benchmark (bench/stats_bench.cpp): starts a private
# PostgreSQL (scripts/pg.sh, durable settings: fsync on, as in production),
# runs build/bench/tollgate_stats_bench against it and stops it again, also
# when the benchmark fails or is interrupted. Arguments go to the benchmark
# (--rows N, default 10000000; --days N, default 30; --runs N, default 20).
#
#   cmake --build build --target tollgate_stats_bench && bench/stats_bench.sh
#
# Environment: TOLLGATE_STATS_BENCH (the binary), STATS_BENCH_TIMEOUT
# (seconds, default 3600: the whole run is killed after it).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${TOLLGATE_STATS_BENCH:-$root/build/bench/tollgate_stats_bench}
[ -x "$bin" ] || { echo "stats_bench.sh: $bin not built (cmake --build build --target tollgate_stats_bench)" >&2; exit 2; }
dir=$(mktemp -d /tmp/tollgate-stats-bench.XXXXXX)
chmod 755 "$dir"
cleanup() {
  "$root/scripts/pg.sh" stop "$dir" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
url=$("$root/scripts/pg.sh" start "$dir")
echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) CPUs, $(free -g | awk '/^Mem:/ {print $2}') GiB RAM" >&2
timeout "${STATS_BENCH_TIMEOUT:-3600}" "$bin" "$url" "$@"
