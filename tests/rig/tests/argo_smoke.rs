//! Smoke test of the Argo tier: the real node is Ready, tainted and labelled
//! for step pods only; a Workflow submitted with the real `argo submit
//! --wait` runs steps in the image under test (static klm, no shell, user
//! 65532), passes an output parameter written to /tmp into a `withParam`
//! fan-out, and ends Succeeded; the step logs are read from the kubelet's pod
//! log directory; nothing of ours listens off loopback.
//!
//! One test only: the tier is one real node per machine.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::jiff::Timestamp;
use klm_rig::{NodeSpec, Rig};
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams};
use kube::{Api, ResourceExt};

const CASE: &str = "klm.test/case";
/// The fixture kata-deploy release the steps select nodes of.
const RELEASE: &str = "kata-deploy";
const FIXTURE_VERSION: &str = "3.31.0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_of_klm_steps_runs_on_the_real_node() -> Result<()> {
    let started = Instant::now();
    let Some(rig) = Rig::shared_with_argo_or_skip().await? else {
        return Ok(());
    };
    let tier = rig.argo()?;
    eprintln!(
        "tier up in {:.1}s (setup itself {:.1}s)",
        started.elapsed().as_secs_f64(),
        tier.setup_time().as_secs_f64()
    );
    for (phase, took) in tier.setup_phases() {
        eprintln!("  {:>6.1}s  {phase}", took.as_secs_f64());
    }
    let client = rig.client().await?;

    // The node: Ready, its own address, only for pods that ask for it.
    let node = Api::<Node>::all(client.clone()).get(tier.node()).await?;
    let status = node.status.clone().unwrap_or_default();
    ensure!(
        status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True"),
        "node {} is not Ready",
        tier.node()
    );
    let internal_ip = status
        .addresses
        .unwrap_or_default()
        .into_iter()
        .find(|a| a.type_ == "InternalIP")
        .map(|a| a.address)
        .context("no InternalIP")?;
    ensure!(
        !internal_ip.starts_with("127."),
        "node address {internal_ip} is loopback"
    );
    ensure!(node.labels().get(tier.node_label()).map(String::as_str) == Some("true"));
    let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
    ensure!(
        taints
            .iter()
            .any(|t| t.key == tier.node_label() && t.effect == "NoSchedule"),
        "node {} lacks its taint: {taints:?}",
        tier.node()
    );

    // Three kwok nodes running a release of the fixture kata-deploy for klm
    // to select, and read rights for the steps' ServiceAccount (argo/default).
    let ns = rig.namespace("argo-smoke").await?;
    let names: Vec<String> = (1..=3).map(|i| format!("{ns}-n{i}")).collect();
    let specs: Vec<NodeSpec> = names
        .iter()
        .map(|n| NodeSpec::named(n.clone()).label(CASE, &ns))
        .collect();
    rig.add_nodes(&specs).await?;
    install_fixture_release(rig, &ns)?;
    grant_reading(rig, tier.namespace()).await?;

    let workflow = workflow_yaml(&tier.klm_image(), &ns);
    let file = rig.dir().join(format!("{ns}-workflow.yaml"));
    std::fs::write(&file, workflow)?;
    let submitted = Instant::now();
    let output = tier
        .argo()
        .args(["-n", tier.namespace(), "submit", "--wait", "-o", "name"])
        .arg(&file)
        .output()
        .context("running argo submit")?;
    let elapsed = submitted.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        let account = tier
            .argo()
            .args(["-n", tier.namespace(), "get", stdout.trim()])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let mut logs = String::new();
        let pods = Api::<Pod>::namespaced(client.clone(), tier.namespace())
            .list(
                &ListParams::default()
                    .labels(&format!("workflows.argoproj.io/workflow={}", stdout.trim())),
            )
            .await?;
        for pod in pods {
            let log = tier.step_log(tier.namespace(), &pod.name_any());
            logs.push_str(&format!(
                "--- {}:\n{}\n",
                pod.name_any(),
                log.unwrap_or_else(|e| e.to_string())
            ));
        }
        bail!(
            "argo submit --wait failed: {stdout}{}\n{account}\n{logs}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let name = stdout
        .lines()
        .next()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .context("argo submit printed no name")?
        .to_string();

    // containerd pulled the image under test from the loopback registry by
    // digest (it was never imported): its reference is the digested one.
    let socket = tier.node_dir().join("containerd/containerd.sock");
    let images = std::process::Command::new("ctr")
        .arg(format!("--address={}", socket.display()))
        .args(["-n", "k8s.io", "images", "ls", "-q"])
        .output()
        .context("running ctr images ls")?;
    let images = String::from_utf8_lossy(&images.stdout);
    assert!(
        tier.klm_image().starts_with("127.0.0.1:") && tier.klm_image().contains("@sha256:"),
        "{}",
        tier.klm_image()
    );
    assert!(
        images.lines().any(|l| l == tier.klm_image()),
        "containerd has no {} (pulled from the registry): {images}",
        tier.klm_image()
    );

    // The workflow as the controller recorded it.
    let workflows: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        tier.namespace(),
        &kube::api::ApiResource {
            group: "argoproj.io".into(),
            version: "v1alpha1".into(),
            api_version: "argoproj.io/v1alpha1".into(),
            kind: "Workflow".into(),
            plural: "workflows".into(),
        },
    );
    let wf = workflows.get(&name).await?;
    let phase = wf.data["status"]["phase"].as_str().unwrap_or_default();
    if phase != "Succeeded" {
        bail!(
            "workflow {name} ended {phase}: {}",
            wf.data["status"]["message"]
        );
    }
    let wf_nodes = wf.data["status"]["nodes"]
        .as_object()
        .context("no status.nodes")?;
    let waves = wf_nodes
        .values()
        .find(|n| n["displayName"] == "select")
        .and_then(|n| n["outputs"]["parameters"][0]["value"].as_str())
        .context("no output parameter of step select")?;
    let waves: serde_json::Value = serde_json::from_str(waves)?;
    ensure!(waves.as_array().map(Vec::len) == Some(3), "waves: {waves}");

    // Every step pod ran on the real node and succeeded; its logs are in the
    // kubelet's pod log directory.
    let pods: Vec<Pod> = Api::<Pod>::namespaced(client.clone(), tier.namespace())
        .list(&ListParams::default().labels(&format!("workflows.argoproj.io/workflow={name}")))
        .await?
        .items;
    ensure!(
        pods.len() == 5,
        "expected 5 step pods, found {}",
        pods.len()
    );
    let mut by_step: BTreeMap<String, String> = BTreeMap::new();
    let mut overheads = Vec::new();
    for pod in &pods {
        let spec = pod.spec.as_ref().context("pod spec")?;
        ensure!(spec.node_name.as_deref() == Some(tier.node()));
        ensure!(spec.host_network == Some(true));
        let status = pod.status.as_ref().context("pod status")?;
        ensure!(
            status.phase.as_deref() == Some("Succeeded"),
            "pod {} is {:?}",
            pod.name_any(),
            status.phase
        );
        let step = pod
            .annotations()
            .get("workflows.argoproj.io/node-name")
            .cloned()
            .unwrap_or_default();
        let log = tier.step_log(tier.namespace(), &pod.name_any())?;
        by_step.insert(step, log);
        overheads.push(pod_overhead(pod));
    }
    let version = by_step
        .iter()
        .find(|(step, _)| step.ends_with(".version"))
        .map(|(_, log)| log.clone())
        .context("no version step")?;
    ensure!(
        version.starts_with("klm "),
        "klm --version printed {version:?}"
    );
    for node in &names {
        ensure!(
            by_step
                .iter()
                .any(|(step, log)| step.contains(".fan-out(") && log.contains(node.as_str())),
            "no fan-out step logged node {node}: {by_step:#?}"
        );
    }
    eprintln!(
        "workflow {name}: Succeeded in {:.1}s with {} pods; per pod (created -> main started, main run, main finished -> pod done): {overheads:?}",
        elapsed.as_secs_f64(),
        pods.len()
    );

    // No listener of ours faces another interface.
    let ours = klm_rig::control_plane::workspace_root()
        .join("target/rig")
        .display()
        .to_string();
    let listeners = std::process::Command::new("ss")
        .args(["-ltnpH"])
        .output()
        .context("running ss")?;
    for line in String::from_utf8_lossy(&listeners.stdout).lines() {
        let local = line.split_whitespace().nth(3).unwrap_or_default();
        let loopback = local.starts_with("127.") || local.starts_with("[::1]");
        let pids = line
            .split("pid=")
            .skip(1)
            .filter_map(|p| p.split(',').next()?.parse::<u32>().ok());
        for pid in pids {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                .unwrap_or_default();
            ensure!(
                loopback || !cmdline.contains(&ours),
                "a process of the rig listens on {local}: {cmdline}"
            );
        }
    }
    Ok(())
}

