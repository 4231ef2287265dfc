#!/usr/bin/env bash
# Builds and runs Tollgate's libFuzzer targets (tests/fuzz/README.md).
#
#   scripts/fuzz.sh build                   configure and build every target (clang, ASan + UBSan)
#   scripts/fuzz.sh list                    the target names
#   scripts/fuzz.sh run TARGET SECONDS      fuzz TARGET for SECONDS, growing a working corpus
#   scripts/fuzz.sh check TARGET SECONDS    the short run scripts/test.sh does: the seeds, then
#                                           SECONDS of fuzzing in a throwaway directory
#   scripts/fuzz.sh all SECONDS             `run` for each target in turn
#
# `run` keeps what it finds in BUILD_DIR/work/TARGET/corpus (kept between runs, seeded from
# tests/fuzz/corpus/TARGET) and writes crashing inputs to BUILD_DIR/work/TARGET/crash-*;
# reproduce one with BUILD_DIR/TARGET_fuzz FILE. Both `run` and `check` exit non-zero
# when the target crashes, leaks, times out (10 s per input) or runs out of memory (2 GiB).
#
# Environment: TOLLGATE_FUZZ_BUILD_DIR (default build-fuzz), TOLLGATE_FUZZ_JOBS (build -j, default
# 2), CXX_FUZZ (default clang++), TOLLGATE_MODEL_DIR (tokenizer target's model, see tests/fuzz/README.md).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${TOLLGATE_FUZZ_BUILD_DIR:-$root/build-fuzz}
jobs=${TOLLGATE_FUZZ_JOBS:-2}
cxx=${CXX_FUZZ:-clang++}
targets=(http_request sse_parser wire_openai wire_anthropic wire_gemini wire_responses config gguf tokenizer chat_template)

say() { echo "fuzz.sh: $*" >&2; }
die() { say "$*"; exit 2; }

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

known() {
  local t
  for t in "${targets[@]}"; do [ "$t" = "$1" ] && return 0; done
  die "unknown target '$1' (scripts/fuzz.sh list)"
}

build() {
  command -v "$cxx" >/dev/null 2>&1 ||
    die "$cxx not found: the fuzz targets need clang with libFuzzer (Debian: clang libclang-rt-14-dev llvm; scripts/setup.sh installs them)"
  local rt
  rt=$("$cxx" -print-file-name=libclang_rt.fuzzer-x86_64.a 2>/dev/null || true)
  if [ -z "$rt" ] || [ ! -f "$rt" ]; then
    rt=$("$cxx" --print-runtime-dir 2>/dev/null || true)/libclang_rt.fuzzer-x86_64.a
    [ -f "$rt" ] || die "libFuzzer runtime not found for $cxx (Debian: libclang-rt-14-dev)"
  fi
  cmake -S "$root/tests/fuzz/project" -B "$build_dir" -DCMAKE_CXX_COMPILER="$cxx" >/dev/null
  cmake --build "$build_dir" -j"$jobs"
}

binary() {
  local bin=$build_dir/$1_fuzz
  [ -x "$bin" ] || die "$bin is missing: run scripts/fuzz.sh build first"
  echo "$bin"
}

# Sanitizer settings: abort with a stack on the first finding; symbolized.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
if [ -z "${ASAN_SYMBOLIZER_PATH:-}" ] && command -v llvm-symbolizer >/dev/null 2>&1; then
  export ASAN_SYMBOLIZER_PATH=$(command -v llvm-symbolizer)
fi

# fuzz TARGET SECONDS WORK_CORPUS ARTIFACT_PREFIX: new inputs go to WORK_CORPUS; the committed
# seeds are read too, never written.
fuzz() {
  local target=$1 seconds=$2 work=$3 artifacts=$4 bin
  bin=$(binary "$target")
  local seeds=$root/tests/fuzz/corpus/$target
  [ -d "$seeds" ] || die "no seed corpus $seeds"
  mkdir -p "$work"
  say "$target: ${seconds}s over $(ls "$seeds" | wc -l) seeds"
  "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts" "$work" "$seeds"
}

cmd=${1:-}
case "$cmd" in
  build) build ;;
  list) printf '%s\n' "${targets[@]}" ;;
  run)
    [ $# -eq 3 ] || usage
    known "$2"
    w=$build_dir/work/$2
    mkdir -p "$w"
    fuzz "$2" "$3" "$w/corpus" "$w/"
    ;;
  check)
    [ $# -eq 3 ] || usage
    known "$2"
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-fuzz-$2.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    rc=0
    fuzz "$2" "$3" "$tmp/corpus" "$tmp/" || rc=$?
    if [ "$rc" -ne 0 ]; then
      for f in "$tmp"/crash-* "$tmp"/leak-* "$tmp"/timeout-* "$tmp"/oom-*; do
        [ -e "$f" ] || continue
        mkdir -p "$build_dir/findings/$2"
        cp "$f" "$build_dir/findings/$2/"
        say "$2: finding kept as $build_dir/findings/$2/$(basename "$f") (reproduce: $(binary "$2") FILE)"
      done
    fi
    exit "$rc"
    ;;
  all)
    [ $# -eq 2 ] || usage
    for t in "${targets[@]}"; do "$0" run "$t" "$2"; done
    ;;
  *) usage ;;
esac
