//! End-to-end upgrades on the rig, driven with the WorkflowTemplate's own
//! steps in the order deploy-version calls them (see `run_end.rs`), as the
//! chart's ServiceAccount; by hand where a person's steps are the subject.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::Taint;
use klm_rig::verification_pod::VerificationPod;
use serde_json::{Value, json};

use crate::run_end::{exit_handler, pod_uids, start, submit, wave};
use crate::support::{Case, CaseSpec, annotation, host_version, unschedulable};
use crate::workflow::Workflow;

const STATUS: &str = "katacontainers.io/kata-lifecycle-manager-status";
const VERIFIED: &str = "katacontainers.io/kata-current-version";

/// A verification pod the rig completes: it succeeds, except on the nodes
/// named in `fail_on`, where it exits 1.
pub fn verification_pod(dir: &std::path::Path, fail_on: &[&str]) -> std::path::PathBuf {
    VerificationPod::succeeding()
        .failing_on(fail_on)
        .tolerating_everything()
        .write(dir, &format!("verify-{}", fail_on.join("-")))
}

/// A verification pod that fails on `nodes` while they run 3.28.0 (a broken
/// new version) and passes elsewhere, so the rollback's own verification,
/// which the workflow runs, passes.
fn broken_at_target(dir: &Path, nodes: &[&str]) -> std::path::PathBuf {
    VerificationPod::succeeding()
        .broken_at("3.28.0", nodes)
        .tolerating_everything()
        .write(dir, &format!("broken-{}", nodes.join("-")))
}

/// Runs a whole daemonset-mode upgrade of the case's nodes to 3.28.0 with
/// the WorkflowTemplate's own steps, one node per wave, as deploy-version
/// runs them until a wave fails; whether each wave completed.
async fn upgrade_all(case: &Case, run: &str, pod: &Path, tmp: &Path) -> Vec<bool> {
    let wf = Workflow::render(case, pod).await;
    let submission = submit(case, &wf, run, &[], tmp);
    let mut outcomes = Vec::new();
    for index in start(&submission).await {
        let completed = wave(&submission, &index.to_string()).await.code == 0;
        outcomes.push(completed);
        if !completed {
            break;
        }
    }
    outcomes
}

async fn host_versions(case: &Case) -> BTreeMap<String, Option<String>> {
    let mut versions = BTreeMap::new();
    for node in &case.nodes {
        versions.insert(node.clone(), host_version(&case.get_node(node).await));
    }
    versions
}

