#!/usr/bin/env bash
# Builds a static klm (glibc with crt-static, the host's own target: no
# toolchain download) for the rig's image of the chart's steps, checks it is
# static and runs, and prints its path. Used by `make static-klm` and by the
# rig (klm_rig::argo), so both build the same binary.
set -euo pipefail
cd "$(dirname "$0")/../.."
triple=$(rustc -vV | sed -n 's/^host: //p')
# Never inherit the flags of an outer cargo (cargo test sets these).
unset CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_TARGET CARGO_TARGET_DIR CARGO_BUILD_RUSTFLAGS
RUSTFLAGS='-C target-feature=+crt-static' CARGO_PROFILE_DEV_DEBUG=0 \
  cargo build -q --bin klm --target "$triple" --target-dir target/static >&2
bin=target/static/$triple/debug/klm
# glibc's crt-static makes a static PIE: ldd says "statically linked" (a
# static non-PIE binary: "not a dynamic executable").
linkage=$(ldd "$bin" 2>&1 || true)
case $linkage in
  *"statically linked"* | *"not a dynamic executable"*) ;;
  *) echo "static-klm: $bin is dynamically linked: $linkage" >&2; exit 1 ;;
esac
"$bin" --version >/dev/null
echo "$PWD/$bin"
