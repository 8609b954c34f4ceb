# Sourced by the benchmark scripts: timing helpers and where the kcluster binary is.

# The median of the numbers on stdin, one a line.
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
now() { date +%s.%N; }
# Seconds since a time `now` printed.
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.3f", b-a}'; }

# This checkout's binary of PROFILE (release or debug), built first unless KCLUSTER_BIN names one.
kcluster_bin() {
  local profile=$1
  if [ -n "${KCLUSTER_BIN:-}" ]; then
    echo "$KCLUSTER_BIN"
    return
  fi
  if [ "$profile" = release ]; then cargo build --release --quiet >&2; else cargo build --quiet >&2; fi
  echo "$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/x86_64-unknown-linux-gnu/$profile/kcluster"
}
