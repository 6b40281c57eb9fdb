#!/usr/bin/env bash
# Builds Argo Workflows' workflow-controller, argoexec and argo CLI (the
# version pinned in tests/argo/go.mod) and the static pause command into
# target/rig/bin, for the rig's real node. Skips the build when a stamp of the
# inputs matches; prints how long it took.
#
# Argo is built from a patched copy of its module under target/argo, not from
# the Go module cache, through a `replace` in a generated go.mod (-modfile), so
# the committed go.mod never points at a path a fresh clone lacks. The copy:
#   - restores workflow/executor/osspecific/signal_linux.go, a symlink to
#     signal_darwin.go in Argo's git repository that module zips drop
#     (argoexec fails with `undefined: Setpgid` without it);
#   - keeps ui/embed.go with a placeholder ui/dist/app/index.html (the CLI
#     embeds the UI for `argo server`, which the rig never runs);
#   - binds the controller's fixed health listener to 127.0.0.1:6060 instead
#     of :6060, and its Prometheus listener to 127.0.0.1 (no listener of the
#     rig may face other interfaces).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${KLM_RIG_BIN:-$root/target/rig/bin}
work=$root/target/argo
module=github.com/argoproj/argo-workflows/v3
commands=(workflow-controller argoexec argo pause)
mkdir -p "$bin" "$work"

stamp_input=$(cat "$here/go.mod" "$here/go.sum" "$here"/*.go "$here"/pause/*.go "$0"; go version)
stamp=$(printf '%s' "$stamp_input" | sha256sum | cut -d' ' -f1)
stamp_file=$bin/.argo-stamp
up_to_date=true
for name in "${commands[@]}"; do
	[[ -x "$bin/$name" ]] || up_to_date=false
done
if $up_to_date && [[ -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" ]]; then
	echo "argo binaries up to date in $bin"
	exit 0
fi

start=$(date +%s)
cd "$here"
go mod download "$module"
version=$(go list -m -f '{{.Version}}' "$module")
cache_dir=$(go list -m -f '{{.Dir}}' "$module")
[[ -d "$cache_dir" ]] || { echo "argo build: $module $version is not in the Go module cache" >&2; exit 1; }

# The patched copy, made beside its final place and renamed into it, so a
# killed build never leaves half a copy that a later build would trust.
src=$work/src-$version
if [[ -e "$src.tmp" ]]; then chmod -R u+w "$src.tmp" && rm -rf "$src.tmp"; fi
cp -r "$cache_dir" "$src.tmp"
chmod -R u+w "$src.tmp"
mv "$src.tmp/ui/embed.go" "$src.tmp/embed.go.keep"
rm -rf "$src.tmp"/{ui,sdks,docs,test}
mkdir -p "$src.tmp/ui/dist/app"
mv "$src.tmp/embed.go.keep" "$src.tmp/ui/embed.go"
echo '<!doctype html><title>Argo UI not built</title>' >"$src.tmp/ui/dist/app/index.html"

osspecific=$src.tmp/workflow/executor/osspecific
if [[ ! -e "$osspecific/signal_linux.go" ]]; then
	# Linux has the same process-group calls as Darwin (Getpgid, Setpgid).
	grep -q 'func Setpgid' "$osspecific/signal_darwin.go" || {
		echo "argo build: $osspecific/signal_darwin.go no longer defines Setpgid; check what signal_linux.go should be" >&2
		exit 1
	}
	cp "$osspecific/signal_darwin.go" "$osspecific/signal_linux.go"
fi

controller_main=$src.tmp/cmd/workflow-controller/main.go
if [[ $(grep -c 'http.ListenAndServe(":6060", nil)' "$controller_main") != 1 ]]; then
	echo "argo build: the controller's health listener \`http.ListenAndServe(\":6060\", nil)\` is not in $controller_main exactly once; bind it to 127.0.0.1 by hand before building" >&2
	exit 1
fi
sed -i 's/http.ListenAndServe(":6060", nil)/http.ListenAndServe("127.0.0.1:6060", nil)/' "$controller_main"
grep -q 'http.ListenAndServe("127.0.0.1:6060", nil)' "$controller_main"
# The Prometheus listener too (the tests scrape it on loopback).
exporter=$src.tmp/util/telemetry/exporter_prometheus.go
if [[ $(grep -c 'Addr: fmt.Sprintf(":%v", m.config.port())' "$exporter") != 1 ]]; then
	echo "argo build: the metrics listener \`Addr: fmt.Sprintf(\":%v\", m.config.port())\` is not in $exporter exactly once; bind it to 127.0.0.1 by hand before building" >&2
	exit 1
fi
sed -i 's/Addr: fmt.Sprintf(":%v", m.config.port())/Addr: fmt.Sprintf("127.0.0.1:%v", m.config.port())/' "$exporter"
grep -q 'Addr: fmt.Sprintf("127.0.0.1:%v", m.config.port())' "$exporter"
rm -rf "$src"
mv "$src.tmp" "$src"

# tests/argo/go.mod plus the replace; go.sum goes beside it (-modfile reads
# the .sum next to the .mod it is given).
{
	cat "$here/go.mod"
	echo
	echo "replace $module => $src"
} >"$work/go.mod"
cp "$here/go.sum" "$work/go.sum"

echo "building Argo $version (${commands[*]}) into $bin"
export CGO_ENABLED=0
nice -n 10 go build -modfile="$work/go.mod" -trimpath -buildvcs=false \
	-ldflags "-s -w -X $module.version=$version" -o "$bin/" \
	"$module/cmd/workflow-controller" "$module/cmd/argoexec" "$module/cmd/argo" ./pause
echo "$stamp" >"$stamp_file"
echo "argo binaries built in $(($(date +%s) - start))s"
