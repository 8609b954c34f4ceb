#!/usr/bin/env bash
# Puts the official Python client's own end-to-end suite (kubernetes/e2e_test of the pinned
# release) beside the installed package, with pytest, for
#   cargo test --test python_client -- --ignored python_client_e2e_suite
# No PyPI artifact of the client carries the suite; it is only in the source tree on GitHub.
# Usage: tests/python/fetch-e2e-suite.sh [SOURCE_TARBALL]   (default: download v37.0.2 from GitHub)
set -euo pipefail
version=37.0.2
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
  kubernetes==$version pytest==9.2.0
site=$(python3 -c 'import kubernetes, os; print(os.path.dirname(kubernetes.__file__))')
if [ -f "$site/e2e_test/base.py" ]; then
  echo "the suite is already at $site/e2e_test"
  exit 0
fi
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
if [ $# -ge 1 ]; then
  tar -xzf "$1" -C "$src"
else
  curl -fsSL "https://github.com/kubernetes-client/python/archive/refs/tags/v$version.tar.gz" |
    tar -xz -C "$src"
fi
suite=$(find "$src" -maxdepth 3 -type d -path '*/kubernetes/e2e_test' | head -n1)
if [ -z "$suite" ]; then
  echo "no kubernetes/e2e_test in the source release" >&2
  exit 1
fi
cp -r "$suite" "$site/e2e_test"
echo "the suite is at $site/e2e_test"
