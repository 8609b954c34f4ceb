#!/usr/bin/env bash
# HA benchmark: `kcluster create --servers 3 --workers 2 --wait` to every node Ready (median of
# N runs, node images already built) against the same-run floor, `docker run -d` of as many bare
# containers (3 servers + 2 workers + the balancer) from the node image on a new network; then,
# on one such cluster, the API failover after `docker kill` of the server holding the
# controllers' Lease: the time until a read and a write through the balancer succeed again
# (curl with the admin's certificate, one attempt every 50 ms, 1 s timeout each), and until the
# Leases are held by another server; last, `node add --role server` to Ready and `node delete`
# of a server. Prints a Markdown
# block for BENCHMARKS.md.
#
#   benches/ha.sh [runs]      (default 5; KCLUSTER_BIN=<kcluster> to skip the release build)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
. benches/lib.sh
bin=$(kcluster_bin release)
work=$(mktemp -d)
export KUBECONFIG=$work/kubeconfig HOME=$work
name=habench-$$
trap '"$bin" delete --name "$name" -q >/dev/null 2>&1 || true; rm -rf "$work"' EXIT


# Builds both images (the node image and its etcd variant) outside the timed runs.
"$bin" create --name "$name" --servers 3 --wait 120s -q
"$bin" delete --name "$name" -q
tag=$(docker images --format '{{.Repository}}:{{.Tag}}' | grep '^kcluster/node:.*-etcd' | head -1)

creates=()
for _ in $(seq "$runs"); do
  t0=$(now)
  "$bin" create --name "$name" --servers 3 --workers 2 --wait 120s -q
  creates+=("$(since "$t0")")
  "$bin" delete --name "$name" -q
done
floors=()
for _ in $(seq "$runs"); do
  t0=$(now)
  docker network create "$name-floor" >/dev/null
  for i in 1 2 3 4 5 6; do
    docker run -d --name "$name-floor-$i" --network "$name-floor" --entrypoint /kcluster "$tag" --version >/dev/null &
  done
  wait
  floors+=("$(since "$t0")")
  for i in 1 2 3 4 5 6; do docker rm -f "$name-floor-$i" >/dev/null; done
  docker network rm "$name-floor" >/dev/null
done
create=$(printf '%s\n' "${creates[@]}" | median)
floor=$(printf '%s\n' "${floors[@]}" | median)

# Failover, N times on one cluster: kill the Lease holder, measure, start it again.
"$bin" create --name "$name" --servers 3 --workers 2 --wait 120s -q
ctx=kcluster-$name
server=$(kubectl --context "$ctx" config view --minify --raw -o jsonpath='{.clusters[0].cluster.server}')
kubectl --context "$ctx" config view --minify --raw -o jsonpath='{.users[0].user.client-certificate-data}' | base64 -d >"$work/admin.crt"
kubectl --context "$ctx" config view --minify --raw -o jsonpath='{.users[0].user.client-key-data}' | base64 -d >"$work/admin.key"
kubectl --context "$ctx" config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d >"$work/ca.crt"
api() { curl -sf --max-time 1 --cacert "$work/ca.crt" --cert "$work/admin.crt" --key "$work/admin.key" "$@"; }
holder() { kubectl --context "$ctx" -n kube-system get lease kube-controller-manager -o jsonpath='{.spec.holderIdentity}' 2>/dev/null | cut -d_ -f1; }
reads=() writes=() leases=()
for run in $(seq "$runs"); do
  leader=$(holder)
  docker kill "$leader" >/dev/null
  t0=$(now)
  read_done="" write_done="" n=0
  while [ -z "$read_done" ] || [ -z "$write_done" ]; do
    if [ -z "$read_done" ] && api "$server/api/v1/namespaces/default" >/dev/null; then read_done=$(since "$t0"); fi
    if [ -z "$write_done" ] && api -X POST -H 'Content-Type: application/json' \
        -d "{\"metadata\":{\"name\":\"f-$run-$n\"}}" "$server/api/v1/namespaces/default/configmaps" >/dev/null; then
      write_done=$(since "$t0")
    fi
    n=$((n + 1))
    sleep 0.05
  done
  until h=$(holder) && [ -n "$h" ] && [ "$h" != "$leader" ]; do sleep 0.1; done
  leases+=("$(since "$t0")")
  reads+=("$read_done") writes+=("$write_done")
  echo "  run $run: killed $leader; read after ${read_done}s, write after ${write_done}s, Leases moved after ${leases[-1]}s" >&2
  docker start "$leader" >/dev/null
  # Back in the balancer's rotation (its /readyz answers) before the next kill.
  until [ "$(kubectl --context "$ctx" get endpoints kubernetes -o jsonpath='{.subsets[0].addresses[*].ip}' | wc -w)" = 3 ]; do sleep 0.5; done
done

# One more server on the running cluster, to Ready (its etcd member joined).
t0=$(now)
"$bin" node add --name "$name" --role server --wait 120s -q
add_server=$(since "$t0")
# And one taken out again: drained, its etcd member removed, the balancer told.
t0=$(now)
"$bin" node delete "$name-server-1" --name "$name" -q
delete_server=$(since "$t0")

echo "  create runs: ${creates[*]}; floor runs: ${floors[*]}" >&2
cat <<EOF
| what | median of $runs | same-run floor | target |
|---|---|---|---|
| \`create --servers 3 --workers 2 --wait\` | **${create} s** | ${floor} s (6 bare containers) | < 10 s |
| API read through the balancer after the Lease holder is killed | **$(printf '%s\n' "${reads[@]}" | median) s** | — | < 5 s |
| API write through the balancer after the Lease holder is killed | **$(printf '%s\n' "${writes[@]}" | median) s** | — | < 5 s |
| controllers' Leases on another server | $(printf '%s\n' "${leases[@]}" | median) s | — | (15 s lease) |
| \`node add --role server --wait\` (one run) | ${add_server} s | — | — |
| \`node delete\` of a server (one run) | ${delete_server} s | — | — |
EOF