/// Seconds from pod creation to the main container's start, the main
/// container's own run, and from its end to the pod's last container end.
fn pod_overhead(pod: &Pod) -> (f64, f64, f64) {
    let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default();
    let terminated = |name: &str| {
        statuses
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.state.as_ref()?.terminated.clone())
    };
    let main = terminated("main");
    let last_end = statuses
        .iter()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.clone())
        .map(|t| t.0)
        .max();
    let start = main
        .as_ref()
        .and_then(|t| t.started_at.clone())
        .map(|t| t.0);
    let end = main
        .as_ref()
        .and_then(|t| t.finished_at.clone())
        .map(|t| t.0);
    let secs = |a: Option<Timestamp>, b: Option<Timestamp>| match (a, b) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => f64::NAN,
    };
    (secs(created, start), secs(start, end), secs(end, last_end))
}

/// `helm install` of the fixture kata-deploy (as packaged into the image
/// under test) on the case's nodes, waiting for its pods: `klm select-nodes`
/// selects only nodes that run a release's kata-deploy.
fn install_fixture_release(rig: &Rig, case: &str) -> Result<()> {
    let package = klm_rig::control_plane::workspace_root().join(format!(
        "target/rig/charts/kata-deploy-{FIXTURE_VERSION}.tgz"
    ));
    let output = std::process::Command::new(rig.helm())
        .env("KUBECONFIG", rig.kubeconfig())
        .arg("install")
        .arg(RELEASE)
        .arg(&package)
        .args(["--namespace", case, "--wait", "--timeout", "120s"])
        .args(["--set", &format!("nodeSelector.klm\\.test/case={case}")])
        .args(["--set", &format!("env.multiInstallSuffix={case}")])
        .output()
        .context("running helm install")?;
    ensure!(
        output.status.success(),
        "helm install of the fixture kata-deploy failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Read rights on everything for the steps' ServiceAccount: what the steps
/// may do is not this test's subject (the workflow tier runs the chart's own
/// ServiceAccount).
async fn grant_reading(rig: &Rig, namespace: &str) -> Result<()> {
    let client = rig.client().await?;
    let params = PatchParams::apply("argo-smoke").force();
    let name = "argo-smoke-reader";
    let role = ClusterRole {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["*".into()]),
            resources: Some(vec!["*".into()]),
            verbs: vec!["get".into(), "list".into(), "watch".into()],
            ..PolicyRule::default()
        }]),
        ..ClusterRole::default()
    };
    Api::<ClusterRole>::all(client.clone())
        .patch(name, &params, &Patch::Apply(&role))
        .await?;
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: name.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "default".into(),
            namespace: Some(namespace.into()),
            ..Subject::default()
        }]),
    };
    Api::<ClusterRoleBinding>::all(client)
        .patch(name, &params, &Patch::Apply(&binding))
        .await?;
    Ok(())
}