#[tokio::test]
async fn daemonset_upgrade_of_three_nodes_in_workflow_order() {
    let case = Case::start(CaseSpec::new("upgrade", 3, "3.27.0"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pod = verification_pod(dir.path(), &[]);
    let wf = Workflow::render(&case, &pod).await;
    let run = submit(&case, &wf, "wf-upgrade", &[], dir.path());

    run.container("start", "check-prerequisites", &[])
        .await
        .ok();
    let record = case.run_record().await.expect("run record written");
    assert_eq!(record["mode"], "daemonset");
    assert_eq!(record["before"]["chartVersion"], "3.27.0");
    assert_eq!(record["runId"], "wf-upgrade");

    run.container("start", "select-nodes", &[]).await.ok();
    let record = case.run_record().await.unwrap();
    let planned: Vec<Vec<String>> = serde_json::from_value(record["waves"].clone()).unwrap();
    assert_eq!(
        planned,
        case.nodes
            .iter()
            .map(|n| vec![n.clone()])
            .collect::<Vec<_>>(),
        "one node per wave, in the nodes' order"
    );

    let pods_before = pod_uids(&case).await;
    run.container("start", "main", &[]).await.ok();
    assert_eq!(case.release_state().await.1, "3.28.0");
    assert_eq!(
        pods_before,
        pod_uids(&case).await,
        "the before-waves upgrade with OnDelete restarts nothing"
    );

    for (i, node) in case.nodes.iter().enumerate() {
        wave(&run, &(i + 1).to_string()).await.ok();
        let versions = host_versions(&case).await;
        for (j, other) in case.nodes.iter().enumerate() {
            let expected = if j <= i { "3.28.0" } else { "3.27.0" };
            assert_eq!(
                versions[other].as_deref(),
                Some(expected),
                "after wave {}, node {other}",
                i + 1
            );
        }
        let n = case.get_node(node).await;
        assert_eq!(annotation(&n, STATUS).as_deref(), Some("completed"));
        assert_eq!(annotation(&n, VERIFIED).as_deref(), Some("3.28.0"));
        assert!(!unschedulable(&n));
    }

    run.step("finish-run", &[]).await.ok();
    exit_handler(&run, "Succeeded", "").await.ok();
    let values: Value = serde_json::from_str(
        &case
            .helm_admin(&[
                "get".into(),
                "values".into(),
                case.release.clone(),
                "-n".into(),
                case.namespace.clone(),
                "-o".into(),
                "json".into(),
            ])
            .await
            .unwrap(),
    )
    .unwrap();
    assert_ne!(
        values.pointer("/updateStrategy/type"),
        Some(&json!("OnDelete")),
        "the run's OnDelete is not left behind once every node is done: {values}"
    );
    assert_eq!(case.run_record().await.unwrap()["state"], "completed");

    let requests = case
        .rig
        .audit_requests(&format!(
            "system:serviceaccount:{}:{}",
            case.namespace,
            case.service_account()
        ))
        .unwrap();
    let refused: Vec<_> = requests.iter().filter(|r| r.code == 403).collect();
    assert!(
        refused.is_empty(),
        "the chart's ServiceAccount was refused: {refused:#?}"
    );
}

#[tokio::test]
async fn failed_verification_rolls_back_only_the_failed_node_and_stops_the_run() {
    let case = Case::start(CaseSpec::new("rollback", 2, "3.27.0"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pod = broken_at_target(dir.path(), &[case.node(1)]);
    let run = "wf-rollback";

    assert_eq!(
        upgrade_all(&case, run, &pod, dir.path()).await,
        vec![true, false]
    );
    let versions = host_versions(&case).await;
    assert_eq!(
        versions[case.node(0)].as_deref(),
        Some("3.28.0"),
        "the completed node keeps its verified version"
    );
    assert_eq!(
        versions[case.node(1)].as_deref(),
        Some("3.27.0"),
        "the failed node is back at the recorded version"
    );
    let failed = case.get_node(case.node(1)).await;
    assert_eq!(annotation(&failed, STATUS).as_deref(), Some("rolled-back"));
    assert_eq!(
        annotation(&failed, VERIFIED).as_deref(),
        Some("3.27.0"),
        "the workflow's rollback verifies the node again, at the version it returned to"
    );
    assert!(!unschedulable(&failed));
    assert_eq!(
        case.release_state().await.1,
        "3.27.0",
        "the release is back at the version recorded before the run"
    );
    let record = case.run_record().await.unwrap();
    assert_eq!(record["state"], "failed");
    let guard = case
        .klm(&["status", "--run-id", run, "--fail-if-run-failed"])
        .await;
    assert_eq!(
        guard.code, 3,
        "the per-wave guard stops later waves: {}",
        guard.stderr
    );

    // Each node's history is in its Events, as `kubectl describe node` shows them.
    let reasons = |events: &[(String, String, String)]| -> Vec<String> {
        events.iter().map(|(reason, _, _)| reason.clone()).collect()
    };
    let completed = case.node_events(case.node(0)).await;
    assert_eq!(
        reasons(&completed),
        [
            "KataUpgradeCordoned",
            "KataUpgraded",
            "KataVerificationPassed",
            "KataUpgradeCompleted"
        ],
        "{completed:?}"
    );
    assert!(
        completed[1].2
            == format!(
                "run {run} of {}/kata-deploy: kata-deploy restarted at 3.28.0",
                case.namespace
            ),
        "{completed:?}"
    );
    let rolled_back = case.node_events(case.node(1)).await;
    assert_eq!(
        reasons(&rolled_back),
        [
            "KataUpgradeCordoned",
            "KataUpgraded",
            "KataVerificationFailed",
            "KataRolledBack"
        ],
        "{rolled_back:?}"
    );
    assert_eq!(rolled_back[2].1, "Warning", "{rolled_back:?}");
    assert!(
        rolled_back[3].2.ends_with("rolled back to 3.27.0"),
        "{rolled_back:?}"
    );
}

#[tokio::test]
async fn manual_rollback_twice_returns_both_nodes_to_the_recorded_version() {
    let case = Case::start(CaseSpec::new("manual", 2, "3.27.0"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pod = verification_pod(dir.path(), &[]);
    assert_eq!(
        upgrade_all(&case, "wf-manual", &pod, dir.path()).await,
        vec![true, true]
    );
    case.klm(&[
        "complete",
        "--finish-run",
        "--target-version",
        "3.28.0",
        "--run-id",
        "wf-manual",
    ])
    .await
    .ok();

    case.klm(&["rollback", "--nodes", case.node(0), "--timeout", "60s"])
        .await
        .ok();
    case.klm(&["rollback", "--nodes", case.node(1), "--timeout", "60s"])
        .await
        .ok();
    let versions = host_versions(&case).await;
    assert_eq!(versions[case.node(0)].as_deref(), Some("3.27.0"));
    assert_eq!(
        versions[case.node(1)].as_deref(),
        Some("3.27.0"),
        "the second rollback does not stop at the upgraded revision"
    );
    for node in &case.nodes {
        assert_eq!(
            annotation(&case.get_node(node).await, STATUS).as_deref(),
            Some("rolled-back")
        );
    }
}

#[tokio::test]
async fn a_second_run_after_a_partial_run_computes_scope_and_target_again() {
    let case = Case::start(CaseSpec::new("second", 2, "3.27.0"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let failing = broken_at_target(dir.path(), &[case.node(1)]);
    assert_eq!(
        upgrade_all(&case, "wf-first", &failing, dir.path()).await,
        vec![true, false]
    );

    let passing = verification_pod(dir.path(), &[]);
    let pod_arg = passing.display().to_string();
    let checked = case
        .klm(&[
            "check-prerequisites",
            "--target-version",
            "3.28.0",
            "--run-id",
            "wf-second",
            "--verification-pod",
            &pod_arg,
            "--verification-namespace",
            &case.namespace,
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(
        checked["currentVersion"], "3.27.0",
        "the rollback target of the new run is what is deployed now"
    );
    let selection = case
        .klm(&[
            "select-nodes",
            "--node-selector",
            &format!("klm.test/case={}", case.namespace),
            "--skip-completed",
            "3.28.0",
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(
        selection["nodes"],
        json!([case.node(1)]),
        "only the node the first run did not complete"
    );
    assert_eq!(selection["skipped"], json!([case.node(0)]));
}

#[tokio::test]
async fn cordon_ownership_and_selection_taints_survive_success_and_rollback() {
    let spec = CaseSpec {
        set: &["tolerations[0].operator=Exists"],
        ..CaseSpec::new("owner", 2, "3.27.0")
    };
    let case = Case::start(spec).await.unwrap();
    let taint = |effect: &str| Taint {
        key: "upgrade".into(),
        value: Some("pending".into()),
        effect: effect.into(),
        time_added: None,
    };
    case.taint(case.node(0), &[taint("NoSchedule")]).await;
    case.taint(
        case.node(1),
        &[taint("NoSchedule"), taint("PreferNoSchedule")],
    )
    .await;
    case.cordon_by_hand(case.node(0)).await;

    let dir = tempfile::tempdir().unwrap();
    let pod = verification_pod(dir.path(), &[]);
    let wf = Workflow::render(&case, &pod).await;
    // The node cordoned by hand is planned too.
    let run = submit(
        &case,
        &wf,
        "wf-owner",
        &[
            ("node-taint-key", "upgrade"),
            ("node-taint-value", "pending"),
            ("batch-size", "2"),
            ("include-unavailable", "true"),
        ],
        dir.path(),
    );
    assert_eq!(start(&run).await, vec![1], "both nodes in one wave");
    let both = case.nodes.join(",");
    wave(&run, "1").await.ok();

    let first = case.get_node(case.node(0)).await;
    assert!(
        unschedulable(&first),
        "a node cordoned before the run stays cordoned"
    );
    let second = case.get_node(case.node(1)).await;
    assert!(!unschedulable(&second));
    for node in [&first, &second] {
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        assert!(
            !taints.iter().any(|t| t.key == "upgrade"),
            "complete removes the selection taint: {taints:?}"
        );
    }

    case.klm(&["rollback", "--nodes", &both, "--timeout", "60s"])
        .await
        .ok();
    let first = case.get_node(case.node(0)).await;
    assert!(
        unschedulable(&first),
        "a node cordoned before the run stays cordoned after a rollback"
    );
    let second = case.get_node(case.node(1)).await;
    assert!(!unschedulable(&second));
    let mut effects: Vec<String> = second
        .spec
        .unwrap()
        .taints
        .unwrap()
        .into_iter()
        .filter(|t| t.key == "upgrade")
        .map(|t| t.effect)
        .collect();
    effects.sort();
    assert_eq!(
        effects,
        vec!["NoSchedule", "PreferNoSchedule"],
        "every effect of the selection taint is restored"
    );
}

#[tokio::test]
async fn finishing_a_partial_run_succeeds_and_reports_the_values_it_leaves() {
    let case = Case::start(CaseSpec::new("partial", 2, "3.27.0"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pod = verification_pod(dir.path(), &[]);
    let wf = Workflow::render(&case, &pod).await;
    let submission = submit(&case, &wf, "wf-partial", &[], dir.path());
    assert_eq!(start(&submission).await, vec![1, 2]);
    // The workflow stops after its first wave; a person finishes the run.
    wave(&submission, "1").await.ok();
    let run = submission.name.as_str();
    let finished = case
        .klm(&[
            "complete",
            "--finish-run",
            "--target-version",
            "3.28.0",
            "--run-id",
            run,
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(finished["nodesBehind"], serde_json::json!([case.node(1)]));
    let left: Vec<&str> = finished["leftInPlace"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["key"].as_str().unwrap())
        .collect();
    assert!(left.contains(&"updateStrategy.type"), "{finished}");
    assert!(
        finished["leftInPlace"][0]["reason"]
            .as_str()
            .unwrap()
            .contains(case.node(1)),
        "the reason names the node still behind: {finished}"
    );
    assert_eq!(
        host_version(&case.get_node(case.node(1)).await).as_deref(),
        Some("3.27.0"),
        "the node outside the run was not restarted"
    );
}
