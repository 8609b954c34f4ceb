#!/usr/bin/env bash
# Cluster-lifecycle benchmark: node image build time and size, `kcluster create --wait` to all
# nodes Ready (median of N runs, image already built) for 1 node and 1 server + 2 workers,
# against the same-run floor: `docker run -d` of as many bare containers from the node image on
# a fresh network (what create cannot go below); and the idle memory of each node container
# (docker stats, and the container cgroup's own figure, which counts every process in it:
# agent, server, helpers); then, on that 1+2 cluster, `kcluster stop` + `kcluster start` back to
# Ready and `kcluster node add` of one worker to Ready (median of N each).
# Prints a Markdown block for BENCHMARKS.md.
#
#   benches/cluster-create.sh [runs]        (default 5 runs; needs Docker; builds --release)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
. benches/lib.sh
bin=$(KCLUSTER_BIN='' kcluster_bin release)
work=$(mktemp -d)
export KUBECONFIG=$work/kubeconfig HOME=$work
name=bench-$$
# Only this run's cluster: other clusters on the engine (a test suite running beside) stay.
trap '"$bin" delete --name "$name" -q >/dev/null 2>&1 || true; rm -rf "$work"' EXIT


# Image build: remove this binary's image, then let create build it and read the step's time.
tag=$("$bin" doctor 2>/dev/null | sed -n 's/.*Node image: \([^ ]*\).*/\1/p')
docker rmi -f "$tag" >/dev/null 2>&1 || true
build_line=$("$bin" create --name "$name" 2>&1 | grep 'Ensuring node image' || true)
build_secs=$(sed -n 's/.*(\([0-9.]*\)s).*/\1/p' <<<"$build_line")
"$bin" delete --name "$name" -q
size_mb=$(docker image inspect "$tag" --format '{{.Size}}' | awk '{printf "%.1f", $1/1048576}')

time_create() {
  local args=("$@") times=()
  for _ in $(seq "$runs"); do
    local t0; t0=$(now)
    "$bin" create --name "$name" --wait 60s -q "${args[@]}"
    times+=("$(awk -v a="$t0" -v b="$(now)" 'BEGIN{printf "%.3f", b-a}')")
    "$bin" delete --name "$name" -q
  done
  printf '%s\n' "${times[@]}" | median
  echo "  runs: ${times[*]}" >&2
}
# The floor: a network and N bare containers from the node image, started in parallel (as
# create starts its nodes) and removed again.
time_docker_run() {
  local n=$1 times=()
  for _ in $(seq "$runs"); do
    local t0; t0=$(now)
    docker network create "$name-floor" >/dev/null
    for i in $(seq "$n"); do
      docker run -d --name "$name-floor-$i" --network "$name-floor" --entrypoint /kcluster "$tag" --version >/dev/null &
    done
    wait
    times+=("$(awk -v a="$t0" -v b="$(now)" 'BEGIN{printf "%.3f", b-a}')")
    for i in $(seq "$n"); do docker rm -f "$name-floor-$i" >/dev/null; done
    docker network rm "$name-floor" >/dev/null
  done
  printf '%s\n' "${times[@]}" | median
  echo "  docker run x$n runs: ${times[*]}" >&2
}
one=$(time_create)
floor_one=$(time_docker_run 1)
three=$(time_create --workers 2)
floor_three=$(time_docker_run 3)

"$bin" create --name "$name" --workers 2 --wait 60s -q
sleep 30
mem=$(docker stats --no-stream --format '{{.Name}} {{.MemUsage}}' | grep "^$name-" | awk '{print $1": "$2}' | paste -sd ';' | sed 's/;/; /g')
# The cgroup's own figure: resident anonymous + file memory of every process in the container
# (cgroup v1 memory.stat total_rss + total_cache, or v2 memory.current).
cgroup_mem() {
  local id; id=$(docker inspect -f '{{.Id}}' "$1")
  local v1=/sys/fs/cgroup/memory/docker/$id/memory.stat v2
  v2=$(find /sys/fs/cgroup -maxdepth 3 -type d -name "*$id*" 2>/dev/null | head -1)
  if [ -f "$v1" ]; then
    awk '/^total_rss /{r=$2} /^total_cache /{c=$2} END{printf "%.1f MiB (rss %.1f + cache %.1f)", (r+c)/1048576, r/1048576, c/1048576}' "$v1"
  elif [ -n "$v2" ] && [ -f "$v2/memory.current" ]; then
    awk '{printf "%.1f MiB", $1/1048576}' "$v2/memory.current"
  else
    echo "unknown (no memory cgroup found for $1)"
  fi
}
cgmem=$(for c in $(docker ps --format '{{.Names}}' | grep "^$name-" | sort); do echo "$c: $(cgroup_mem "$c")"; done | paste -sd ';' | sed 's/;/; /g')

# Stop, then start back to every node Ready (the containers and volumes exist: what a laptop
# does after a reboot or a `kcluster stop`).
starts=()
for _ in $(seq "$runs"); do
  "$bin" stop --name "$name" -q
  t0=$(now)
  "$bin" start --name "$name" --wait 60s -q
  starts+=("$(awk -v a="$t0" -v b="$(now)" 'BEGIN{printf "%.3f", b-a}')")
done
start=$(printf '%s\n' "${starts[@]}" | median)
echo "  start runs: ${starts[*]}" >&2
# One worker added to the running cluster, to Ready; deleted again between runs.
adds=()
for _ in $(seq "$runs"); do
  t0=$(now)
  "$bin" node add --name "$name" --wait 60s -q
  adds+=("$(awk -v a="$t0" -v b="$(now)" 'BEGIN{printf "%.3f", b-a}')")
  added=$(docker ps --format '{{.Names}}' | grep "^$name-worker-" | sort -t- -k4 -n | tail -1)
  "$bin" node delete "$added" --name "$name" --force -q
done
add=$(printf '%s\n' "${adds[@]}" | median)
echo "  node add runs: ${adds[*]}" >&2
"$bin" delete --name "$name" -q

cat <<MD
- Machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(docker version --format 'Docker {{.Server.Version}}'), kernel $(uname -r); $(date -u +%Y-%m-%d)
- Node image build (release binary, through the Docker API): ${build_secs}s; image size ${size_mb} MB
- \`kcluster create --wait\`, 1 node, median of $runs: **${one}s**; floor (\`docker run -d\` of 1 bare container from the node image on a new network), same run: ${floor_one}s; ratio $(awk -v a="$one" -v b="$floor_one" 'BEGIN{printf "%.1f", a/b}')
- \`kcluster create --workers 2 --wait\`, 1 server + 2 workers, median of $runs: **${three}s**; floor (3 bare containers in parallel): ${floor_three}s; ratio $(awk -v a="$three" -v b="$floor_three" 'BEGIN{printf "%.1f", a/b}')
- \`kcluster start --wait\` of the stopped 1+2 cluster to every node Ready, median of $runs: **${start}s**
- \`kcluster node add --wait\` of one worker to Ready, median of $runs: **${add}s**
- Idle memory after 30 s (docker stats): $mem
- Idle memory after 30 s (the container's cgroup, every process in it): $cgmem
MD
