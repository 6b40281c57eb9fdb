//! daemonset mode on the real chart: the versions without health probes
//! (3.27–3.30), the node-feature-discovery DaemonSet listed before
//! kata-deploy's, 4.1's RuntimeClasses that select a mark only the 4.1
//! binary writes, and a version whose pods never turn Ready.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use crate::real::{
    self, Install, NEVER_READY, STATUS, host_versions, klm_upgrade, passing_pod, refused_or_proven,
    statuses,
};
use crate::support::{Case, annotation, unschedulable};
use crate::{real_charts, require_versions};

#[tokio::test]
async fn from_3_27_to_3_30_is_refused_or_waits_until_installed() {
    let charts = real_charts!();
    require_versions!(charts, "3.27.0", "3.30.0");
    let case = real::case(charts, "ds2730", 2, "3.27.0", Install::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let before = case.snapshot().await;
    let klm = klm_upgrade(&case, "run-2730", "3.30.0", &passing_pod(dir.path()), &[]).await;
    refused_or_proven(&case, &klm, &["3.27.0", "3.30.0"], "3.30.0", &before).await;
}

#[tokio::test]
async fn from_3_30_to_3_32_is_refused_or_waits_until_installed() {
    let charts = real_charts!();
    require_versions!(charts, "3.30.0", "3.32.0");
    let case = real::case(charts, "ds3032", 2, "3.30.0", Install::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let before = case.snapshot().await;
    let klm = klm_upgrade(&case, "run-3032", "3.32.0", &passing_pod(dir.path()), &[]).await;
    refused_or_proven(&case, &klm, &["3.30.0"], "3.32.0", &before).await;
}

/// node-feature-discovery's worker pods on the case's nodes, by UID (its
/// DaemonSet runs on every node of the rig).
async fn nfd_pods(case: &Case) -> Vec<String> {
    let mut uids: Vec<String> = Api::<Pod>::namespaced(case.admin.clone(), &case.namespace)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|o| o.name.ends_with("node-feature-discovery-worker"))
        })
        .filter(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_some_and(|n| case.nodes.contains(n))
        })
        .filter_map(|p| p.uid())
        .collect();
    uids.sort();
    uids
}

#[tokio::test]
async fn with_node_feature_discovery_klm_drives_kata_deploys_daemonset() {
    let charts = real_charts!();
    require_versions!(charts, "3.30.0", "3.32.0");
    let install = Install {
        nfd: true,
        ..Install::default()
    };
    let case = real::case(charts, "dsnfd", 2, "3.30.0", install).await;
    let nfd_before = nfd_pods(&case).await;
    assert_eq!(
        nfd_before.len(),
        case.nodes.len(),
        "NFD's worker runs on every node"
    );

    // What klm reports as kata-deploy is kata-deploy, not NFD (v0.19.0).
    let status = case.klm(&["status", "-o", "json"]).await.ok();
    assert!(
        !status.stdout.contains("v0.19.0"),
        "klm status shows node-feature-discovery as kata-deploy:\n{}",
        status.stdout
    );
    assert!(status.stdout.contains("3.30.0"), "{}", status.stdout);

    let dir = tempfile::tempdir().unwrap();
    let before = case.snapshot().await;
    let mut hardware_before = std::collections::BTreeMap::new();
    for node in &case.nodes {
        hardware_before.insert(node.clone(), case.get_node(node).await.labels().clone());
    }
    let klm = klm_upgrade(&case, "run-nfd", "3.32.0", &passing_pod(dir.path()), &[]).await;
    refused_or_proven(&case, &klm, &["3.30.0"], "3.32.0", &before).await;
    assert_eq!(
        nfd_pods(&case).await,
        nfd_before,
        "node-feature-discovery's pods are never restarted"
    );
    // The TEE RuntimeClasses select node-feature-discovery's hardware
    // labels: klm never writes them (a node is SNP- or TDX-capable or not).
    for node in &case.nodes {
        let hardware = |labels: &std::collections::BTreeMap<String, String>| -> Vec<String> {
            labels
                .keys()
                .filter(|k| {
                    k.contains("feature.node.kubernetes.io") || k.starts_with("nvidia.com/")
                })
                .cloned()
                .collect()
        };
        assert_eq!(
            hardware(case.get_node(node).await.labels()),
            hardware(&hardware_before[node]),
            "{node}'s hardware labels changed"
        );
    }
    if klm.code == 0 {
        let pods = case.kata_pods().await;
        for node in &case.nodes {
            let image = pods[node].spec.as_ref().unwrap().containers[0]
                .image
                .clone()
                .unwrap_or_default();
            assert!(image.ends_with(":3.32.0"), "{node} runs {image}");
        }
        // The user's updateStrategy is back, on kata-deploy's DaemonSet.
        let daemonset = Api::<DaemonSet>::namespaced(case.admin.clone(), &case.namespace)
            .get(&format!("kata-deploy-{}", case.namespace))
            .await
            .unwrap();
        assert_eq!(
            daemonset
                .spec
                .unwrap()
                .update_strategy
                .unwrap()
                .type_
                .as_deref(),
            Some("RollingUpdate")
        );
    }
}

