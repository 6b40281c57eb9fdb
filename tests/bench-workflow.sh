#!/usr/bin/env bash
# Measures the WorkflowTemplate on the real controller (numbers for the
# notes; not a test): a run of NODES kwok nodes at batch-size 1, submitted
# with the argo CLI. Prints the wall time; per wave the time klm's
# containers ran versus the time Argo added (pod creation to the end of its
# step, from the pods' own timestamps) and the step pods; and the workflow
# object's size and status node count at the end.
#   NODES=10 bash tests/bench-workflow.sh
#   KLM_RIG_ARGO_REQUEUE=10s bash tests/bench-workflow.sh   # Argo's default requeue
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
nodes=${NODES:-10}
bin=$root/target/rig/bin
work=$root/target/rig/bench-workflow
rm -rf "$work"
mkdir -p "$work"
PATH=$bin:$root/target/debug:$PATH

coproc RIG { exec klm-rig up --argo --nodes "$nodes" --dir "$work/rig" --stdin-lifeline 2>"$work/rig.log"; }
read -r _ <&"${RIG[0]}" || { tail -20 "$work/rig.log" >&2; exit 1; }
trap 'exec {RIG[1]}>&-; wait "$RIG_PID" 2>/dev/null || true' EXIT
export KUBECONFIG=$work/rig/admin.kubeconfig
klm-rig charts --dir "$work/charts" >/dev/null
helm install kata-deploy "$work/charts/kata-deploy-3.27.0.tgz" --namespace kata-system --create-namespace --wait --timeout 300s >/dev/null
cat >"$work/verify-pod.yaml" <<'POD'
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
    - key: node.kubernetes.io/unschedulable
      operator: Exists
      effect: NoSchedule
  containers:
    - name: verify
      image: registry.invalid/verify:1
POD
helm install klm "$root/chart/kata-lifecycle-manager" --namespace kata-system \
	--set defaults.helmNamespace=kata-system --set defaults.verificationNamespace=kata-system \
	--set-file defaults.verificationPod="$work/verify-pod.yaml" \
	--set image.repository=localhost/kata-lifecycle-manager --set image.tag=test --set image.pullPolicy=Never \
	--set "kataDeploy.chart=/charts/kata-deploy-{version}.tgz" \
	--set-string 'nodeSelector.rig\.klm/real-node=true' \
	--set 'tolerations[0].key=rig.klm/real-node' --set 'tolerations[0].operator=Exists' --set 'tolerations[0].effect=NoSchedule' >/dev/null

start=$(date +%s.%N)
name=$(argo submit --namespace kata-system --from workflowtemplate/klm-kata-lifecycle-manager \
	-p target-version=3.28.0 -p batch-size=1 --output name)
argo wait --namespace kata-system "$name" >/dev/null || true
end=$(date +%s.%N)
kubectl get workflow --namespace kata-system "$name" -o json >"$work/workflow.json"
kubectl get pods --namespace kata-system -l "workflows.argoproj.io/workflow=$name" -o json >"$work/pods.json"
echo "requeue: ${KLM_RIG_ARGO_REQUEUE:-1s}; nodes: $nodes; wall: $(echo "$end - $start" | bc) s"
python3 - "$work/workflow.json" "$work/pods.json" <<'PY'
import json, sys
from datetime import datetime

def t(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()

wf = json.load(open(sys.argv[1]))
pods = {p["metadata"]["name"]: p for p in json.load(open(sys.argv[2]))["items"]}
status = wf["status"]
print(f"phase {status['phase']}; workflow object {len(json.dumps(wf))} bytes; "
      f"status nodes {len(status.get('nodes', {}))}")
# Each wave: its step pods, by the wave index in the status node names.
waves = {}
for node in status.get("nodes", {}).values():
    if node.get("type") != "Pod":
        continue
    name = node["name"]
    wave = None
    if ".waves[" in name and "wave(" in name:
        wave = name.split("wave(")[1].split(")")[0].split(":")[1]
    pod = pods.get(node.get("id", "")) or next((p for n, p in pods.items() if n.endswith(node["id"].rsplit("-", 1)[-1]) and node["templateName"] in n), None)
    if pod is None:
        continue
    created = t(pod["metadata"]["creationTimestamp"])
    finished = t(node["finishedAt"])
    main = next(c for c in pod["status"]["containerStatuses"] if c["name"] == "main")
    term = main["state"].get("terminated", {})
    klm = t(term["finishedAt"]) - t(term["startedAt"]) if term else 0.0
    w = waves.setdefault(wave or "outside waves", {"pods": 0, "klm": 0.0, "total": 0.0, "start": created, "end": finished})
    w["pods"] += 1
    w["klm"] += klm
    w["total"] += finished - created
    w["start"] = min(w["start"], created)
    w["end"] = max(w["end"], finished)
print(f"{'wave':>14} {'pods':>4} {'wall s':>7} {'klm s':>6} {'argo s':>7}")
for key in sorted(waves, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0)):
    w = waves[key]
    wall = w["end"] - w["start"]
    print(f"{key:>14} {w['pods']:>4} {wall:>7.1f} {w['klm']:>6.1f} {w['total'] - w['klm']:>7.1f}")
PY
