#!/usr/bin/env bash
# Builds the tutorial's images offline, FROM scratch with Debian's static busybox:
#   tutorial/myblog:v1, tutorial/myblog:v2   the blog (a stand-in for the tutorial's Django app)
#   tutorial/mysql:5.7                       its database (a stand-in that speaks HTTP, not MySQL)
# and, when a cluster name is given, loads them into that cluster's nodes.
#
#   examples/tutorial/images/build.sh [CLUSTER]      (needs Docker and /bin/busybox:
#                                                     apt-get install busybox-static)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
busybox=${BUSYBOX:-/bin/busybox}
if ! "$busybox" --list >/dev/null 2>&1; then
  echo "error: these images are built from Debian's static busybox at $busybox;" \
       "install it with: sudo apt-get install busybox-static" >&2
  exit 1
fi
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$busybox" "$context/busybox"
cp "$here/myblog.sh" "$here/mysql.sh" "$context/"

build() { # tag, Dockerfile body
  printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n%s\n' "$2" \
    >"$context/Dockerfile"
  if ! docker build -q -t "$1" "$context" >/dev/null 2>"$context/build.log"; then
    cat "$context/build.log" >&2
    exit 1
  fi
  echo "built $1"
}
build tutorial/myblog:v1 $'COPY myblog.sh /myblog.sh\nENV VERSION=v1\nEXPOSE 8002\nCMD ["/bin/sh", "/myblog.sh"]'
build tutorial/myblog:v2 $'COPY myblog.sh /myblog.sh\nENV VERSION=v2\nEXPOSE 8002\nCMD ["/bin/sh", "/myblog.sh"]'
build tutorial/mysql:5.7 $'COPY mysql.sh /mysql.sh\nEXPOSE 3306\nENTRYPOINT ["/bin/sh", "/mysql.sh"]'

if [ $# -gt 0 ]; then
  kcluster image load tutorial/myblog:v1 tutorial/myblog:v2 tutorial/mysql:5.7 --name "$1"
fi