/// A pod of the release's `kata-qemu` RuntimeClass pinned (by
/// nodeSelector, through the scheduler) to `node`; whether it is scheduled
/// within 30 s.
async fn kata_pod_schedules(case: &Case, name: &str, node: &str) -> bool {
    let pods: Api<Pod> = Api::namespaced(case.admin.clone(), &case.namespace);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": {"rig.klm.test/outcome": "hold"}},
        "spec": {
            "runtimeClassName": format!("kata-qemu-{}", case.namespace),
            "nodeSelector": {"kubernetes.io/hostname": node},
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create a Kata pod");
    tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(pods, name, |p: Option<&Pod>| {
            p.and_then(|p| p.spec.as_ref()?.node_name.as_ref())
                .is_some()
        }),
    )
    .await
    .is_ok()
}

/// The workflow's steps for one node's wave.
async fn wave(case: &Case, run: &str, target: &str, node: &str, pod: &str) {
    case.klm(&["cordon", "--nodes", node, "--run-id", run])
        .await
        .ok();
    case.klm(&[
        "restart-kata-pod",
        "--nodes",
        node,
        "--run-id",
        run,
        "--timeout",
        "90s",
    ])
    .await
    .ok();
    case.klm(&[
        "verify",
        "--nodes",
        node,
        "--run-id",
        run,
        "--verification-pod",
        pod,
        "--verification-namespace",
        &case.namespace,
        "--verification-timeout",
        "60s",
    ])
    .await
    .ok();
    case.klm(&[
        "complete",
        "--nodes",
        node,
        "--target-version",
        target,
        "--run-id",
        run,
    ])
    .await
    .ok();
}

