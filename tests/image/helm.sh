#!/usr/bin/env bash
# Builds helm for each architecture given (amd64 arm64 ppc64le s390x by
# default) from the Go module the rig pins (tests/rig/go: the same helm, same
# flags as tests/rig/build.sh's, cross-compiled: CGO_ENABLED=0 GOOS=linux
# GOARCH=<arch>), into target/image/helm/helm-linux-<arch>. Skips an
# architecture whose stamp of the inputs matches; prints a line per
# architecture with its build time and size.
#
#   bash tests/image/helm.sh [ARCH...]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
mod=$root/tests/rig/go
out=$root/target/image/helm
mkdir -p "$out"
arches=("$@")
((${#arches[@]})) || arches=(amd64 arm64 ppc64le s390x)
# The version tests/rig/build.sh stamps into the rig's helm.
helm_version=$(sed -n 's/^helm_version=//p' "$root/tests/rig/build.sh")
helm_ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=$helm_version -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
stamp=$(cat "$mod/go.mod" "$mod/go.sum" "$0" "$root/tests/rig/build.sh" | sha256sum | cut -d' ' -f1)
cd "$mod"
for arch in "${arches[@]}"; do
  bin=$out/helm-linux-$arch
  if [[ -f $bin.stamp && $(cat "$bin.stamp") == "$stamp-$(go version)" ]]; then
    echo "helm linux/$arch up to date: $bin"
    continue
  fi
  start=$(date +%s)
  CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath -ldflags "$helm_ldflags" -o "$bin" helm.sh/helm/v4/cmd/helm
  echo "$stamp-$(go version)" >"$bin.stamp"
  echo "helm linux/$arch built in $(($(date +%s) - start))s, $(stat -c %s "$bin") bytes: $bin"
done
