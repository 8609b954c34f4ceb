#!/usr/bin/env bash
# The quick benchmarks, one after another, each printing its own results (benches/README.md
# lists them all, with their targets and baselines). About 10 minutes of benchmarks after the
# builds; the last two steps build the unit tests in the release profile first (~15 min, fat LTO).
#
#   benches/run-all.sh            (needs Docker, kubectl and /bin/busybox)
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp -d)/bench
echo "building (release binary; the test harnesses in the test profile)…"
cargo build --release --quiet --bins
cargo test --quiet --no-run --test kubelet_bench --test controllers_bench
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
# The clusters run the release binary; the harness only drives and measures them.
export KCLUSTER_BIN=$target/x86_64-unknown-linux-gnu/release/kcluster
step() { # title, command…
  local title=$1; shift
  echo; echo "== $title: $*"
  local t0; t0=$(date +%s)
  "$@" 2>&1 | tee "$log.$(date +%s%N)"
  echo "   ($(( $(date +%s) - t0 )) s)"
}
step "cluster create (3 runs)" benches/cluster-create.sh 3
step "three servers (3 runs)" benches/ha.sh 3
step "pod start, 200 pods" cargo test --quiet --test kubelet_bench -- --ignored --nocapture
step "scheduler, 3,000 pods" cargo test --quiet --test controllers_bench -- --ignored --nocapture scheduler_binds
step "service proxy sync" cargo test --release --quiet --bin kcluster -- --ignored proxy_sync_bench --nocapture
step "store" cargo test --release --quiet --bin kcluster store::bench -- --ignored --nocapture --test-threads=1
echo; echo "full output of each step: $log.*"
