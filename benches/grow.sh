#!/usr/bin/env bash
# Growing a one-server cluster: `kcluster node add --role server --count 2 --wait` on a cluster
# made with one server and one worker that holds OBJECTS extra ConfigMaps (1 KiB each), timed to
# every node Ready (median of N runs). It includes making the server anew on the etcd image,
# moving its store into etcd, starting the balancer, restarting the worker onto it, and the two
# new members joining. Same-run baseline: `create --servers 3 --workers 1 --wait` of a new
# cluster of the same final shape. Also prints what the first server logged of the move.
#
#   benches/grow.sh [runs] [objects]   (default 5 and 1000; KCLUSTER_BIN=<kcluster> to skip the
#                                       release build)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
objects=${2:-1000}
. benches/lib.sh
bin=$(kcluster_bin release)
work=$(mktemp -d)
export KUBECONFIG=$work/kubeconfig HOME=$work
name=growbench-$$
trap '"$bin" delete --name "$name" -q >/dev/null 2>&1 || true; rm -rf "$work"' EXIT


python3 - "$objects" >"$work/objects.json" <<'PY'
import json, sys
n = int(sys.argv[1])
print(json.dumps({"apiVersion": "v1", "kind": "List", "items": [
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"load-{i}"},
     "data": {"payload": "x" * 1024}} for i in range(n)]}))
PY

# Builds both images (the node image and its etcd variant) outside the timed runs.
"$bin" create --name "$name" --servers 3 --wait 120s -q
"$bin" delete --name "$name" -q

grows=() bases=() moved=""
for _ in $(seq "$runs"); do
  "$bin" create --name "$name" --workers 1 --wait 120s -q
  kubectl --context "kcluster-$name" apply -f "$work/objects.json" >/dev/null
  t0=$(now)
  "$bin" node add --name "$name" --role server --count 2 --wait 120s -q
  grows+=("$(since "$t0")")
  moved=$(docker logs "$name-server-0" 2>&1 | grep -o 'store moved into etcd.*' | sed 's/\x1b\[[0-9;]*m//g' | head -1)
  "$bin" delete --name "$name" -q
  t0=$(now)
  "$bin" create --name "$name" --servers 3 --workers 1 --wait 120s -q
  bases+=("$(since "$t0")")
  "$bin" delete --name "$name" -q
done

echo "  grow runs: ${grows[*]}; create runs: ${bases[*]}" >&2
echo "  last move: $moved" >&2
cat <<EOF
| what | median of $runs |
|---|---|
| \`node add --role server --count 2 --wait\` on a 1+1 cluster with $objects extra ConfigMaps | **$(printf '%s\n' "${grows[@]}" | median) s** |
| same run: \`create --servers 3 --workers 1 --wait\` | $(printf '%s\n' "${bases[@]}" | median) s |
EOF
