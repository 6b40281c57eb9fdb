#!/usr/bin/env bash
# `make demo`: the way users run kata-lifecycle-manager, on the test rig.
# Starts a real control plane with three simulated (kwok) Kata nodes, a real
# kubelet node and a real Argo workflow-controller; installs the fixture
# kata-deploy 3.27.0 and this project's chart with helm; then upgrades with
# `argo submit`, showing the nodes' progress live, and submits a second
# upgrade whose verification fails on one node, which is rolled back.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$root/target/rig/demo
rm -rf "$work"
mkdir -p "$work"
source tests/lib/argo-rig.sh

bold=$'\e[1m' dim=$'\e[2m' reset=$'\e[0m'
[[ -t 1 ]] || bold='' dim='' reset=''
exec 3>&1 # commands are shown on the terminal even when their output is captured
say() { printf '\n%s# %s%s\n' "$bold" "$*" "$reset"; }
run() { printf '%s$ %s%s\n' "$dim" "$*" "$reset" >&3; "$@"; }

say "Starting the rig: control plane, 3 kwok Kata nodes, a real kubelet node and Argo's workflow-controller"
argo_rig_start 3
watcher=
cleanup() {
	[[ -n $watcher ]] && kill "$watcher" 2>/dev/null
	argo_rig_stop
}
trap cleanup EXIT
charts=$work/charts
columns="custom-columns=NODE:.metadata.name,HOST VERSION:.metadata.annotations.rig\.klm\.test/installed-version"
columns+=",STATUS:.metadata.annotations.katacontainers\.io/kata-lifecycle-manager-status"
columns+=",VERIFIED:.metadata.annotations.katacontainers\.io/kata-current-version,UNSCHEDULABLE:.spec.unschedulable"
kata_nodes=(-l katacontainers.io/kata-runtime=true)

say "An operator installed Kata with kata-deploy 3.27.0 (the fixture chart; kwok plays the nodes)"
run helm install kata-deploy "$charts/kata-deploy-3.27.0.tgz" --namespace kata-system --create-namespace --wait --timeout 120s
run kubectl get nodes -o wide

verification_pod "$work/verify-pod.yaml"
say "Installing kata-lifecycle-manager's chart: its WorkflowTemplate, ServiceAccount and RBAC"
echo "(from the rig's loopback registry, where the image under test (built here) and the chart were"
echo " pushed; the real node's containerd pulls the image by digest: $KLM_IMAGE;"
echo " the fixture kata-deploy charts are inside it, and the steps run on the real node)"
CHART_RUNNER=run klm_chart_install "$work/verify-pod.yaml"
run kubectl get workflowtemplates --namespace kata-system

# Progress, live: one line per change of a shown column while a workflow
# runs (a node changes often in ways the table does not show: those rows
# would repeat the row before them).
watch_nodes() {
	kubectl get nodes "${kata_nodes[@]}" --watch-only -o "$columns" --no-headers \
		> >(awk '$0 != last[$1] { print; fflush(); last[$1] = $0 }') &
	watcher=$!
}
stop_watching() { kill "$watcher" 2>/dev/null; wait "$watcher" 2>/dev/null || true; watcher=; }

say "The upgrade to 3.28.0, node by node, as a user submits it"
run klm plan --target-version 3.28.0 --helm-namespace kata-system --verification-pod "$work/verify-pod.yaml" --verification-namespace kata-system 2>/dev/null || true
watch_nodes
name=$(run argo submit --namespace kata-system --from workflowtemplate/klm-kata-lifecycle-manager \
	-p target-version=3.28.0 --output name)
run argo wait --namespace kata-system "$name" >/dev/null || true
stop_watching
run argo get --namespace kata-system "$name" --no-color
run kubectl get nodes "${kata_nodes[@]}" -o "$columns"

say "A second upgrade, to 3.33.0, whose verification fails on kata-2: kata-2 is rolled back and the run stops"
# The rig decides from what the host runs: 3.33.0 is broken on kata-2.
verification_pod "$work/verify-fails-on-kata-2.yaml" 3.33.0 kata-2
watch_nodes
name=$(run argo submit --namespace kata-system --from workflowtemplate/klm-kata-lifecycle-manager \
	-p target-version=3.33.0 -p verification-pod="$(base64 -w0 "$work/verify-fails-on-kata-2.yaml")" --output name)
run argo wait --namespace kata-system "$name" >/dev/null || true
stop_watching
run argo get --namespace kata-system "$name" --no-color
run kubectl get nodes "${kata_nodes[@]}" -o "$columns"
say "Done: kata-1 runs 3.33.0, kata-2 is back on 3.28.0 and serves again, kata-3 was never touched. The rig stops now."
