#!/usr/bin/env bash
# Builds the repository-check tools pinned in tests/tools/go.mod into
# target/rig/bin: actionlint (lints .github/workflows). Skips the build when a
# stamp of the inputs matches.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${KLM_RIG_BIN:-$root/target/rig/bin}
mkdir -p "$bin"

stamp=$(cat "$here/go.mod" "$here/go.sum" "$0" <(go version) | sha256sum | cut -d' ' -f1)
if [[ -f "$bin/.tools-stamp" && "$(cat "$bin/.tools-stamp")" == "$stamp" && -x "$bin/actionlint" ]]; then
	echo "tools up to date in $bin"
	exit 0
fi
start=$(date +%s)
cd "$here"
version=$(go list -m -f '{{.Version}}' github.com/rhysd/actionlint)
CGO_ENABLED=0 nice go build -trimpath \
	-ldflags "-s -w -X github.com/rhysd/actionlint.version=$version" \
	-o "$bin/actionlint" github.com/rhysd/actionlint/cmd/actionlint
echo "$stamp" >"$bin/.tools-stamp"
echo "tools (actionlint $version) built in $(($(date +%s) - start))s"