/// `klm --version` beside `klm select-nodes` writing the waves to /tmp (an
/// output parameter), then one `klm select-nodes` per wave (`withParam`),
/// all of the case's release.
fn workflow_yaml(image: &str, case: &str) -> String {
    format!(
        r#"apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  generateName: smoke-
spec:
  entrypoint: main
  templates:
    - name: main
      steps:
        - - name: version
            template: version
          - name: select
            template: select
        - - name: fan-out
            template: one-wave
            arguments:
              parameters:
                - name: nodes
                  value: "{{{{item.nodeList}}}}"
            withParam: "{{{{steps.select.outputs.parameters.waves}}}}"
    - name: version
      container:
        image: {image}
        command: [/usr/local/bin/klm]
        args: [--version]
    - name: select
      container:
        image: {image}
        command: [/usr/local/bin/klm]
        args: [select-nodes, --helm-namespace={case}, --helm-release={RELEASE}, "--node-selector={CASE}={case}", --batch-size=1, --waves-file=/tmp/waves.json]
      outputs:
        parameters:
          - name: waves
            valueFrom:
              path: /tmp/waves.json
    - name: one-wave
      inputs:
        parameters:
          - name: nodes
      container:
        image: {image}
        command: [/usr/local/bin/klm]
        args: [select-nodes, --helm-namespace={case}, --helm-release={RELEASE}, "--node-selector=kubernetes.io/hostname={{{{inputs.parameters.nodes}}}}", -o, json]
"#
    )
}
