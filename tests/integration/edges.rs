//! Edges of a run: a rollback that itself fails, and a selection that
//! matches nothing.

use crate::support::{Case, CaseSpec, annotation, unschedulable};
use crate::upgrade::verification_pod;

const STATUS: &str = "katacontainers.io/kata-lifecycle-manager-status";

#[tokio::test]
async fn a_rollback_that_fails_marks_the_node_failed_and_keeps_it_cordoned() {
    let case = Case::start(CaseSpec::new("badrollback", 2, "3.27.0"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pod = verification_pod(dir.path(), &[case.node(0)])
        .display()
        .to_string();
    let ns = case.namespace.clone();
    let run = "wf-badrollback";
    let node = case.node(0);
    case.klm(&[
        "check-prerequisites",
        "--target-version",
        "3.28.0",
        "--run-id",
        run,
        "--verification-pod",
        &pod,
        "--verification-namespace",
        &ns,
    ])
    .await
    .ok();
    case.klm(&[
        "helm-upgrade",
        "--target-version",
        "3.28.0",
        "--run-id",
        run,
    ])
    .await
    .ok();
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
        "60s",
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
        &pod,
        "--verification-namespace",
        &ns,
    ])
    .await
    .code(1);

    // The chart the rollback needs cannot be found: helm fails.
    let missing = dir
        .path()
        .join("kata-deploy-{version}.tgz")
        .display()
        .to_string();
    let rolled = case
        .klm(&[
            "rollback",
            "--nodes",
            node,
            "--run-id",
            run,
            "--reason",
            "verification failed",
            "--chart",
            &missing,
            "--timeout",
            "30s",
        ])
        .await
        .code(1);
    assert!(
        rolled.stderr.contains("hint:"),
        "the message says what to do: {}",
        rolled.stderr
    );
    let n = case.get_node(node).await;
    assert_eq!(
        annotation(&n, STATUS).as_deref(),
        Some("failed"),
        "a failed rollback is not `rolled-back`"
    );
    assert!(
        unschedulable(&n),
        "no new Kata pod may land on a node whose rollback failed"
    );

    let exit = case
        .klm(&["uncordon", "--all-held", "--run-id", run, "-o", "json"])
        .await
        .ok()
        .json();
    assert!(
        exit["keptFailed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == node),
        "the exit handler leaves it cordoned: {exit}"
    );
    assert!(unschedulable(&case.get_node(node).await));
    assert_eq!(case.run_record().await.unwrap()["state"], "failed");
}

#[tokio::test]
async fn a_selection_that_matches_nothing_is_nothing_to_do() {
    let case = Case::start(CaseSpec::new("nomatch", 1, "3.27.0"))
        .await
        .unwrap();
    let before = case.snapshot().await;
    let out = case
        .klm(&[
            "select-nodes",
            "--node-selector",
            "klm.test/case=no-such-case",
            "-o",
            "json",
        ])
        .await
        .ok();
    let json = out.json();
    assert_eq!(json["count"], 0);
    assert_eq!(json["waves"], serde_json::json!([]));
    let text = case
        .klm(&[
            "select-nodes",
            "--node-selector",
            "klm.test/case=no-such-case",
        ])
        .await
        .ok();
    assert!(
        text.stdout.to_lowercase().contains("nothing to do"),
        "{}",
        text.stdout
    );
    assert_eq!(case.snapshot().await, before, "nothing changed");
}
