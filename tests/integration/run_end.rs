//! How a run ends, on the rig, with the WorkflowTemplate's own steps (its
//! args and KLM_* environment, see `workflow.rs`) as the chart's
//! ServiceAccount: waves read from the run record, settle completing or
//! rolling back a wave, the exit handler's decision per node after a stop,
//! the record closed so the next submission starts and resumes, the
//! clean-up after a terminate, and rollback-node cordoning its node.

use std::collections::BTreeMap;

use kube::ResourceExt;
use serde_json::json;

use crate::support::{Case, CaseSpec, annotation, host_version, job_values, unschedulable};
use crate::upgrade::verification_pod;
use crate::workflow::{Submission, Workflow, base64};

const STATUS: &str = "katacontainers.io/kata-lifecycle-manager-status";
const HELD_BY: &str = "katacontainers.io/kata-lifecycle-manager-run";

/// What Argo passes as `{{workflow.failures}}` after `argo stop` during a verify.
const STOPPED: &str = r#"[{"displayName":"verify(0)","message":"Stopped with strategy 'Stop'","templateName":"verify","phase":"Failed","podName":"x","finishedAt":"2026-01-01T00:00:00Z"}]"#;

/// The parameters every submission of a test passes: its target and the
/// case's nodes (the rig is shared, so the default selection would see others').
pub(crate) fn params<'a>(case: &'a Case, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, String)> {
    let mut all = vec![
        ("target-version", "3.28.0".to_string()),
        (
            "node-selector",
            format!("{}={}", crate::support::CASE_LABEL, case.namespace),
        ),
    ];
    all.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    all
}

pub(crate) fn submit<'a>(
    case: &'a Case,
    wf: &'a Workflow,
    name: &str,
    extra: &[(&'a str, &'a str)],
    tmp: &std::path::Path,
) -> Submission<'a> {
    let owned = params(case, extra);
    let borrowed: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Submission::new(case, wf, name, &borrowed, tmp)
}

/// The first step of deploy-version, its pod: check-prerequisites,
/// select-nodes, upgrade-release (which changes nothing when no node is
/// selected). Returns the wave indices.
pub(crate) async fn start(run: &Submission<'_>) -> Vec<u64> {
    run.step("start", &[]).await.ok();
    serde_json::from_str(
        &std::fs::read_to_string(run.tmp.join("waves.json"))
            .expect("select-nodes wrote the indices"),
    )
    .expect("a JSON list")
}

/// One whole wave as the `wave` template runs it: the upgrade pod's
/// containers (cordon to complete), then, only when one failed, settle.
/// Returns the upgrade's result, or settle's when it ran.
pub(crate) async fn wave(run: &Submission<'_>, index: &str) -> crate::support::Klm {
    let upgrade = run.step("upgrade", &[("index", index)]).await;
    if upgrade.code == 0 {
        return upgrade;
    }
    run.step("settle", &[("index", index), ("upgrade-status", "Failed")])
        .await
}

/// The phases of a wave's pod before its verify (cordon, drain,
/// restart-kata-pod), each succeeding: a pod stopped or killed before it
/// verifies.
pub(crate) async fn upgrade_until_verify(run: &Submission<'_>, index: &str) {
    for phase in ["cordon", "drain", "restart-kata-pod"] {
        run.container("upgrade", phase, &[("index", index)])
            .await
            .ok();
    }
}

/// The exit handler's close step, as deploy-version's onExit runs it.
pub(crate) async fn exit_handler(
    run: &Submission<'_>,
    status: &str,
    failures: &str,
) -> crate::support::Klm {
    let name = run.name.clone();
    run.step(
        "close",
        &[
            ("run-id", &name),
            ("workflow-status", status),
            ("failures", failures),
            ("reason", ""),
        ],
    )
    .await
}

pub(crate) async fn pod_uids(case: &Case) -> BTreeMap<String, String> {
    case.kata_pods()
        .await
        .into_iter()
        .map(|(n, p)| (n, p.uid().unwrap()))
        .collect()
}

