# Sourced by the scripts that run the chart on the rig the way a user does
# (tests/demo.sh, tests/bench-workflow.sh): start `klm-rig up --argo`, write
# the verification pods, install this project's chart with the image under test.
# Expects $root (the repository) and $work (a scratch directory) to be set.

bin=$root/target/rig/bin
PATH=$bin:$root/target/debug:$PATH

# argo_rig_start NODES: the rig with NODES kwok Kata nodes, a real kubelet
# node and Argo's controller, in $work/rig; it stops when this shell exits
# (its stdin lifeline closes). Prints the rig's ready line.
argo_rig_start() {
	coproc RIG { exec klm-rig up --argo --nodes "$1" --dir "$work/rig" --stdin-lifeline 2>"$work/rig.log"; }
	local ready
	if ! read -r ready <&"${RIG[0]}"; then
		echo "the rig did not start; see $work/rig.log" >&2
		tail -20 "$work/rig.log" >&2
		return 1
	fi
	echo "$ready"
	export KUBECONFIG=$work/rig/admin.kubeconfig
	# KLM_IMAGE, KLM_CHART, KLM_CHART_VERSION: the image index and the chart
	# the rig pushed to its loopback registry (the chart's values name the
	# image by digest).
	source "$work/rig/published.env"
	klm-rig charts --dir "$work/charts" >/dev/null
}

# argo_rig_stop: closes the lifeline and waits for the rig to go.
argo_rig_stop() {
	exec {RIG[1]}>&-
	wait "$RIG_PID" 2>/dev/null || true
}

# verification_pod FILE [BROKEN_VERSION BROKEN_NODES]: a verification pod
# the rig completes: it succeeds, or with a broken version it fails on
# BROKEN_NODES while their host runs that version (the rig decides from
# what the host runs, as a real check of the runtime would).
verification_pod() {
	local verdict='' outcome=succeed
	if [[ -n ${2:-} ]]; then
		outcome=pending
		verdict="  labels:
    rig.klm.test/verdict: by-version
"
	fi
	{
		echo "apiVersion: v1"
		echo "kind: Pod"
		echo "metadata:"
		echo "  name: \${TEST_POD}"
		printf '%s' "$verdict"
		echo "  annotations:"
		echo "    rig.klm.test/outcome: $outcome"
		if [[ -n ${2:-} ]]; then
			echo "    rig.klm.test/broken-version: \"$2\""
			echo "    rig.klm.test/broken-nodes: $3"
		fi
		cat <<'POD'
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
	} >"$1"
}

# klm_chart_install POD_FILE [helm args...]: this project's chart as release
# klm in kata-system, installed from the rig's loopback registry as users
# install it (oci://, its values naming the image under test by digest, which
# the real node's containerd pulls from there; the fixture kata-deploy charts
# are inside it), its steps on the real node and POD_FILE as the verification
# pod. Set CHART_RUNNER to a function that shows a command before running it
# to have it shown.
klm_chart_install() {
	local pod=$1
	shift
	"${CHART_RUNNER:-command}" helm install klm "$KLM_CHART" --version "$KLM_CHART_VERSION" --plain-http --namespace kata-system \
		--set defaults.helmNamespace=kata-system --set defaults.verificationNamespace=kata-system \
		--set-file defaults.verificationPod="$pod" \
		--set "kataDeploy.chart=/charts/kata-deploy-{version}.tgz" \
		--set-string 'nodeSelector.rig\.klm/real-node=true' \
		--set 'tolerations[0].key=rig.klm/real-node' --set 'tolerations[0].operator=Exists' --set 'tolerations[0].effect=NoSchedule' \
		"$@"
}
