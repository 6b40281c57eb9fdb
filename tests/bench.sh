#!/usr/bin/env bash
# Speed measurements on the rig (numbers for notes, not a test):
#   * select-nodes over 5,000 kwok nodes: wall time and peak RSS of klm
#     (targets: < 300 ms, < 64 MiB), and the API requests it makes;
# Run with `make bench`. Needs GNU time (Debian package `time`).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bin=$root/target/rig/bin
nodes=${BENCH_NODES:-5000}
runs=${BENCH_RUNS:-7}
[[ -x /usr/bin/time ]] || { echo "bench: /usr/bin/time is missing (apt-get install time)" >&2; exit 1; }
cargo build -q --release --bin klm -p kata-lifecycle-manager
cargo build -q --release -p klm-rig --bin klm-rig
klm=$root/target/release/klm
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

coproc RIG { exec "$root/target/release/klm-rig" up --nodes "$nodes" --dir "$work/rig" --stdin-lifeline 2>"$work/rig.log"; }
read -r ready <&"${RIG[0]}" || { tail -20 "$work/rig.log" >&2; exit 1; }
echo "rig: $ready"
export KUBECONFIG=$work/rig/admin.kubeconfig

# A ServiceAccount whose requests the audit log records.
"$bin/kubectl" create serviceaccount bench -n default >/dev/null
"$bin/kubectl" create clusterrole bench --verb get,list,watch --resource nodes,pods,configmaps,secrets,daemonsets.apps >/dev/null
"$bin/kubectl" create clusterrolebinding bench --clusterrole bench --serviceaccount default:bench >/dev/null
server=$("$bin/kubectl" config view --minify -o jsonpath='{.clusters[0].cluster.server}')
sa=$work/bench.kubeconfig
"$bin/kubectl" config --kubeconfig "$sa" set-cluster rig --server "$server" --certificate-authority "$work/rig/pki/ca.crt" >/dev/null
"$bin/kubectl" config --kubeconfig "$sa" set-credentials bench --token "$("$bin/kubectl" create token bench -n default)" >/dev/null
"$bin/kubectl" config --kubeconfig "$sa" set-context rig --cluster rig --user bench >/dev/null
"$bin/kubectl" config --kubeconfig "$sa" use-context rig >/dev/null

echo
echo "select-nodes over $nodes nodes, batch size 10, $runs runs (wall ms, peak RSS KiB):"
for _ in $(seq "$runs"); do
	/usr/bin/time -f '%e %M' -o "$work/time" "$klm" --kubeconfig "$sa" select-nodes --node-selector type=kwok --batch-size 10 -o json >"$work/waves.json"
	read -r secs rss <"$work/time"
	ms=$(awk -v s="$secs" 'BEGIN {printf "%.0f", s * 1000}')
	printf '  %6d ms  %6d KiB\n' "$ms" "$rss"
	echo "$ms $rss" >>"$work/samples"
done
sort -n "$work/samples" | awk -v n="$runs" 'NR == int((n + 1) / 2) {printf "  median: %.0f ms, %d KiB (%.1f MiB)\n", $1, $2, $2 / 1024}'
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("  selected %d nodes in %d waves" % (d["count"], len(d["waves"])))' "$work/waves.json"
python3 - "$work/rig/audit.log" "$runs" <<'PY'
import collections, json, sys
counts = collections.Counter()
for line in open(sys.argv[1]):
    event = json.loads(line)
    if event["user"]["username"] != "system:serviceaccount:default:bench" or event["stage"] != "ResponseComplete":
        continue
    counts[(event["verb"], event.get("objectRef", {}).get("resource", ""))] += 1
runs = int(sys.argv[2])
print(f"  API requests per run: {sum(counts.values()) / runs:g}")
for (verb, resource), n in sorted(counts.items()):
    print(f"    {verb} {resource}: {n / runs:g} per run")
PY
echo
echo "for comparison, the same nodes listed by kubectl in one request (JSON, discarded):"
for _ in 1 2 3; do
	/usr/bin/time -f '  %e s  %M KiB' "$bin/kubectl" --kubeconfig "$sa" get --raw '/api/v1/nodes?limit=5000' >/dev/null
done
exec {RIG[1]}>&-
wait "$RIG_PID" || true
