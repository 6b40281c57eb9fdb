#!/usr/bin/env bash
# Builds the test rig's Go binaries from the pinned module in tests/rig/go into
# target/rig/bin: kuberig (etcd + kube-apiserver + kube-controller-manager +
# kube-scheduler + kubelet + kubectl, linked under each name), kwok and helm.
# Skips the build when a stamp of the inputs matches; prints how long it took.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${KLM_RIG_BIN:-$root/target/rig/bin}
mod=$here/go
mkdir -p "$bin"

kube_version=v1.36.3
helm_version=v4.2.4

stamp_input=$(cat "$mod/go.mod" "$mod/go.sum" "$mod"/*.go "$0"; go version)
stamp=$(printf '%s' "$stamp_input" | sha256sum | cut -d' ' -f1)
if [[ -f "$bin/.stamp" && "$(cat "$bin/.stamp")" == "$stamp" ]]; then
	echo "rig binaries up to date in $bin"
	exit 0
fi

start=$(date +%s)
cd "$mod"
export CGO_ENABLED=0
kube_ldflags="-s -w \
 -X k8s.io/component-base/version.gitVersion=$kube_version \
 -X k8s.io/component-base/version.gitMajor=1 \
 -X k8s.io/component-base/version.gitMinor=36 \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"
helm_ldflags="-s -w -X helm.sh/helm/v4/internal/version.version=$helm_version -X helm.sh/helm/v4/internal/version.gitTreeState=clean"

echo "building kuberig ($kube_version), kwok and helm ($helm_version) into $bin"
go build -trimpath -ldflags "$kube_ldflags" -o "$bin/kuberig" .
go build -trimpath -ldflags "-s -w" -o "$bin/kwok" sigs.k8s.io/kwok/cmd/kwok
go build -trimpath -ldflags "$helm_ldflags" -o "$bin/helm" helm.sh/helm/v4/cmd/helm
for name in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do
	ln -sf kuberig "$bin/$name"
done
echo "$stamp" > "$bin/.stamp"
echo "rig binaries built in $(( $(date +%s) - start ))s"
