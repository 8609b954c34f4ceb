#!/usr/bin/env bash
# The GitHub Action's wall time from job start to a Ready cluster, as the local equivalent of a
# cold runner with a warm Actions cache: the cache restore (the source hash of the `key` step and
# the cached binary put in place; actions/cache's download is not here), `.ci/action/install.sh`
# (a cache hit: nothing is built), then `.ci/action/create.sh` with the node image absent, as on
# a fresh runner (create builds it from the binary; nothing is pulled). Same-run baseline:
# `kcluster create --wait` with the node image already built. Prints lines for BENCHMARKS.md.
#
#   benches/action-local.sh [runs]    (default 3; KCLUSTER_BIN=path, default this checkout's
#                                      debug build; nothing is built here)
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
runs=${1:-3}
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin=${KCLUSTER_BIN:-$target/x86_64-unknown-linux-gnu/debug/kcluster}
[ -x "$bin" ] || { echo "no kcluster at $bin: run cargo build --locked, or set KCLUSTER_BIN" >&2; exit 1; }
work=$(mktemp -d)
export KUBECONFIG=$work/kubeconfig HOME=$work
name=actbench-$$
trap '"$bin" delete --name "$name" -q >/dev/null 2>&1 || true; rm -rf "$work"' EXIT


# This binary's node image: removed before each Action run (a fresh runner has none).
tag=$("$bin" doctor 2>/dev/null | sed -n 's/.*Node image: \([^ ]*\).*/\1/p')
[ -n "$tag" ] || { echo "kcluster doctor did not name the node image" >&2; exit 1; }

restore=() install=() create=() image=() total=() baseline=()
for i in $(seq "$runs"); do
  root=$work/action-$i
  docker rmi -f "$tag" >/dev/null 2>&1 || true
  t0=$(now)
  mkdir -p "$root/bin"
  (cat Cargo.lock Cargo.toml $(find src node-image -type f 2>/dev/null | sort) | sha256sum) >"$root/source.sha256"
  cp "$bin" "$root/bin/kcluster"
  restore+=("$(since "$t0")")
  t1=$(now)
  KCLUSTER_ACTION_SOURCE=$PWD KCLUSTER_ACTION_ROOT=$root bash .ci/action/install.sh >/dev/null
  install+=("$(since "$t1")")
  t2=$(now)
  PATH=$root/bin:$PATH KCLUSTER=$root/bin/kcluster INPUT_CLUSTER_NAME=$name INPUT_WAIT=120s \
    bash .ci/action/create.sh >"$work/create-$i.log" 2>&1 || { cat "$work/create-$i.log" >&2; exit 1; }
  create+=("$(since "$t2")")
  image+=("$(sed -n 's/.*Ensuring node image.*(\([0-9.]*\)s).*/\1/p' "$work/create-$i.log" | head -1)")
  total+=("$(since "$t0")")
  KCLUSTER=$root/bin/kcluster INPUT_CLUSTER_NAME=$name bash .ci/action/cleanup.sh >/dev/null 2>&1
  # Baseline: the same create, the node image already there.
  t3=$(now)
  "$bin" create --name "$name" --wait 120s -q
  baseline+=("$(since "$t3")")
  "$bin" delete --name "$name" -q
done
m() { printf '%s\n' "$@" | median; }
echo "- binary: $bin ($(du -m "$bin" | cut -f1) MB), $runs runs, $(date -u +%F)"
echo "- cache restore stand-in (source hash + binary copy): median $(m "${restore[@]}") s (${restore[*]})"
echo "- install.sh (cache hit): median $(m "${install[@]}") s (${install[*]})"
echo "- create.sh (node image built, create --wait 120s, kubeconfig, cluster-info): median $(m "${create[@]}") s (${create[*]})"
echo "  - of which the node image build (create's own step time): median $(m "${image[@]}") s (${image[*]})"
echo "- job start to Ready cluster: **median $(m "${total[@]}") s** (${total[*]})"
echo "- baseline, kcluster create --wait 120s with the node image built: median $(m "${baseline[@]}") s (${baseline[*]})"
