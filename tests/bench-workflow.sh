#!/usr/bin/env bash
# Measures the WorkflowTemplate on the real controller (numbers for the
# notes; not a test): a run of NODES kwok nodes at batch-size BATCH (1), submitted
# with the argo CLI. Prints the wall time; per wave the time klm's
# containers ran versus the time Argo added (pod creation to the end of its
# step, from the pods' own timestamps), the step pods and their API requests
# (the rig's audit log: klm's, helm's, Argo's executor's; klm's by step, as
# its User-Agent names it, with each request's verb and resource); the workflow
# object's size and status node count at the end; and from those, how many
# waves one workflow carries under Argo's 1 MiB limit, raw and compressed as
# Argo's packer compresses the status nodes of a large workflow.
#   make bench-workflow                             # NODES=10
#   BATCH=50 NODES=50 make bench-workflow           # 50 nodes a wave
#   KLM_RIG_ARGO_REQUEUE=10s make bench-workflow    # Argo's default requeue
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
nodes=${NODES:-10}
work=$root/target/rig/bench-workflow
rm -rf "$work"
mkdir -p "$work"
source tests/lib/argo-rig.sh

argo_rig_start "$nodes" >/dev/null
trap argo_rig_stop EXIT
helm install kata-deploy "$work/charts/kata-deploy-3.27.0.tgz" --namespace kata-system --create-namespace --wait --timeout 300s >/dev/null
verification_pod "$work/verify-pod.yaml"
# Pods kept after success: their timestamps are the measurement.
klm_chart_install "$work/verify-pod.yaml" --set workflow.podGC=null >/dev/null

start=$(date +%s.%N)
name=$(argo submit --namespace kata-system --from workflowtemplate/klm-kata-lifecycle-manager \
	-p target-version=3.28.0 -p batch-size="${BATCH:-1}" --output name)
argo wait --namespace kata-system "$name" >/dev/null || true
end=$(date +%s.%N)
kubectl get workflow --namespace kata-system "$name" -o json >"$work/workflow.json"
kubectl get pods --namespace kata-system -l "workflows.argoproj.io/workflow=$name" -o json >"$work/pods.json"
echo "requeue: ${KLM_RIG_ARGO_REQUEUE:-1s}; nodes: $nodes; batch size: ${BATCH:-1}; wall: $(echo "$end - $start" | bc) s"
python3 - "$work/workflow.json" "$work/pods.json" "$work/rig/audit.log" <<'PY'
import base64, gzip, json, sys
from collections import Counter
from datetime import datetime

