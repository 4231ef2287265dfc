#!/usr/bin/env bash
# The CUDA backend's device check (issue 8): GPU tests, then the benchmark, the
# PyTorch peer and the merged table, in one call of a lent GPU machine.
#
# Two steps:
#   1. Here (no GPU needed):  scripts/gpu-check.sh pack
#      Configures build-gpu/ (Release, -DENABLE_CUDA=ON -DTOLLGATE_STATIC_DEPS=ON:
#      static CUDA runtime, Boost and PCRE2; cuBLAS is dlopen'ed), builds
#      cuda_backend_gputest (when the tree has it), tollgate_cuda_bench and
#      tollgate-model, and copies them, stripped, with the stories260K test
#      models (../shared/models, or $TOLLGATE_MODEL_DIR) into .gpu/, which
#      .git/info/exclude ignores. Checks with ldd that no Boost, libpq,
#      yaml-cpp, PCRE2, gtest or other non-system shared library remains, and
#      prints the newest glibc symbol version the binaries need.
#   2. On the device machine, from the repo root, with .gpu carried: the device
#      tool's run with carry [".gpu"], command `bash scripts/gpu-check.sh`,
#      timeout_s 540. Everything goes to $OUT/gpu-check.log too; $OUT also gets
#      gputest.xml, cuda-bench.json/.md, torch-peer.json and table.md (the
#      merged table, printed last). No models are carried: tollgate-model
#      writes the random-weight GGUF files into /tmp (about 29 GB for all six)
#      while the tests run, so no file writing overlaps a measurement.
#
# Time: the whole run is kept under GPU_CHECK_BUDGET seconds (default 500,
# inside the 540 s timeout); each stage's timeout is the smaller of its cap
# and what is left less a reserve for the stages after it (tests 150 s; the
# model writer until at most t+250 s; bench 200 s, at least ~120 s; peer
# 200 s, at least ~120 s). Expected on an H200 machine (16 cores): writing
# the six models 2-3 minutes of CPU (7B Q4_K quantization is most of it,
# overlapping the tests), bench ~1.5 min, peer ~2.5 min: about 6-7 minutes
# in all, which leaves a 15-minute lease room for a shorter rerun. Every stage prints its start time. A stage cut
# short keeps what it measured: the bench and the peer rewrite their JSON after
# every row, and the table is merged from whatever is there.
# Settings (environment): GPU_CHECK_QUICK=1 (--quick: 32 decode steps, 2 runs),
# GPU_CHECK_SHAPES (0.5b,7b), GPU_CHECK_TYPES (f16,q8_0,q4_k),
# GPU_CHECK_MODEL_DIR (/tmp/tollgate-models), GPU_CHECK_SKIP_TESTS=1,
# GPU_CHECK_SKIP_PEER=1, GPU_CHECK_BUDGET, GPU_CHECK_PYTHON (python3, else
# /opt/torch/.venv/bin/python3). A rerun on a lease with less time
# left: e.g. GPU_CHECK_BUDGET=200 GPU_CHECK_SKIP_TESTS=1 GPU_CHECK_QUICK=1
# GPU_CHECK_SHAPES=7b bash scripts/gpu-check.sh (stage times scale with the
# budget; models already in /tmp are reused only on a machine still warm, a
# fresh one writes them again). Outside the device tool, $OUT defaults to
# build-gpu/gpu-check-out. The run prints .gpu/REVISION: the commit (and
# modified files) it was packed from.
#
# Exit status: non-zero when the GPU tests failed, are missing, or skipped
# (a skip on the device means the GPU was not usable); 3 when .gpu/ is
# missing or was packed from another commit; 6 when nvidia-smi lists no GPU
# (then only the tests run: no models are written, no benchmark). The
# benchmark's numbers are a report, not a pass/fail.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
PACK=.gpu

