#!/usr/bin/env bash
# `make release-check`: the release's whole chain, here, against a registry
# on loopback: the four platforms' image index in the release profile
# (tests/image/build.sh --release: built, reproducible, checked), then
# `klm-rig image publish`: Debian's docker-registry started on 127.0.0.1, the
# index pushed, the chart pushed as an OCI artifact with the index digest in
# its values, the index read back by digest as a client pulls it and every
# platform checked again (ELF machine of klm and helm, user, labels), and the
# pulled chart rendered to show its steps run that digest. The same command
# (`klm-rig image publish`) pushes a release to ghcr.io
# (.github/workflows/image.yaml), with the helm built for the image.
#
#   bash tests/image/release-check.sh [build.sh's options and ARCH...]
#
# Extra arguments go to tests/image/build.sh (e.g. `amd64` alone for a quick
# run); the release profile unless --debug is given (the tests' debug build,
# quicker where `make cross` already built it).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
version=${VERSION:-$(sed -n '/^\[package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)}
args=()
profile=(--release)
for arg in "$@"; do
  if [[ $arg == --debug ]]; then profile=(); else args+=("$arg"); fi
done
args=(${profile[@]+"${profile[@]}"} ${args[@]+"${args[@]}"})
bash tests/image/build.sh --out "$root/target/image/oci" ${args[@]+"${args[@]}"}
arches=()
for arg in ${args[@]+"${args[@]}"}; do
  case $arg in amd64 | arm64 | ppc64le | s390x) arches+=(--arch "$arg") ;; esac
done
# The helm that pushes the chart: the image's own, for this machine.
case $(uname -m) in
  x86_64) host_arch=amd64 ;;
  aarch64) host_arch=arm64 ;;
  *) host_arch=$(uname -m) ;;
esac
bash tests/image/helm.sh "$host_arch"
work=$root/target/image/release-check
rm -rf "$work"
"${CARGO_TARGET_DIR:-$root/target}/debug/klm-rig" image publish --layout "$root/target/image/oci" \
  --tag "$version" --work "$work" --helm "$root/target/image/helm/helm-linux-$host_arch" \
  ${arches[@]+"${arches[@]}"}
echo "release-check: the index and the chart went through a registry and came back checked"
