#!/usr/bin/env bash
# Measures the rig: start time to "all nodes Ready" and the peak memory of
# each component, for the given node counts (default: 3 and 1000).
#   bash tests/rig/measure.sh [nodes...]
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tests/rig/build.sh >/dev/null
cargo build -q --release -p klm-rig --bin klm-rig
for nodes in "${@:-3 1000}"; do
	dir=$(mktemp -d)
	# The rig prints one line when ready and stops when its stdin closes.
	coproc RIG { exec target/release/klm-rig up --nodes "$nodes" --dir "$dir/rig" --stdin-lifeline 2>"$dir/err"; }
	if ! read -r ready <&"${RIG[0]}"; then
		echo "the rig did not start:" >&2
		cat "$dir/err" >&2
		exit 1
	fi
	echo "== $nodes nodes: $ready"
	total=0
	for pid in $(pgrep -f -- "$dir/rig"); do
		name=$(tr '\0' ' ' </proc/"$pid"/cmdline | cut -d' ' -f1)
		peak=$(awk '/VmHWM/ {print $2}' /proc/"$pid"/status)
		total=$((total + peak))
		printf '   %-24s peak RSS %6d MiB\n' "$(basename "$name")" $((peak / 1024))
	done
	printf '   %-24s peak RSS %6d MiB\n' "all components" $((total / 1024))
	exec {RIG[1]}>&-
	wait "$RIG_PID" || true
	rm -rf "$dir"
done