#[tokio::test]
async fn from_4_0_to_4_1_nodes_not_yet_upgraded_keep_taking_kata_pods() {
    let charts = real_charts!();
    require_versions!(charts, "4.0.0", "4.1.0");
    let case = real::case(charts, "ds4041", 2, "4.0.0", Install::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let pod = passing_pod(dir.path()).display().to_string();
    let run = "wf-4041";
    let checked = case
        .klm(&[
            "check-prerequisites",
            "--target-version",
            "4.1.0",
            "--run-id",
            run,
            "--verification-pod",
            &pod,
            "--verification-namespace",
            &case.namespace,
        ])
        .await
        .ok();
    case.klm(&["helm-upgrade", "--target-version", "4.1.0", "--run-id", run])
        .await
        .ok();
    assert_eq!(case.release_state().await.1, "4.1.0");
    let (first, second) = (case.node(0).to_string(), case.node(1).to_string());
    wave(&case, run, "4.1.0", &first, &pod).await;
    assert_eq!(
        host_versions(&case).await,
        [Some("4.1.0".into()), Some("4.0.0".into())]
    );
    let mark = format!("kata-deploy.katacontainers.io/{}", case.namespace);
    assert_eq!(
        case.get_node(&first)
            .await
            .labels()
            .get(&mark)
            .map(String::as_str),
        Some("true"),
        "the 4.1 binary marks its node"
    );

    // Mid-run: the second node still runs 4.0, whose binary writes no mark,
    // while the release's RuntimeClasses (4.1) select it. Either the run
    // keeps the node schedulable for Kata, or it said so before it began.
    let schedulable = kata_pod_schedules(&case, "kata-midrun", &second).await;
    let warned = format!("{}{}", checked.stdout, checked.stderr).contains(&mark)
        || format!("{}{}", checked.stdout, checked.stderr)
            .contains("kata-deploy.katacontainers.io/");
    assert!(
        schedulable || warned,
        "a Kata pod for {second} (still on 4.0) stays Pending mid-run, and check-prerequisites did not say it would:\n{}\n{}",
        checked.stdout,
        checked.stderr
    );

    wave(&case, run, "4.1.0", &second, &pod).await;
    case.klm(&[
        "complete",
        "--finish-run",
        "--target-version",
        "4.1.0",
        "--run-id",
        run,
    ])
    .await
    .ok();
    assert_eq!(
        host_versions(&case).await,
        [Some("4.1.0".into()), Some("4.1.0".into())]
    );
    assert_eq!(
        statuses(&case).await,
        [Some("completed".into()), Some("completed".into())]
    );
    for node in &case.nodes {
        let n = case.get_node(node).await;
        assert_eq!(n.labels().get(&mark).map(String::as_str), Some("true"));
        assert!(!unschedulable(&n), "{node}");
    }
    assert!(
        kata_pod_schedules(&case, "kata-after", &second).await,
        "after the run, Kata pods schedule on every node"
    );
    assert_eq!(case.run_record().await.unwrap()["state"], "completed");
}

#[tokio::test]
async fn a_version_whose_pods_never_turn_ready_is_rolled_back() {
    let charts = real_charts!();
    require_versions!(charts, "4.0.0", NEVER_READY);
    let case = real::case(charts, "dsback", 2, "4.0.0", Install::default()).await;
    let untouched: BTreeMap<String, String> = case
        .kata_pods()
        .await
        .into_iter()
        .map(|(node, pod)| (node, pod.uid().unwrap()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let klm = klm_upgrade(
        &case,
        "run-back",
        NEVER_READY,
        &passing_pod(dir.path()),
        &["--restart-timeout", "30s"],
    )
    .await;
    assert_eq!(
        klm.code, 1,
        "the run fails:\n{}\n{}",
        klm.stdout, klm.stderr
    );

    let (first, second) = (case.node(0), case.node(1));
    let n = case.get_node(first).await;
    assert_eq!(annotation(&n, STATUS).as_deref(), Some("rolled-back"));
    assert!(!unschedulable(&n));
    let pods = case.kata_pods().await;
    let back = &pods[first];
    assert!(
        back.spec.as_ref().unwrap().containers[0]
            .image
            .as_deref()
            .is_some_and(|i| i.ends_with(":4.0.0")),
        "{first} runs 4.0.0 again"
    );
    assert!(
        back.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
        "and it is Ready"
    );
    assert_eq!(
        host_versions(&case).await,
        [Some("4.0.0".into()), Some("4.0.0".into())]
    );
    let n = case.get_node(second).await;
    assert_eq!(annotation(&n, STATUS), None, "the second node is untouched");
    assert_eq!(pods[second].uid(), untouched.get(second).cloned());
    assert_eq!(case.release_state().await.1, "4.0.0");
    let record: Value = case.run_record().await.unwrap();
    assert_eq!(record["state"], "failed");
}
