#!/usr/bin/env bash
# Cluster-lifecycle benchmark: node image build time and size, `kcluster create --wait` to all
# nodes Ready (median of N runs, image already built) for 1 node and 1 server + 2 workers, and
# the idle memory of each node container. Prints a Markdown block for BENCHMARKS.md.
#
#   benches/cluster-create.sh [runs]        (default 5 runs; needs Docker; builds --release)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
cargo build --release --quiet
bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/x86_64-unknown-linux-gnu/release/kcluster
work=$(mktemp -d)
export KUBECONFIG=$work/kubeconfig HOME=$work
trap '"$bin" delete --all -q >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
name=bench-$$

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
now() { date +%s.%N; }

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
one=$(time_create)
three=$(time_create --workers 2)

"$bin" create --name "$name" --workers 2 --wait 60s -q
sleep 30
mem=$(docker stats --no-stream --format '{{.Name}} {{.MemUsage}}' | grep "^$name-" | awk '{print $1": "$2}' | paste -sd ';' | sed 's/;/; /g')
"$bin" delete --name "$name" -q

cat <<MD
- Machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(docker version --format 'Docker {{.Server.Version}}'), kernel $(uname -r); $(date -u +%Y-%m-%d)
- Node image build (release binary, through the Docker API): ${build_secs}s; image size ${size_mb} MB
- \`kcluster create --wait\`, 1 node, median of $runs: **${one}s**
- \`kcluster create --workers 2 --wait\`, 1 server + 2 workers, median of $runs: **${three}s**
- Idle memory after 30 s (docker stats): $mem
MD
