//! kata-deploy's job mode: waves scoped with job.nodes, and the refusal where
//! kata-deploy (>= 4.1) would uninstall Kata from the rest of the fleet.

use serde_json::json;

use crate::support::{Case, CaseSpec, annotation, host_version, job_values};
use crate::upgrade::verification_pod;

#[tokio::test]
async fn job_mode_upgrades_one_wave_at_a_time() {
    // The case label is the namespace, known only after the namespace exists:
    // install in daemonset-free job mode with the case selector.
    let case = Case::start_with(CaseSpec::new("jobmode", 3, "3.32.0"), job_values)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pod = verification_pod(dir.path(), &[]).display().to_string();
    let run = "wf-job";
    let checked = case
        .klm(&[
            "check-prerequisites",
            "--target-version",
            "3.33.0",
            "--run-id",
            run,
            "--verification-pod",
            &pod,
            "--verification-namespace",
            &case.namespace,
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(checked["mode"], "job");
    let selection = case
        .klm(&[
            "select-nodes",
            "--node-selector",
            &format!("klm.test/case={}", case.namespace),
            "--batch-size",
            "2",
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(selection["waves"].as_array().unwrap().len(), 2);

    for (i, wave) in selection["waves"].as_array().unwrap().iter().enumerate() {
        let nodes = wave["nodeList"].as_str().unwrap();
        case.klm(&["cordon", "--nodes", nodes, "--run-id", run])
            .await
            .ok();
        let upgraded = case
            .klm(&[
                "helm-upgrade",
                "--target-version",
                "3.33.0",
                "--nodes",
                nodes,
                "--run-id",
                run,
                "-o",
                "json",
            ])
            .await
            .ok()
            .json();
        assert_eq!(upgraded["nodes"], json!(wave["nodes"]));
        case.klm(&[
            "restart-kata-pod",
            "--nodes",
            nodes,
            "--run-id",
            run,
            "--timeout",
            "60s",
        ])
        .await
        .ok();
        for node in &case.nodes {
            let in_wave_or_earlier = selection["waves"].as_array().unwrap()[..=i]
                .iter()
                .any(|w| w["nodes"].as_array().unwrap().iter().any(|n| n == node));
            let expected = if in_wave_or_earlier {
                "3.33.0"
            } else {
                "3.32.0"
            };
            assert_eq!(
                host_version(&case.get_node(node).await).as_deref(),
                Some(expected),
                "wave {i}, node {node}"
            );
        }
        case.klm(&[
            "verify",
            "--nodes",
            nodes,
            "--run-id",
            run,
            "--verification-pod",
            &pod,
            "--verification-namespace",
            &case.namespace,
        ])
        .await
        .ok();
        case.klm(&[
            "complete",
            "--nodes",
            nodes,
            "--target-version",
            "3.33.0",
            "--run-id",
            run,
        ])
        .await
        .ok();
    }
    let finished = case
        .klm(&[
            "complete",
            "--finish-run",
            "--target-version",
            "3.33.0",
            "--run-id",
            run,
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    let restored: Vec<&str> = finished["restored"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        restored.contains(&"job.nodes"),
        "job.nodes is restored (without re-running the installer): {finished}"
    );
    for node in &case.nodes {
        assert_eq!(
            annotation(
                &case.get_node(node).await,
                "katacontainers.io/kata-lifecycle-manager-status"
            )
            .as_deref(),
            Some("completed")
        );
    }
}

#[tokio::test]
async fn job_mode_rollback_reinstalls_the_recorded_version_on_the_node_only() {
    let case = Case::start_with(CaseSpec::new("jobback", 2, "3.32.0"), job_values)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pod = verification_pod(dir.path(), &[case.node(0)])
        .display()
        .to_string();
    let run = "wf-jobback";
    case.klm(&[
        "check-prerequisites",
        "--target-version",
        "3.33.0",
        "--run-id",
        run,
        "--verification-pod",
        &pod,
        "--verification-namespace",
        &case.namespace,
    ])
    .await
    .ok();
    let node = case.node(0);
    case.klm(&["cordon", "--nodes", node, "--run-id", run])
        .await
        .ok();
    case.klm(&[
        "helm-upgrade",
        "--target-version",
        "3.33.0",
        "--nodes",
        node,
        "--run-id",
        run,
    ])
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
        &case.namespace,
    ])
    .await
    .code(1);
    case.klm(&[
        "rollback",
        "--nodes",
        node,
        "--run-id",
        run,
        "--timeout",
        "60s",
    ])
    .await
    .ok();
    assert_eq!(
        host_version(&case.get_node(node).await).as_deref(),
        Some("3.32.0")
    );
    assert_eq!(
        host_version(&case.get_node(case.node(1)).await).as_deref(),
        Some("3.32.0"),
        "the other node was never touched"
    );
    assert_eq!(case.release_state().await.1, "3.32.0");
}

#[tokio::test]
async fn job_mode_is_refused_where_kata_deploy_prunes_unselected_nodes() {
    let case = Case::start_with(CaseSpec::new("prune", 1, "3.33.0"), job_values)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pod = verification_pod(dir.path(), &[]).display().to_string();
    let before = case.snapshot().await;
    let refused = case
        .klm(&[
            "check-prerequisites",
            "--target-version",
            "4.1.0",
            "--verification-pod",
            &pod,
            "--verification-namespace",
            &case.namespace,
        ])
        .await
        .code(3);
    assert!(
        refused
            .stderr
            .contains("job mode cannot be driven wave by wave"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("safe alternatives"),
        "{}",
        refused.stderr
    );
    assert_eq!(case.snapshot().await, before, "the refusal changed nothing");
}
