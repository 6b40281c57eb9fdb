#!/usr/bin/env bash
# Builds Argo Workflows' offline linter (what `argo lint --offline` runs) for
# two Argo lines into target/rig/bin: argolint-v3 (v3.7.18, module v3/) and
# argolint-v4 (v4.0.7, module v4/; each line pins its own Kubernetes
# libraries, so each has its own module). The chart tests run both on the
# rendered WorkflowTemplate. Skips the build when a stamp of the inputs
# matches; prints how long it took. Builds run at low priority (nice): the
# machine is shared.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${KLM_RIG_BIN:-$root/target/rig/bin}
mkdir -p "$bin"

stamp_input=$(cat "$here"/v3/go.mod "$here"/v3/go.sum "$here"/v3/*.go \
	"$here"/v4/go.mod "$here"/v4/go.sum "$here"/v4/*.go "$0"; go version)
stamp=$(printf '%s' "$stamp_input" | sha256sum | cut -d' ' -f1)
stamp_file=$bin/.argolint-stamp
if [[ -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" \
	&& -x "$bin/argolint-v3" && -x "$bin/argolint-v4" ]]; then
	echo "argolint binaries up to date in $bin"
	exit 0
fi

start=$(date +%s)
export CGO_ENABLED=0
for line in v3 v4; do
	echo "building argolint-$line into $bin"
	(cd "$here/$line" && nice -n 10 go build -trimpath -ldflags "-s -w" -o "$bin/argolint-$line" .)
done
echo "$stamp" > "$stamp_file"
echo "argolint binaries built in $(( $(date +%s) - start ))s"