def t(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()

wf = json.load(open(sys.argv[1]))
pods = {p["metadata"]["name"]: p for p in json.load(open(sys.argv[2]))["items"]}
status = wf["status"]
def compact(value):
    return json.dumps(value, separators=(",", ":"))

def packed(nodes):
    # Argo's packer: status.nodes as JSON, gzip (default level), base64.
    return len(base64.b64encode(gzip.compress(compact(nodes).encode(), compresslevel=6)))

nodes = status.get("nodes", {})
in_wave = {k: v for k, v in nodes.items() if "wave(" in v["name"]}
outside = {k: v for k, v in nodes.items() if k not in in_wave}
waves_run = len({v["name"].split("wave(")[1].split(")")[0] for v in in_wave.values()})
rest = len(compact({**wf, "status": {**status, "nodes": None}}))
print(f"phase {status['phase']}; workflow object {len(compact(wf))} bytes; "
      f"status nodes {len(nodes)} ({len(outside)} outside the {waves_run} waves)")
if waves_run:
    limit = 1024 * 1024  # Argo's MAX_WORKFLOW_SIZE default
    raw_wave = (len(compact(nodes)) - len(compact(outside))) / waves_run
    packed_wave = (packed(nodes) - packed(outside)) / waves_run
    print(f"per wave: {len(in_wave) / waves_run:.0f} status nodes, {raw_wave:.0f} bytes, "
          f"{packed_wave:.0f} bytes compressed")
    print(f"capacity of one workflow (1 MiB): {(limit - rest - len(compact(outside))) / raw_wave:.0f} waves "
          f"uncompressed, {(limit - rest - packed(outside)) / packed_wave:.0f} waves once Argo "
          f"compresses the nodes (the rest of the object: {rest} bytes)")
# A wave, one after the other: its node's duration (the first pod's
# creation to the last one's end, and the controller's gaps between) and the
# period from one wave's start to the next's.
loop = sorted((n for n in nodes.values() if n["displayName"].startswith("wave(")),
              key=lambda n: n["startedAt"])
if loop:
    starts = [t(n["startedAt"]) for n in loop]
    durations = sorted(t(n["finishedAt"]) - t(n["startedAt"]) for n in loop)
    periods = sorted(b - a for a, b in zip(starts, starts[1:])) or [0.0]
    spread = lambda v: f"{v[0]:.0f}/{v[len(v) // 2]:.0f}/{v[-1]:.0f} s"
    print(f"a wave (min/median/max): {spread(durations)}, one wave's start to the next's {spread(periods)}; "
          f"before the first wave {starts[0] - t(status['startedAt']):.0f} s, after the last "
          f"{t(status['finishedAt']) - t(loop[-1]['finishedAt']):.0f} s")
# Each wave: its step pods, by the wave index in the status node names.
waves = {}
for node in status.get("nodes", {}).values():
    if node.get("type") != "Pod":
        continue
    name = node["name"]
    wave = None
    if "waves[" in name and "wave(" in name:
        wave = name.split("wave(")[1].split(")")[0].split(":")[1]
    pod = pods.get(node.get("id", "")) or next((p for n, p in pods.items() if n.endswith(node["id"].rsplit("-", 1)[-1]) and node["templateName"] in n), None)
    if pod is None:
        continue
    created = t(pod["metadata"]["creationTimestamp"])
    finished = t(node["finishedAt"])
    # klm's containers (a containerSet's phases run one after the other in
    # one pod): from the first one's start to the last one's end.
    ran = [c["state"]["terminated"] for c in pod["status"]["containerStatuses"]
           if c["name"] != "wait" and "terminated" in c["state"]]
    klm = max(t(c["finishedAt"]) for c in ran) - min(t(c["startedAt"]) for c in ran) if ran else 0.0
    w = waves.setdefault(wave or "outside waves", {"pods": 0, "klm": 0.0, "total": 0.0, "start": created, "end": finished})
    w["pods"] += 1
    w["klm"] += klm
    w["total"] += finished - created
    w["start"] = min(w["start"], created)
    w["end"] = max(w["end"], finished)
    w.setdefault("windows", []).append((created, finished))
# The API requests the step pods made (the apiserver's audit log: every
# request of the chart's ServiceAccount), by who made them, counted in the
# wave whose pods were running then.
requests = {key: Counter() for key in waves}
# Inside the waves: what each of klm's steps (named in its User-Agent),
# helm and Argo's executor asked, summed over the waves.
asked = {}
for line in open(sys.argv[3]):
    event = json.loads(line)
    # One request, one event: a watch is logged when its response starts
    # and again when it ends.
    if event["stage"] != "ResponseComplete":
        continue
    user = event["user"]["username"]
    if not user.startswith("system:serviceaccount:") or "kata-lifecycle-manager" not in user:
        continue
    at = t(event["requestReceivedTimestamp"])
    agent = event.get("userAgent", "")
    who = "helm" if agent.startswith("Helm") else "argoexec" if agent.startswith("argoexec") else "klm"
    for key, w in waves.items():
        if any(start <= at <= end for start, end in w["windows"]):
            requests[key][who] += 1
            if key.isdigit():
                step = agent.split("(")[1].split(")")[0] if who == "klm" and "(" in agent else who
                ref = event.get("objectRef", {})
                asked.setdefault(step, Counter())[f"{event['verb']} {ref.get('resource', event['requestURI'])}"] += 1
            break
print(f"{'wave':>14} {'pods':>4} {'wall s':>7} {'klm s':>6} {'argo s':>7} {'API requests: klm helm argoexec':>34}")
for key in sorted(waves, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0)):
    w = waves[key]
    wall = w["end"] - w["start"]
    r = requests[key]
    print(f"{key:>14} {w['pods']:>4} {wall:>7.1f} {w['klm']:>6.1f} {w['total'] - w['klm']:>7.1f} "
          f"{sum(r.values()):>14} = {r['klm']:>3} + {r['helm']:>3} + {r['argoexec']:>3}")
waves_measured = sum(1 for key in waves if key.isdigit())
if waves_measured:
    print(f"API requests a wave, by who asked (mean over {waves_measured} waves):")
    for step, counts in sorted(asked.items(), key=lambda kv: -sum(kv[1].values())):
        detail = ", ".join(f"{what} {n / waves_measured:.1f}" for what, n in counts.most_common())
        print(f"  {step:>18} {sum(counts.values()) / waves_measured:5.1f}: {detail}")
PY
