#!/usr/bin/env bash
# Builds Tollgate and runs the whole test suite (unit, PostgreSQL integration, end-to-end) with CTest.
#
#   scripts/test.sh [CTEST_ARGS...]     e.g. scripts/test.sh -L e2e    scripts/test.sh -R Money -V
#
# Steps: scripts/setup.sh (installs missing Debian packages), Release build in build/ (with
# -DENABLE_CUDA=ON when nvcc is found, on PATH or as /usr/local/cuda/bin/nvcc, so the CUDA backend
# compiles wherever a toolkit is installed; its _gputest tests need a GPU), a private
# throwaway PostgreSQL in a temporary directory (scripts/pg.sh, fsync off), `npm ci` in tests/e2e
# when its lock file changed, then `ctest --test-dir build --output-on-failure -j2 CTEST_ARGS...`.
# Whatever it started is stopped on exit, failure or Ctrl-C included. Exits with ctest's status.
#
# Environment: TOLLGATE_TEST_JOBS (ctest -j, default 2), TOLLGATE_BUILD_DIR (default build),
# KEEP_PG=1 leaves the test database server running and prints its URI (for debugging).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
build_dir=${TOLLGATE_BUILD_DIR:-build}
jobs=${TOLLGATE_TEST_JOBS:-2}

say() { echo "test.sh: $*" >&2; }

pg_dir=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$pg_dir" ]; then
    if [ "${KEEP_PG:-0}" = 1 ]; then
      say "KEEP_PG=1: PostgreSQL left running in $pg_dir ($TOLLGATE_TEST_DATABASE_URL); stop it with scripts/pg.sh stop $pg_dir"
    else
      scripts/pg.sh stop "$pg_dir" || true
      rm -rf "$pg_dir"
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 1. Dependencies.
bash scripts/setup.sh

# 2. Build (Release); the CUDA backend too when a CUDA toolkit is installed, GPU or not.
cuda=OFF
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then cuda=ON; fi
say "building ($build_dir, Release, ENABLE_CUDA=$cuda)"
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DENABLE_CUDA="$cuda" >/dev/null
cmake --build "$build_dir" -j"$(nproc)"

# 3. End-to-end test clients, only when the lock file changed since the last install.
e2e=tests/e2e
if [ -f "$e2e/package-lock.json" ]; then
  want=$(sha256sum "$e2e/package-lock.json" | cut -d' ' -f1)
  have=$(cat "$e2e/node_modules/.tollgate-lock-sha256" 2>/dev/null || true)
  if [ "$want" != "$have" ] || [ ! -d "$e2e/node_modules" ]; then
    say "npm ci in $e2e"
    (cd "$e2e" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" >"$e2e/node_modules/.tollgate-lock-sha256"
  fi
fi

# 4. A private PostgreSQL for the integration and end-to-end tests.
pg_dir=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-test-pg.XXXXXX")
TOLLGATE_TEST_DATABASE_URL=$(scripts/pg.sh start "$pg_dir" --test)
export TOLLGATE_TEST_DATABASE_URL
say "PostgreSQL for tests: $TOLLGATE_TEST_DATABASE_URL"

# 5. The tests. `|| rc=$?` keeps set -e from skipping the cleanup's exit status.
rc=0
ctest --test-dir "$build_dir" --output-on-failure --no-tests=error -j"$jobs" "$@" || rc=$?
exit "$rc"
