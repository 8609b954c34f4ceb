#!/usr/bin/env bash
# The Action's install step: puts kcluster (and, when asked, a given kubectl) on the job's PATH.
#
# kcluster is built from the Action's own source (no binary is published) with
# `cargo install --locked`, into $KCLUSTER_ACTION_ROOT (the binary cached by the Action, keyed on
# the source's hash; the cargo target directory cached apart and restored only when a build is
# needed), so only the first run of a version compiles. When the cached binary already reports the source's version, nothing is built.
#
# Inputs (environment): KCLUSTER_ACTION_SOURCE (the Action's checkout), KCLUSTER_ACTION_ROOT
# (install root), INPUT_KUBECTL_VERSION (e.g. v1.33.0; empty: keep the runner's kubectl).
set -euo pipefail
source=${KCLUSTER_ACTION_SOURCE:?set KCLUSTER_ACTION_SOURCE to the Action source folder}
root=${KCLUSTER_ACTION_ROOT:?set KCLUSTER_ACTION_ROOT to an install root}
bin=$root/bin
mkdir -p "$bin"
want=$(sed -n 's/^version = "\(.*\)"/\1/p' "$source/Cargo.toml" | head -1)
have=$("$bin/kcluster" --version 2>/dev/null | awk '{print $2}' || true)
if [ "$have" = "$want" ] && [ -f "$root/source.sha256" ] && cmp -s "$root/source.sha256" <(cd "$source" && cat Cargo.lock Cargo.toml $(find src node-image -type f 2>/dev/null | sort) | sha256sum); then
  echo "kcluster $have from the cache"
else
  if ! command -v cargo >/dev/null; then
    echo "::error::kcluster is built from source and needs Rust: add dtolnay/rust-toolchain (or any Rust install) before this Action" >&2
    exit 1
  fi
  echo "building kcluster $want from $source (cached for the next runs)"
  CARGO_TARGET_DIR=$root/target cargo install --locked --path "$source" --root "$root" --force
  (cd "$source" && cat Cargo.lock Cargo.toml $(find src node-image -type f 2>/dev/null | sort) | sha256sum) >"$root/source.sha256"
fi
if [ -n "${INPUT_KUBECTL_VERSION:-}" ]; then
  installed=$("$bin/kubectl" version --client 2>/dev/null | awk '/Client Version/ {print $3}' || true)
  if [ "$installed" != "$INPUT_KUBECTL_VERSION" ]; then
    arch=$(uname -m); case $arch in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; esac
    curl -fsSL --retry 3 -o "$bin/kubectl" "https://dl.k8s.io/release/$INPUT_KUBECTL_VERSION/bin/linux/$arch/kubectl"
    chmod +x "$bin/kubectl"
  fi
fi
if [ -n "${GITHUB_PATH:-}" ]; then echo "$bin" >>"$GITHUB_PATH"; fi
"$bin/kcluster" --version
