//! Killed half-way, a step re-run reaches the same end state: a restart
//! killed after it deleted the kata-deploy pod, a verification killed while
//! its pod runs.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use klm_rig::verification_pod::VerificationPod;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};

use crate::support::{Case, CaseSpec, host_version};

/// Waits, by watching the case's pods, until `check` holds for one of them.
async fn until_pod(case: &Case, what: &str, check: impl Fn(&Pod) -> bool) {
    let pods: Api<Pod> = Api::namespaced(case.admin.clone(), &case.namespace);
    let events = watcher(pods, watcher::Config::default())
        .touched_objects()
        .filter_map(|p| async move { p.ok() });
    let mut events = std::pin::pin!(events);
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(pod) = events.next().await {
            if check(&pod) {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} within 60s"));
}

#[tokio::test]
async fn steps_killed_half_way_finish_when_run_again() {
    let case = Case::start(CaseSpec::new("killed", 1, "3.27.0"))
        .await
        .unwrap();
    let node = case.node(0).to_string();
    let dir = tempfile::tempdir().unwrap();
    let pod_file = |outcome: &str| {
        VerificationPod::new(outcome)
            .tolerating_everything()
            .write(dir.path(), outcome)
            .display()
            .to_string()
    };
    let (hold, succeed) = (pod_file("hold"), pod_file("succeed"));
    let ns = case.namespace.clone();
    let run = "wf-killed";
    case.klm(&[
        "check-prerequisites",
        "--target-version",
        "3.28.0",
        "--run-id",
        run,
        "--verification-pod",
        &succeed,
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
    case.klm(&["cordon", "--nodes", &node, "--run-id", run])
        .await
        .ok();

    // restart-kata-pod, killed once the old kata-deploy pod is being deleted.
    let old = case.kata_pods().await[&node].uid().unwrap();
    let mut restart = case
        .klm_command(&[
            "restart-kata-pod",
            "--nodes",
            &node,
            "--run-id",
            run,
            "--timeout",
            "60s",
        ])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    until_pod(&case, "the old kata-deploy pod is deleted", |p| {
        p.uid().as_deref() == Some(old.as_str()) && p.metadata.deletion_timestamp.is_some()
    })
    .await;
    restart.kill().await.unwrap();
    case.klm(&[
        "restart-kata-pod",
        "--nodes",
        &node,
        "--run-id",
        run,
        "--timeout",
        "60s",
    ])
    .await
    .ok();
    assert_eq!(
        host_version(&case.get_node(&node).await).as_deref(),
        Some("3.28.0")
    );
    // And once more: nothing to restart, still done.
    let again = case
        .klm(&[
            "restart-kata-pod",
            "--nodes",
            &node,
            "--run-id",
            run,
            "--timeout",
            "60s",
        ])
        .await
        .ok();
    assert!(again.stdout.contains("already"), "{}", again.stdout);

    // verify, killed while its pod runs; the re-run replaces the leftover pod.
    let mut verify = case
        .klm_command(&[
            "verify",
            "--nodes",
            &node,
            "--run-id",
            run,
            "--verification-pod",
            &hold,
            "--verification-namespace",
            &ns,
        ])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    until_pod(&case, "the verification pod runs", |p| {
        p.labels()
            .contains_key("katacontainers.io/kata-lifecycle-manager-run")
            && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await;
    verify.kill().await.unwrap();
    let verified = case
        .klm(&[
            "verify",
            "--nodes",
            &node,
            "--run-id",
            run,
            "--verification-pod",
            &succeed,
            "--verification-namespace",
            &ns,
        ])
        .await
        .ok();
    assert!(verified.stdout.contains("passed"), "{}", verified.stdout);
    case.klm(&[
        "complete",
        "--nodes",
        &node,
        "--target-version",
        "3.28.0",
        "--run-id",
        run,
    ])
    .await
    .ok();
    let leftovers: Vec<String> = Api::<Pod>::namespaced(case.admin.clone(), &ns)
        .list(
            &kube::api::ListParams::default()
                .labels("katacontainers.io/kata-lifecycle-manager-run"),
        )
        .await
        .unwrap()
        .items
        .iter()
        .map(|p| p.name_any())
        .collect();
    assert!(
        leftovers.is_empty(),
        "no verification pod left behind: {leftovers:?}"
    );
}
