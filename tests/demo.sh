#!/usr/bin/env bash
# `make demo`: starts the test rig (a real control plane with three simulated
# Kata nodes), installs the fixture kata-deploy 3.27.0 and this project's
# chart, then upgrades kata-deploy to 3.28.0 node by node with klm, running
# each step as the chart's ServiceAccount and printing it as you would type it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bin=$root/target/rig/bin
work=$root/target/rig/demo
rm -rf "$work"
mkdir -p "$work"
PATH=$bin:$root/target/debug:$PATH

bold=$'\e[1m' dim=$'\e[2m' reset=$'\e[0m'
[[ -t 1 ]] || bold='' dim='' reset=''
say() { printf '\n%s# %s%s\n' "$bold" "$*" "$reset"; }
run() { printf '%s$ %s%s\n' "$dim" "$*" "$reset"; "$@"; }

say "Starting the rig: etcd, kube-apiserver, controller-manager, scheduler, kwok with 3 nodes"
coproc RIG { exec klm-rig up --nodes 3 --dir "$work/rig" --stdin-lifeline 2>"$work/rig.log"; }
if ! read -r ready <&"${RIG[0]}"; then
	echo "the rig did not start; see $work/rig.log" >&2
	tail -20 "$work/rig.log" >&2
	exit 1
fi
echo "$ready"
trap 'exec {RIG[1]}>&-; wait "$RIG_PID" 2>/dev/null || true' EXIT
export KUBECONFIG=$work/rig/admin.kubeconfig
charts=$work/charts
columns="custom-columns=NODE:.metadata.name,KATA:.metadata.labels.katacontainers\.io/kata-runtime,HOST VERSION:.metadata.annotations.rig\.klm\.test/installed-version"
klm-rig charts --dir "$charts" >/dev/null

say "An operator installed Kata with kata-deploy 3.27.0 (the fixture chart; kwok plays the nodes)"
run helm install kata-deploy "$charts/kata-deploy-3.27.0.tgz" --namespace kata-system --create-namespace --wait --timeout 120s
run kubectl get nodes -o "$columns"

say "Installing kata-lifecycle-manager's chart (Argo's CRDs first: it ships a WorkflowTemplate)"
run klm-rig argo-crds v3.7.18
cat >"$work/verify-pod.yaml" <<'POD'
apiVersion: v1
kind: Pod
metadata:
  name: ${TEST_POD}
  annotations:
    rig.klm.test/outcome: succeed   # the rig's simulated container exits 0
spec:
  runtimeClassName: kata-qemu
  restartPolicy: Never
  nodeSelector:
    kubernetes.io/hostname: ${NODE}
  tolerations:
    - key: node.kubernetes.io/unschedulable
      operator: Exists
      effect: NoSchedule
  containers:
    - name: verify
      image: quay.io/kata-containers/verify:latest
      command: ["sh", "-c", "uname -r"]
POD
run helm install klm "$root/chart/kata-lifecycle-manager" --namespace kata-system \
	--set argoNamespace=kata-system --set defaults.helmNamespace=kata-system --set defaults.verificationNamespace=kata-system \
	--set-file defaults.verificationPod="$work/verify-pod.yaml"

say "From here on klm runs as the chart's ServiceAccount, with exactly its RBAC"
server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
token=$(kubectl create token klm-kata-lifecycle-manager --namespace kata-system --duration 1h)
sa_kubeconfig=$work/klm-sa.kubeconfig
kubectl config --kubeconfig "$sa_kubeconfig" set-cluster rig --server "$server" --certificate-authority "$work/rig/pki/ca.crt" >/dev/null
kubectl config --kubeconfig "$sa_kubeconfig" set-credentials klm --token "$token" >/dev/null
kubectl config --kubeconfig "$sa_kubeconfig" set-context rig --cluster rig --user klm >/dev/null
kubectl config --kubeconfig "$sa_kubeconfig" use-context rig >/dev/null
admin_kubeconfig=$KUBECONFIG
export KUBECONFIG=$sa_kubeconfig KLM_HELM=$bin/helm KLM_RUN_ID=demo-run
release=(--helm-namespace kata-system)
chart=(--chart "$charts/kata-deploy-{version}.tgz")
verification=(--verification-pod "$work/verify-pod.yaml" --verification-namespace kata-system)

