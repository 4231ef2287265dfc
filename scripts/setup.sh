#!/usr/bin/env bash
# Installs Tollgate's build, test and run dependencies from Debian 12 packages.
# Idempotent: installs only what is missing, so a second run is a no-op.
# See ../shared/DEPENDENCIES.md for why each package is listed.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libboost-json1.81-dev libboost-url1.81-dev libboost-system1.81-dev
  libboost-program-options1.81-dev
  libssl-dev ca-certificates openssl libpq-dev postgresql
  prometheus-cpp-dev libyaml-cpp-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libpcre2-dev
  libjemalloc-dev
  clang libclang-rt-14-dev llvm  # libFuzzer targets (tests/fuzz, scripts/fuzz.sh); llvm for llvm-symbolizer
  zlib1g-dev
  nodejs curl
  chromium
  prometheus
  golang-go golang-github-masterminds-sprig-dev golang-k8s-sigs-yaml-dev
  yamllint docker-compose python3-yaml
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# Node.js may come from outside apt (a preinstalled toolchain); any node with npm will do here,
# and the version is checked below (the end-to-end clients need Node.js >= 20).
if command -v node >/dev/null && command -v npm >/dev/null; then
  missing=("${missing[@]/nodejs}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))

check_node() {
  local major
  major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
  if [ "$major" -lt 20 ]; then
    echo "setup: warning: Node.js $(node --version 2>/dev/null || echo missing) is older than 20; the end-to-end tests (tests/e2e) need Node.js >= 20" >&2
  fi
}

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all dependencies present"
  check_node
  exit 0
fi

echo "setup: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
# `prometheus` is here for its `promtool` only (tests/e2e/test/metrics.test.mjs checks /metrics,
# deploy/prometheus and the Grafana dashboard's queries with it). Its package would start and
# enable a Prometheus server on :9090: a policy-rc.d that refuses every start (exit 101, Debian's
# invoke-rc.d policy interface) is in place during the install unless the machine already has one
# (containers usually do), and the unit is disabled afterwards, so nothing is left running.
policy_rc=/usr/sbin/policy-rc.d
own_policy=0
if printf '%s\n' "${missing[@]}" | grep -qx prometheus && [ ! -e "$policy_rc" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy_rc" >/dev/null
  $SUDO chmod 755 "$policy_rc"
  own_policy=1
fi
status=0
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || status=$?
[ "$own_policy" -eq 0 ] || $SUDO rm -f "$policy_rc"
[ "$status" -eq 0 ] || exit "$status"
if printf '%s\n' "${missing[@]}" | grep -qx prometheus && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
if ! command -v npm >/dev/null; then
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends npm >/dev/null
fi
echo "setup: done"
check_node
