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

# ---------------------------------------------------------------------------
# One daemonset-mode wave of one node, as the chart's ServiceAccount: how long
# from the event a step waits for (the new kata-deploy pod Ready and the node
# labelled; the verification pod Succeeded) to the step returning, and how
# many API requests each step makes.
echo
echo "one wave of one node (3-node rig, chart's ServiceAccount):"
work2=$(mktemp -d)
coproc RIG2 { exec "$root/target/release/klm-rig" up --nodes 3 --dir "$work2/rig" --stdin-lifeline 2>"$work2/rig.log"; }
read -r ready2 <&"${RIG2[0]}" || { tail -20 "$work2/rig.log" >&2; exit 1; }
export KUBECONFIG=$work2/rig/admin.kubeconfig
"$root/target/release/klm-rig" charts --dir "$work2/charts" >/dev/null
"$bin/helm" install kata-deploy "$work2/charts/kata-deploy-3.27.0.tgz" -n kata-system --create-namespace --wait --timeout 120s >/dev/null
"$root/target/release/klm-rig" argo-crds v3.7.18
cat >"$work2/pod.yaml" <<'POD'
apiVersion: v1
kind: Pod
metadata:
  name: ${TEST_POD}
  annotations:
    rig.klm.test/outcome: succeed
spec:
  restartPolicy: Never
  nodeSelector:
    kubernetes.io/hostname: ${NODE}
  tolerations:
    - operator: Exists
  containers:
    - name: verify
      image: registry.invalid/verify:1
POD
"$bin/helm" install klm chart/kata-lifecycle-manager -n kata-system --set argoNamespace=kata-system \
	--set defaults.helmNamespace=kata-system --set defaults.verificationNamespace=kata-system \
	--set-file defaults.verificationPod="$work2/pod.yaml" >/dev/null
server=$("$bin/kubectl" config view --minify -o jsonpath='{.clusters[0].cluster.server}')
sa2=$work2/sa.kubeconfig
"$bin/kubectl" config --kubeconfig "$sa2" set-cluster rig --server "$server" --certificate-authority "$work2/rig/pki/ca.crt" >/dev/null
"$bin/kubectl" config --kubeconfig "$sa2" set-credentials klm --token "$("$bin/kubectl" create token klm-kata-lifecycle-manager -n kata-system)" >/dev/null
"$bin/kubectl" config --kubeconfig "$sa2" set-context rig --cluster rig --user klm >/dev/null
"$bin/kubectl" config --kubeconfig "$sa2" use-context rig >/dev/null
common=(--kubeconfig "$sa2" --helm-namespace kata-system --helm "$bin/helm")
export KLM_RUN_ID=bench-wave
step() { # name, klm args...: records start and end (epoch seconds)
	local name=$1
	shift
	local start end
	start=$(date +%s.%N)
	"$klm" "$@" >/dev/null 2>>"$work2/klm.log"
	end=$(date +%s.%N)
	echo "$name $start $end" >>"$work2/steps"
}
step check-prerequisites check-prerequisites --target-version 3.28.0 --verification-pod "$work2/pod.yaml" --verification-namespace kata-system "${common[@]}"
step helm-upgrade helm-upgrade --target-version 3.28.0 --chart "$work2/charts/kata-deploy-{version}.tgz" "${common[@]}"
step cordon cordon --nodes kata-1 "${common[@]}"
step restart-kata-pod restart-kata-pod --nodes kata-1 "${common[@]}"
step verify verify --nodes kata-1 --verification-pod "$work2/pod.yaml" --verification-namespace kata-system "${common[@]}"
step complete complete --nodes kata-1 --target-version 3.28.0 "${common[@]}"
python3 - "$work2/rig/audit.log" "$work2/steps" <<'PY'
import datetime, json, sys
def ts(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
events = [json.loads(line) for line in open(sys.argv[1])]
steps = [line.split() for line in open(sys.argv[2])]
user = "system:serviceaccount:kata-system:klm-kata-lifecycle-manager"
for name, start, end in steps:
    start, end = float(start), float(end)
    mine = [e for e in events if e["user"]["username"] == user and e["stage"] == "ResponseComplete"
            and start <= ts(e["requestReceivedTimestamp"]) <= end]
    # the world's last change the step waited for: kwok's pod status or the simulator's node write
    world = [ts(e["stageTimestamp"]) for e in events if e["user"]["username"] == "rig-admin"
             and e["stage"] == "ResponseComplete" and start <= ts(e["stageTimestamp"]) <= end]
    latency = f", {(end - max(world)) * 1000:.0f} ms from the last event it waited for to its return" if world and name in ("restart-kata-pod", "verify") else ""
    print(f"  {name:20s} {(end - start) * 1000:6.0f} ms, {len(mine):3d} API requests (klm and the helm it runs){latency}")
PY
exec {RIG2[1]}>&-
wait "$RIG2_PID" || true
rm -rf "$work2"