say "What would happen (changes nothing)"
run klm plan --target-version 3.28.0 --batch-size 1 "${release[@]}" "${verification[@]}"

say "The upgrade, step by step, as the WorkflowTemplate runs it"
run klm check-prerequisites --target-version 3.28.0 "${release[@]}" "${verification[@]}"
run klm helm-upgrade --target-version 3.28.0 "${release[@]}" "${chart[@]}"
run klm select-nodes --batch-size 1 "${release[@]}" --waves-file "$work/waves.json"
mapfile -t waves < <(python3 -c 'import json,sys; [print(w["nodeList"]) for w in json.load(open(sys.argv[1]))]' "$work/waves.json")
for nodes in "${waves[@]}"; do
	say "Wave: $nodes"
	run klm status --fail-if-run-failed "${release[@]}" >/dev/null
	run klm cordon --nodes "$nodes" "${release[@]}"
	run klm restart-kata-pod --nodes "$nodes" "${release[@]}"
	run klm verify --nodes "$nodes" "${release[@]}" "${verification[@]}"
	run klm complete --nodes "$nodes" --target-version 3.28.0 "${release[@]}" "${chart[@]}"
done

say "Finishing the run: the values klm added for its own mechanics are restored"
run klm complete --finish-run --target-version 3.28.0 "${release[@]}" "${chart[@]}"
run klm status "${release[@]}"

say "What the simulated hosts report (like kata-runtime --version on each node)"
KUBECONFIG=$admin_kubeconfig run kubectl get nodes -o "$columns,STATUS:.metadata.annotations.katacontainers\.io/kata-lifecycle-manager-status,VERIFIED:.metadata.annotations.katacontainers\.io/kata-current-version,UNSCHEDULABLE:.spec.unschedulable"
say "A second run, to 3.33.0, whose verification fails on kata-2: klm rolls kata-2 back and stops"
sed 's/    rig.klm.test\/outcome: succeed.*/&\n    node.rig.klm.test\/kata-2: fail  # the check fails on kata-2/' "$work/verify-pod.yaml" >"$work/verify-fails-on-kata-2.yaml"
failing=(--verification-pod "$work/verify-fails-on-kata-2.yaml" --verification-namespace kata-system)
export KLM_RUN_ID=demo-run-2
run klm check-prerequisites --target-version 3.33.0 "${release[@]}" "${failing[@]}"
run klm helm-upgrade --target-version 3.33.0 "${release[@]}" "${chart[@]}"
for nodes in kata-1 kata-2 kata-3; do
	say "Wave: $nodes"
	if ! run klm status --fail-if-run-failed "${release[@]}" >/dev/null; then
		echo "the run has failed: no further wave starts"
		break
	fi
	run klm cordon --nodes "$nodes" "${release[@]}"
	run klm restart-kata-pod --nodes "$nodes" "${release[@]}"
	if run klm verify --nodes "$nodes" "${release[@]}" "${failing[@]}"; then
		run klm complete --nodes "$nodes" --target-version 3.33.0 "${release[@]}" "${chart[@]}"
	else
		run klm rollback --nodes "$nodes" --reason "verification failed" "${release[@]}" "${chart[@]}" || true
	fi
done
run klm uncordon --all-held
run klm status "${release[@]}" || true
KUBECONFIG=$admin_kubeconfig run kubectl get nodes -o "$columns,STATUS:.metadata.annotations.katacontainers\.io/kata-lifecycle-manager-status,VERIFIED:.metadata.annotations.katacontainers\.io/kata-current-version,UNSCHEDULABLE:.spec.unschedulable"
say "Done. The rig stops now; \`make rig-up\` keeps one running for you."
