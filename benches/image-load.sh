#!/usr/bin/env bash
# Image-load benchmark (issue: real pods): `kcluster image load` of a ~100 MB image into the 3
# nodes of a cluster (1 server + 2 workers), against `docker save` of the same image alone to
# /dev/null. The load streams one `docker save` to all nodes at once, so the ratio says what the
# fan-out and the nodes' unpacking cost on top of the engine's own export.
#
# The image is built here FROM scratch: Debian's static busybox plus four layers of 25 MB of
# random data (incompressible, so no layer is cheaper than its size). Every load goes into a
# fresh cluster, because nodes skip images and layers they already hold; a last row times
# loading the same image again into nodes that have it.
#
#   benches/image-load.sh [runs]            (default 5; needs Docker and /bin/busybox)
#   KCLUSTER_PROFILE=debug benches/image-load.sh   (use the debug binary instead of --release)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
profile=${KCLUSTER_PROFILE:-release}
. benches/lib.sh
bin=$(KCLUSTER_BIN='' kcluster_bin "$profile")
work=$(mktemp -d)
export KUBECONFIG=$work/kubeconfig HOME=$work
name=imgbench-$$
img=kcluster-bench/load-100mb:$$
cleanup() {
  "$bin" delete --name "$name" -q >/dev/null 2>&1 || true
  docker rmi -f "$img" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

ctx=$work/image
mkdir -p "$ctx"
cp /bin/busybox "$ctx/busybox"
for i in 1 2 3 4; do head -c 25M /dev/urandom >"$ctx/data$i"; done
cat >"$ctx/Dockerfile" <<'EOF'
FROM scratch
COPY busybox /bin/busybox
COPY data1 /data/1
COPY data2 /data/2
COPY data3 /data/3
COPY data4 /data/4
EOF
docker build -q -t "$img" "$ctx" >/dev/null
size_mb=$(docker image inspect "$img" --format '{{.Size}}' | awk '{printf "%.1f", $1/1048576}')


# Warm the engine's page cache for the layers once, so the first timed save is not the odd one.
docker save "$img" >/dev/null

saves=() loads=()
for _ in $(seq "$runs"); do
  t0=$(now); docker save "$img" >/dev/null; saves+=("$(since "$t0")")
  "$bin" create --name "$name" --workers 2 --wait 60s -q
  t0=$(now); "$bin" image load "$img" --name "$name" -q; loads+=("$(since "$t0")")
  again_t0=$(now); "$bin" image load "$img" --name "$name" -q; again=$(since "$again_t0")
  "$bin" delete --name "$name" -q
done
save=$(printf '%s\n' "${saves[@]}" | median)
load=$(printf '%s\n' "${loads[@]}" | median)
ratio=$(awk -v l="$load" -v s="$save" 'BEGIN{printf "%.2f", l/s}')

cat <<MD
- Machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(docker version --format 'Docker {{.Server.Version}}'), kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%Y-%m-%d\ %H:%M) UTC; $profile binary
- Image: FROM scratch, busybox + 4 layers of 25 MB random data; ${size_mb} MB
- \`docker save\` to /dev/null, median of $runs: **${save}s** (runs ${saves[*]})
- \`kcluster image load\` into 3 nodes (fresh cluster each run), median of $runs: **${load}s** (runs ${loads[*]})
- Ratio load ÷ save: **${ratio}**
- Loading it again into nodes that have it (last run): ${again}s
MD
