#!/usr/bin/env bash
# The Action's create step: a cluster from the inputs kind-action users know, the kubeconfig
# exported, images preloaded; when the cluster does not come up, diagnostics in the job's log
# and a log bundle (`kcluster export logs`) in $RUNNER_TEMP, then a failure.
#
# Inputs (environment): INPUT_CLUSTER_NAME, INPUT_CONFIG, INPUT_WAIT, INPUT_REGISTRY,
# INPUT_VERBOSITY, INPUT_PRELOAD_IMAGES (space or newline separated), KCLUSTER (the binary;
# default: kcluster on PATH).
set -euo pipefail
kcluster=${KCLUSTER:-kcluster}
name=${INPUT_CLUSTER_NAME:-kcluster}
args=(create --name "$name" --wait "${INPUT_WAIT:-120s}")
[ -n "${INPUT_CONFIG:-}" ] && args+=(--config "$INPUT_CONFIG")
case "${INPUT_REGISTRY:-false}" in
  true) args+=(--registry) ;;
  false | "") ;;
  *) echo "::error::input registry must be true or false, not '$INPUT_REGISTRY'" >&2; exit 1 ;;
esac
verbosity=${INPUT_VERBOSITY:-0}
case $verbosity in
  0) ;;
  1) args+=(-v) ;;
  *) args+=(-vv) ;;
esac

diagnose() {
  echo "::group::kcluster diagnostics for $name"
  "$kcluster" list || true
  "$kcluster" get nodes --name "$name" || true
  kubectl get nodes -o wide || true
  kubectl describe nodes || true
  kubectl get pods -A -o wide || true
  echo "::endgroup::"
  local dir=${RUNNER_TEMP:-/tmp}/kcluster-logs-$name
  rm -rf "$dir"
  if "$kcluster" export logs "$dir" --name "$name"; then
    echo "::warning::logs of cluster $name are in $dir (upload them with actions/upload-artifact)"
  fi
}

# create keeps what it made when it fails (--retain), so the diagnostics have nodes to read.
if ! "$kcluster" "${args[@]}" --retain; then
  diagnose
  echo "::error::kcluster create failed for cluster $name" >&2
  exit 1
fi
"$kcluster" export kubeconfig --name "$name"
if [ -n "${INPUT_PRELOAD_IMAGES:-}" ]; then
  # shellcheck disable=SC2086
  "$kcluster" image load $INPUT_PRELOAD_IMAGES --name "$name"
fi
kubectl cluster-info
