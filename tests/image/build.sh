#!/usr/bin/env bash
# Builds the klm image for each architecture given (all four by default:
# amd64 arm64 ppc64le s390x) as one OCI image index, without pulling any
# base: klm (tests/cross/build.sh: static, checked and smoke-run under
# qemu-user), helm (tests/image/helm.sh, from the rig's Go module) and the CA
# bundle of Debian's ca-certificates, assembled by `klm-rig image build`
# (tests/rig/src/oci.rs: one gzip layer per platform, mtime 0, sorted
# entries, so the same inputs give the same digest), then checked by
# `klm-rig image check` (the platforms listed, every digest, non-root user,
# labels, no shell, ELF machine of klm and helm per platform).
#
#   bash tests/image/build.sh [--release] [--out DIR] [ARCH...]
#
# Writes the OCI image layout to DIR (default target/image/oci) and prints
# the index digest and each platform's compressed and uncompressed size.
# --release builds klm in the release profile (what ships); the default is
# the debug build the tests use. VERSION and REVISION (the labels) default
# to the crate's version and the checked-out commit.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
release=()
out=$root/target/image/oci
while (($#)); do
  case $1 in
    --release) release=(--release); shift ;;
    --out) out=$2; shift 2 ;;
    *) break ;;
  esac
done
arches=("$@")
((${#arches[@]})) || arches=(amd64 arm64 ppc64le s390x)
version=${VERSION:-$(sed -n '/^\[package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)}
revision=${REVISION:-$(git rev-parse HEAD)}
ca=/etc/ssl/certs/ca-certificates.crt
[[ -s $ca ]] || { echo "image: $ca is missing (Debian's ca-certificates package)" >&2; exit 1; }

start=$(date +%s)
bash tests/cross/build.sh "${release[@]}" "${arches[@]}"
bash tests/image/helm.sh "${arches[@]}"
cargo build -q -p klm-rig --bin klm-rig
rig=${CARGO_TARGET_DIR:-$root/target}/debug/klm-rig
# tests/cross/build.sh --release names its binaries klm-linux-<arch>-release,
# beside the debug ones: a release image never takes a stale debug klm.
suffix=${release[0]:+-release}
platforms=()
for arch in "${arches[@]}"; do
  platforms+=(--platform "$arch=target/cross/bin/klm-linux-$arch$suffix,target/image/helm/helm-linux-$arch")
done
"$rig" image build --out "$out" --version "$version" --revision "$revision" --ca "$ca" "${platforms[@]}"
check_arches=()
for arch in "${arches[@]}"; do check_arches+=(--arch "$arch"); done
"$rig" image check "$out" "${check_arches[@]}"
echo "image: built and checked in $(($(date +%s) - start))s: $out"