#[tokio::test]
async fn a_stopped_run_rolls_back_what_was_in_flight_and_the_next_run_resumes() {
    let case = Case::start(CaseSpec::new("stopped", 4, "3.27.0"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wf = Workflow::render(&case, &verification_pod(dir.path(), &[])).await;
    let run = submit(
        &case,
        &wf,
        "wf-stopped-1",
        &[("batch-size", "2")],
        dir.path(),
    );
    let [n1, n2, n3, n4] = [case.node(0), case.node(1), case.node(2), case.node(3)];

    assert_eq!(start(&run).await, vec![1, 2]);
    let record = case.run_record().await.unwrap();
    assert_eq!(
        record["waves"],
        json!([[n1, n2], [n3, n4]]),
        "the plan is in the record"
    );

    wave(&run, "1").await.ok();
    // Wave 2 is stopped while its kata-deploy pods restart: n3's was
    // replaced (new version, never verified), n4's not yet.
    run.container("upgrade", "cordon", &[("index", "2")])
        .await
        .ok();
    let before = pod_uids(&case).await;
    case.klm(&[
        "restart-kata-pod",
        "--nodes",
        n3,
        "--run-id",
        &run.name,
        "--timeout",
        "60s",
    ])
    .await
    .ok();
    assert_eq!(
        host_version(&case.get_node(n3).await).as_deref(),
        Some("3.28.0")
    );

    let closed = exit_handler(&run, "Failed", STOPPED).await.ok();
    assert!(
        closed.stdout.contains("closed as interrupted"),
        "{}",
        closed.stdout
    );

    // Completed nodes stay in service at the new version.
    for node in [n1, n2] {
        let n = case.get_node(node).await;
        assert_eq!(annotation(&n, STATUS).as_deref(), Some("completed"));
        assert!(!unschedulable(&n));
        assert_eq!(host_version(&n).as_deref(), Some("3.28.0"));
    }
    // The node caught mid-upgrade is back on the old version, verified, in service.
    let n = case.get_node(n3).await;
    assert_eq!(annotation(&n, STATUS).as_deref(), Some("rolled-back"));
    assert_eq!(host_version(&n).as_deref(), Some("3.27.0"));
    assert!(!unschedulable(&n));
    assert_eq!(annotation(&n, HELD_BY), None);
    // The node the run held but never changed is released, its pod untouched.
    let n = case.get_node(n4).await;
    assert!(!unschedulable(&n), "n4 is back in service");
    assert_eq!(annotation(&n, HELD_BY), None);
    assert_eq!(host_version(&n).as_deref(), Some("3.27.0"));
    assert_eq!(pod_uids(&case).await.get(n4), before.get(n4));

    let record = case.run_record().await.unwrap();
    assert_eq!(record["state"], "interrupted");
    assert!(
        record["failure"]
            .as_str()
            .unwrap()
            .contains("verify(0): Stopped with strategy 'Stop'"),
        "{record}"
    );
    assert_eq!(record["nodes"][n3], "rolled-back");
    assert_eq!(
        case.release_state().await.1,
        "3.27.0",
        "the release was reverted"
    );

    // The exit handler is idempotent (a retried pod): nothing changes.
    let snapshot = case.snapshot().await;
    exit_handler(&run, "Failed", STOPPED).await.ok();
    assert_eq!(case.snapshot().await, snapshot);

    // Submitting again is not refused, and resumes: completed nodes are skipped.
    let dir2 = tempfile::tempdir().unwrap();
    let again = submit(
        &case,
        &wf,
        "wf-stopped-2",
        &[("batch-size", "2")],
        dir2.path(),
    );
    assert_eq!(start(&again).await, vec![1]);
    assert_eq!(case.run_record().await.unwrap()["waves"], json!([[n3, n4]]));
    wave(&again, "1").await.ok();
    again.step("finish-run", &[]).await.ok();
    exit_handler(&again, "Succeeded", "").await.ok();
    let record = case.run_record().await.unwrap();
    assert_eq!(record["state"], "completed");
    for node in &case.nodes {
        let n = case.get_node(node).await;
        assert_eq!(host_version(&n).as_deref(), Some("3.28.0"), "{node}");
        assert!(!unschedulable(&n));
    }
}

#[tokio::test]
async fn settle_completes_a_wave_or_rolls_it_back_and_later_waves_change_nothing() {
    let case = Case::start(CaseSpec::new("settle", 3, "3.27.0"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let [n1, n2, n3] = [case.node(0), case.node(1), case.node(2)];
    let wf = Workflow::render(&case, &verification_pod(dir.path(), &[])).await;
    let run = submit(&case, &wf, "wf-settle", &[], dir.path());
    // n2's new version fails verification (the rig decides a pod's fate by
    // node, so the failing pod is given to that verify step only).
    let failing = base64(&std::fs::read(verification_pod(dir.path(), &[n2])).unwrap());
    let failing_verify = submit(
        &case,
        &wf,
        "wf-settle",
        &[("verification-pod", &failing)],
        dir.path(),
    );
    assert_eq!(start(&run).await, vec![1, 2, 3]);

    // A wave index the plan does not have: bad input, nothing changed.
    let snapshot = case.snapshot().await;
    run.container("upgrade", "cordon", &[("index", "9")])
        .await
        .code(2);
    assert_eq!(case.snapshot().await, snapshot);

    wave(&run, "1").await.ok();
    let n = case.get_node(n1).await;
    assert_eq!(annotation(&n, STATUS).as_deref(), Some("completed"));
    assert!(!unschedulable(&n));

    // Wave 2 fails verification: settle rolls it back and fails the wave.
    upgrade_until_verify(&run, "2").await;
    failing_verify
        .container("upgrade", "verify", &[("index", "2")])
        .await
        .code(1);
    let settled = run
        .step("settle", &[("index", "2"), ("upgrade-status", "Failed")])
        .await
        .code(1);
    assert!(settled.stderr.contains("wave 2"), "{}", settled.stderr);
    let n = case.get_node(n2).await;
    assert_eq!(annotation(&n, STATUS).as_deref(), Some("rolled-back"));
    assert_eq!(host_version(&n).as_deref(), Some("3.27.0"));
    assert!(!unschedulable(&n));
    let record = case.run_record().await.unwrap();
    assert_eq!(record["state"], "failed");
    assert!(record["failure"].as_str().unwrap().contains("wave 2"));

    // Were a third wave started anyway, its first step refuses and settle
    // rolls back nothing: n3 is as it was.
    let snapshot = case.snapshot().await;
    run.container("upgrade", "cordon", &[("index", "3")])
        .await
        .code(3);
    let settled = run
        .step("settle", &[("index", "3"), ("upgrade-status", "Failed")])
        .await
        .code(1);
    assert!(
        settled.stderr.contains("changed no node"),
        "{}",
        settled.stderr
    );
    assert_eq!(case.snapshot().await, snapshot);

    // The exit handler keeps the failure's reason and has nothing to release.
    exit_handler(
        &run,
        "Failed",
        r#"[{"displayName":"settle","message":"Error (exit code 1)","phase":"Failed"}]"#,
    )
    .await
    .ok();
    let after = case.run_record().await.unwrap();
    assert_eq!(after["state"], "failed");
    assert_eq!(after["failure"], record["failure"]);
    assert!(!unschedulable(&case.get_node(n3).await));
}

#[tokio::test]
async fn a_failed_rollback_in_the_exit_handler_keeps_the_node_cordoned() {
    let case = Case::start(CaseSpec::new("exitfail", 2, "3.27.0"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let n1 = case.node(0).to_string();
    let wf = Workflow::render(&case, &verification_pod(dir.path(), &[])).await;
    let failing = std::fs::read(verification_pod(dir.path(), &[&n1])).unwrap();
    let failing = base64(&failing);
    let run = submit(
        &case,
        &wf,
        "wf-exitfail",
        &[("verification-pod", &failing)],
        dir.path(),
    );
    assert_eq!(start(&run).await, vec![1, 2]);
    upgrade_until_verify(&run, "1").await;
    // Stopped before verify; the re-verification after the rollback fails.
    let closed = exit_handler(&run, "Failed", STOPPED).await.code(1);
    assert!(
        closed.stderr.contains("rollback failed"),
        "{}",
        closed.stderr
    );
    let n = case.get_node(&n1).await;
    assert_eq!(annotation(&n, STATUS).as_deref(), Some("failed"));
    assert!(
        unschedulable(&n),
        "a node whose rollback failed stays cordoned"
    );
    let record = case.run_record().await.unwrap();
    assert_eq!(record["state"], "interrupted", "closed before the rollback");
    assert_eq!(record["nodes"][&n1], "failed");
    // Again (a retried pod): the failed node is kept, and nothing else changes.
    let snapshot = case.snapshot().await;
    exit_handler(&run, "Failed", STOPPED).await.ok();
    assert_eq!(case.snapshot().await, snapshot);
}

#[tokio::test]
async fn a_terminated_run_is_closed_by_the_close_run_entrypoint() {
    let case = Case::start(CaseSpec::new("terminated", 2, "3.27.0"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let n1 = case.node(0);
    let wf = Workflow::render(&case, &verification_pod(dir.path(), &[])).await;
    let run = submit(&case, &wf, "wf-terminated", &[], dir.path());
    start(&run).await;
    upgrade_until_verify(&run, "1").await;
    // argo terminate: no exit handler. The next run is refused...
    let dir2 = tempfile::tempdir().unwrap();
    let next = submit(&case, &wf, "wf-after", &[], dir2.path());
    next.container("start", "check-prerequisites", &[])
        .await
        .code(3);
    // ...until the close-run entrypoint closes the terminated one.
    let cleanup = submit(
        &case,
        &wf,
        "wf-cleanup",
        &[("run-id", "wf-terminated")],
        dir2.path(),
    );
    let close = &wf.template("close-run")["steps"][0][0]["arguments"]["parameters"];
    let input = |name: &str| -> String {
        let value = close
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["value"].as_str())
            .unwrap_or_default();
        value
            .replace("{{workflow.parameters.run-id}}", "wf-terminated")
            .replace("{{workflow.name}}", "wf-cleanup")
    };
    let (run_id, status, failures, reason) = (
        input("run-id"),
        input("workflow-status"),
        input("failures"),
        input("reason"),
    );
    cleanup
        .step(
            "close",
            &[
                ("run-id", &run_id),
                ("workflow-status", &status),
                ("failures", &failures),
                ("reason", &reason),
            ],
        )
        .await
        .ok();
    let n = case.get_node(n1).await;
    assert_eq!(annotation(&n, STATUS).as_deref(), Some("rolled-back"));
    assert_eq!(host_version(&n).as_deref(), Some("3.27.0"));
    assert!(!unschedulable(&n));
    let record = case.run_record().await.unwrap();
    assert_eq!(record["state"], "interrupted");
    assert!(record["failure"].as_str().unwrap().contains("wf-cleanup"));
    next.container("start", "check-prerequisites", &[])
        .await
        .ok();
}

#[tokio::test]
async fn rollback_node_cordons_its_node_and_needs_no_target_version() {
    let case = Case::start(CaseSpec::new("rbnode", 1, "3.27.0"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let n1 = case.node(0).to_string();
    let wf = Workflow::render(&case, &verification_pod(dir.path(), &[])).await;

    // An empty target (the parameter's default) is refused, changing nothing;
    // so are timeouts that the step deadline would cut short.
    let snapshot = case.snapshot().await;
    let empty = Submission::new(&case, &wf, "wf-empty", &[], dir.path());
    let refused = empty
        .container("start", "check-prerequisites", &[])
        .await
        .code(2);
    assert!(
        refused
            .stderr
            .contains("--target-version <VERSION>': no version given"),
        "{}",
        refused.stderr
    );
    let slow = submit(
        &case,
        &wf,
        "wf-slow",
        &[("helm-timeout", "60m")],
        dir.path(),
    );
    let refused = slow
        .container("start", "check-prerequisites", &[])
        .await
        .code(2);
    assert!(
        refused.stderr.contains("step deadline"),
        "{}",
        refused.stderr
    );
    assert_eq!(case.snapshot().await, snapshot);

    let run = submit(&case, &wf, "wf-rbnode", &[], dir.path());
    start(&run).await;
    wave(&run, "1").await.ok();
    run.step("finish-run", &[]).await.ok();
    assert!(!unschedulable(&case.get_node(&n1).await));

    // rollback-node, submitted with only node-name: the new version's
    // re-verification fails, so the node stays cordoned (it was in service).
    let failing = base64(&std::fs::read(verification_pod(dir.path(), &[&n1])).unwrap());
    let rb = Submission::new(
        &case,
        &wf,
        "wf-rb-1",
        &[("node-name", &n1), ("verification-pod", &failing)],
        dir.path(),
    );
    rb.step("rollback-one", &[]).await.code(1);
    let n = case.get_node(&n1).await;
    assert!(
        unschedulable(&n),
        "cordoned for its rollback, kept so when it fails"
    );
    assert_eq!(annotation(&n, STATUS).as_deref(), Some("failed"));
    // With the cause fixed, rollback-node again: back, verified, in service.
    let rb = Submission::new(&case, &wf, "wf-rb-2", &[("node-name", &n1)], dir.path());
    rb.step("rollback-one", &[]).await.ok();
    let n = case.get_node(&n1).await;
    assert!(!unschedulable(&n));
    assert_eq!(annotation(&n, STATUS).as_deref(), Some("rolled-back"));
    assert_eq!(host_version(&n).as_deref(), Some("3.27.0"));
    let status = rb.step("status", &[]).await.ok();
    assert!(status.stdout.contains(&n1), "{}", status.stdout);
}

#[tokio::test]
async fn an_empty_selection_changes_nothing() {
    let case = Case::start(CaseSpec::new("emptysel", 1, "3.27.0"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wf = Workflow::render(&case, &verification_pod(dir.path(), &[])).await;
    let run = Submission::new(
        &case,
        &wf,
        "wf-emptysel",
        &[
            ("target-version", "3.28.0"),
            ("node-selector", "klm.test/nothing=here"),
        ],
        dir.path(),
    );
    let release = case.release_state().await;
    assert_eq!(start(&run).await, Vec::<u64>::new());
    run.step("finish-run", &[]).await.ok();
    exit_handler(&run, "Succeeded", "").await.ok();
    assert_eq!(
        case.release_state().await,
        release,
        "helm history did not grow"
    );
    assert_eq!(case.run_record().await.unwrap()["state"], "completed");
}

/// Job mode through the template: upgrade-release changes nothing,
/// restart-kata-pod scopes the release to wave K read from the record; a run
/// stopped right after that helm upgrade (the installer ran, the status
/// still says `cordoned`) has the node rolled back by the exit handler,
/// decided from the record.
#[tokio::test]
async fn job_mode_waves_from_the_record_and_a_stop_after_the_wave_upgrade() {
    let case = Case::start_with(CaseSpec::new("jobflow", 2, "3.32.0"), job_values)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let [n1, n2] = [case.node(0), case.node(1)];
    let wf = Workflow::render(&case, &verification_pod(dir.path(), &[])).await;
    let run = submit(
        &case,
        &wf,
        "wf-jobflow",
        &[("target-version", "3.33.0"), ("drain-enabled", "true")],
        dir.path(),
    );
    run.container("start", "check-prerequisites", &[])
        .await
        .ok();
    run.container("start", "select-nodes", &[]).await.ok();
    assert_eq!(
        case.run_record().await.unwrap()["waves"],
        json!([[n1], [n2]])
    );
    let release = case.release_state().await;
    let before_waves = run.container("start", "main", &[]).await.ok();
    assert!(
        before_waves.stdout.contains("job mode: ") && case.release_state().await == release,
        "before the waves, job mode upgrades nothing: {}",
        before_waves.stdout
    );

    // Wave 1, whole, its pod: cordon, drain, restart-kata-pod (the wave's
    // upgrade, the install Jobs), verify, complete.
    run.step("upgrade", &[("index", "1")]).await.ok();
    let n = case.get_node(n1).await;
    assert_eq!(annotation(&n, STATUS).as_deref(), Some("completed"));
    assert_eq!(host_version(&n).as_deref(), Some("3.33.0"));
    assert_eq!(
        host_version(&case.get_node(n2).await).as_deref(),
        Some("3.32.0"),
        "job mode installs on the wave's nodes only"
    );

    // Wave 2 stopped right after its helm upgrade.
    run.container("upgrade", "cordon", &[("index", "2")])
        .await
        .ok();
    // What restart-kata-pod does first, alone: as if killed right after.
    case.klm(&[
        "helm-upgrade",
        "--stage",
        "wave",
        "--wave",
        "2",
        "--run-id",
        &run.name,
    ])
    .await
    .ok();
    assert_eq!(case.run_record().await.unwrap()["nodes"][n2], "upgraded");
    exit_handler(&run, "Failed", STOPPED).await.ok();
    let n = case.get_node(n2).await;
    assert_eq!(annotation(&n, STATUS).as_deref(), Some("rolled-back"));
    assert_eq!(host_version(&n).as_deref(), Some("3.32.0"));
    assert!(!unschedulable(&n));
    let n = case.get_node(n1).await;
    assert_eq!(host_version(&n).as_deref(), Some("3.33.0"));
    assert!(!unschedulable(&n));
    assert_eq!(case.run_record().await.unwrap()["state"], "interrupted");
}