pack() {
  set -e
  local build=${GPU_BUILD_DIR:-$ROOT/build-gpu} jobs=${JOBS:-2}
  local gen=()
  if [ ! -f "$build/CMakeCache.txt" ] && command -v ninja >/dev/null; then gen=(-G Ninja); fi
  cmake -S . -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DENABLE_CUDA=ON -DTOLLGATE_STATIC_DEPS=ON
  local targets=(tollgate_cuda_bench tollgate-model) listed
  if [ -f "$build/build.ninja" ]; then
    listed=$(ninja -C "$build" -t targets all 2>/dev/null)
  else
    listed=$(cmake --build "$build" --target help 2>/dev/null)
  fi
  if grep -q 'cuda_backend_gputest' <<<"$listed"; then
    targets=(cuda_backend_gputest "${targets[@]}")
  else
    echo "gpu-check pack: no cuda_backend_gputest target in this tree; packing without tests"
  fi
  cmake --build "$build" -j "$jobs" --target "${targets[@]}"

  rm -rf "$PACK"
  mkdir -p "$PACK" .git/info
  grep -qx "/$PACK/" .git/info/exclude 2>/dev/null || echo "/$PACK/" >> .git/info/exclude
  local bins=()
  for t in "${targets[@]}"; do
    local f
    f=$(find "$build" -type f -name "$t" -perm -u+x | head -1)
    [ -n "$f" ] || { echo "gpu-check pack: built $t but cannot find it under $build"; exit 1; }
    cp "$f" "$PACK/$t"
    strip --strip-unneeded "$PACK/$t"
    bins+=("$PACK/$t")
  done
  local models=${TOLLGATE_MODEL_DIR:-$ROOT/../shared/models}
  cp "$models"/stories260K*.gguf "$models"/stories260K-reference.json "$PACK"/ 2>/dev/null || true
  ls "$PACK"/stories260K.gguf >/dev/null || { echo "gpu-check pack: no stories260K.gguf in $models"; exit 1; }

  local bad=0
  for b in "${bins[@]}"; do
    echo "--- ldd $b"
    ldd "$b" | tee /tmp/gpu-check-ldd.txt
    if grep -Ei 'boost|libpq|yaml|pcre|gtest|gmock|benchmark|prometheus|libssl|libcrypto|libcuda|cublas|cudart|not found' /tmp/gpu-check-ldd.txt; then
      echo "gpu-check pack: $b needs a shared library a bare CUDA machine lacks (above)"
      bad=1
    fi
    echo "newest glibc symbol: $(objdump -T "$b" | grep -o 'GLIBC_[0-9.]*' | sort -Vu | tail -1)," \
         "newest libstdc++: $(objdump -T "$b" | grep -o 'GLIBCXX_[0-9.]*' | sort -Vu | tail -1)"
  done
  rm -f /tmp/gpu-check-ldd.txt
  [ "$bad" = 0 ] || exit 1
  # What was packed, so that the run says which code it tests.
  { git rev-parse HEAD; git status --porcelain --untracked-files=no | sed 's/^/modified: /'; date -u; } > "$PACK/REVISION"
  du -ch "$PACK"/* | tail -1
  echo "packed $PACK: ${bins[*]}"
  echo "next: the device tool's run with carry [\"$PACK\"], command 'bash scripts/gpu-check.sh', timeout_s 540"
}

now() { date +%s; }
stage() { echo; echo "=== $1 (t+$(( $(now) - T0 )) s)"; }
# Seconds a stage may take: its cap, or what is left of the budget less
# `reserve` (both given for the default budget of 500 s and scaled to
# GPU_CHECK_BUDGET).
allow() {
  local cap=$(( $1 * BUDGET / 500 )) reserve=$(( $2 * BUDGET / 500 )) left
  left=$(( DEADLINE - $(now) - reserve ))
  [ "$left" -lt "$cap" ] && cap=$left
  [ "$cap" -lt 1 ] && cap=1
  echo "$cap"
}

run() {
  T0=$(now)
  BUDGET=${GPU_CHECK_BUDGET:-500}
  DEADLINE=$(( T0 + BUDGET ))
  local out=$OUT models=${GPU_CHECK_MODEL_DIR:-/tmp/tollgate-models}
  local shapes=${GPU_CHECK_SHAPES:-0.5b,7b} types=${GPU_CHECK_TYPES:-f16,q8_0,q4_k}
  local common=(--model-dir "$models" --shapes "$shapes" --types "$types")
  [ "${GPU_CHECK_QUICK:-0}" = 1 ] && common+=(--quick)
  export PYTHONUNBUFFERED=1 PATH="$ROOT/$PACK:$PATH" TOLLGATE_MODEL_TOOL="$ROOT/$PACK/tollgate-model"

  stage "machine"
  date -u
  nvidia-smi -L || echo "nvidia-smi failed"
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.sm,clocks.mem,power.draw \
    --format=csv 2>/dev/null || true
  nproc; free -g | head -2; df -h /tmp | tail -1
  [ -d "$PACK" ] || { echo "no $PACK/: run 'scripts/gpu-check.sh pack' here first and carry .gpu"; return 3; }
  chmod +x "$PACK"/tollgate* "$PACK"/*_gputest 2>/dev/null
  ls -l "$PACK"
  # A pack from other code would test that code: refuse it.
  [ -f "$PACK/REVISION" ] || { echo "$PACK/ has no REVISION (an old pack): run 'scripts/gpu-check.sh pack' again"; return 3; }
  echo "packed from: $(cat "$PACK/REVISION")"
  local head
  head=$(git rev-parse HEAD 2>/dev/null || true)
  if [ -n "$head" ] && [ "$head" != "$(head -1 "$PACK/REVISION")" ]; then
    echo "$PACK/ was packed from another commit than HEAD ($head): run 'scripts/gpu-check.sh pack' again"
    return 3
  fi
  # Without a GPU nothing below can measure: the tests still run (their skips
  # fail the check), but no models are written (about 29 GB) and no benchmark runs.
  local gpu=1
  grep -q '^GPU ' <<<"$(nvidia-smi -L 2>/dev/null)" || { gpu=0; echo "no GPU listed by nvidia-smi: tests only"; }
  # cuBLAS: the backend dlopens libcublas.so.13 (with libcublasLt beside it).
  local cublas
  cublas=$(find /usr/local/cuda* /opt -name 'libcublas.so.13*' 2>/dev/null | head -1)
  if [ -n "$cublas" ]; then
    LD_LIBRARY_PATH="$(dirname "$cublas")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export LD_LIBRARY_PATH
    echo "cuBLAS: $cublas"
  else
    echo "cuBLAS: libcublas.so.13 not found under /usr/local/cuda* or /opt"
  fi
  local py=${GPU_CHECK_PYTHON:-python3}
  if ! $py -c 'import torch' 2>/dev/null && [ -x /opt/torch/.venv/bin/python3 ]; then
    echo "python: $py has no torch; using /opt/torch/.venv/bin/python3"
    py=/opt/torch/.venv/bin/python3
  fi
  echo "python: $(command -v "$py") $($py -c 'import torch, numpy; print("torch", torch.__version__, "numpy", numpy.__version__)' 2>&1)"

  local writer=""
  if [ "$gpu" = 1 ]; then
  stage "writing models into $models (in the background, while the tests run)"
  mkdir -p "$models"
  # timeout: its process group holds write-random too, so stopping it stops
  # both; nice: the tests' CPU work (their CPU reference backend) goes first.
  nice -n 19 timeout -k 5 "$(allow 400 60)" "$PACK"/tollgate_cuda_bench --write-only "${common[@]}" \
    > "$out/write-models.log" 2>&1 &
  writer=$!
  fi

  local test_rc=0
  if [ "${GPU_CHECK_SKIP_TESTS:-0}" = 1 ]; then
    stage "tests skipped (GPU_CHECK_SKIP_TESTS=1)"
  elif [ -x "$PACK/cuda_backend_gputest" ]; then
    local t
    t=$(allow 150 330)
    stage "tests: cuda_backend_gputest (timeout $t s)"
    TOLLGATE_MODEL_DIR="$ROOT/$PACK" timeout -k 5 "$t" "$PACK/cuda_backend_gputest" \
      --gtest_output="xml:$out/gputest.xml" 2>&1
    test_rc=$?
    echo "tests: exit $test_rc"
    # On the device nothing may skip: a skip means the GPU was not usable
    # (driver, cuBLAS, architecture), which must not read as a pass.
    local skipped
    skipped=$(grep -o 'skipped="[0-9]*"' "$out/gputest.xml" 2>/dev/null | head -1 | tr -dc 0-9)
    if [ "$test_rc" = 0 ] && [ "${skipped:-0}" != 0 ]; then
      echo "tests: $skipped skipped: the GPU was not usable (see the reason above); counting that as a failure"
      test_rc=5
    fi
  else
    stage "tests: $PACK/cuda_backend_gputest missing"
    test_rc=4
  fi

  if [ "$gpu" = 0 ]; then
    stage "done without a GPU: tests exit $test_rc"
    [ "$test_rc" = 0 ] && test_rc=6
    return "$test_rc"
  fi

  stage "waiting for the model writer"
  local wait_end=$(( $(now) + $(allow 240 250) ))
  while kill -0 "$writer" 2>/dev/null && [ "$(now)" -lt "$wait_end" ]; do sleep 2; done
  if kill -0 "$writer" 2>/dev/null; then
    echo "model writer still running after its time; stopping it (the benchmark writes what is missing itself)"
    kill "$writer" 2>/dev/null
  fi
  wait "$writer"; echo "writer: exit $?"
  cat "$out/write-models.log"; rm -f "$out/write-models.log"
  ls -l "$models"

  local t
  t=$(allow 200 130)
  stage "benchmark: tollgate_cuda_bench (timeout $t s)"
  timeout -k 5 "$t" "$PACK"/tollgate_cuda_bench "${common[@]}" --json "$out/cuda-bench.json" \
    | tee "$out/cuda-bench.md"
  echo "bench: exit ${PIPESTATUS[0]}"

  if [ "${GPU_CHECK_SKIP_PEER:-0}" = 1 ]; then
    stage "torch peer skipped (GPU_CHECK_SKIP_PEER=1)"
  else
    t=$(allow 200 10)
    stage "torch peer: bench/cuda_peer/torch_peer.py (timeout $t s)"
    timeout -k 5 "$t" "$py" bench/cuda_peer/torch_peer.py "${common[@]}" --json "$out/torch-peer.json" 2>&1
    echo "peer: exit $?"
  fi

  stage "table"
  python3 bench/cuda_peer/merge.py --ours "$out/cuda-bench.json" --peer "$out/torch-peer.json" | tee "$out/table.md"
  rm -f "$out"/*.tmp
  nvidia-smi --query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv 2>/dev/null || true
  stage "done: tests exit $test_rc"
  return "$test_rc"
}

case "${1:-run}" in
  pack) pack ;;
  run)
    OUT=${OUT:-$ROOT/build-gpu/gpu-check-out}
    mkdir -p "$OUT"
    run 2>&1 | tee "$OUT/gpu-check.log"
    exit "${PIPESTATUS[0]}"
    ;;
  *) echo "usage: scripts/gpu-check.sh [pack|run]"; exit 64 ;;
esac
