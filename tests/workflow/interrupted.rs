//! Runs that end any way but their own: `argo stop` and `argo terminate`
//! while a wave verifies, a step whose klm process dies, and two submissions
//! at once.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::flow::{
    Flow, STATUS, annotation, argo_rig, host_version, unschedulable, verification_parameter,
    verification_pod,
};
use crate::support::CaseSpec;

/// Until dropped, turns every verification pod of the case that holds into
/// one that succeeds, except the pods named in `keep`: "the check passes
/// now", for the re-verification that follows an interrupted wave.
fn release_held_pods(flow: &Flow, keep: Vec<String>) -> tokio::task::JoinHandle<()> {
    let pods: Api<Pod> = Api::namespaced(flow.case.admin.clone(), &flow.case.namespace);
    tokio::spawn(async move {
        let mut events = std::pin::pin!(
            watcher::watcher(pods.clone(), watcher::Config::default()).applied_objects()
        );
        while let Some(Ok(pod)) = events.next().await {
            let name = pod.name_any();
            if keep.contains(&name) || !is_held(&pod) {
                continue;
            }
            let patch = json!({"metadata": {"annotations": {"rig.klm.test/outcome": "succeed"}}});
            let _ = pods
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await;
        }
    })
}

/// Whether the rig's kwok keeps this pod running (a verification that holds).
fn is_held(pod: &Pod) -> bool {
    pod.annotations()
        .get("rig.klm.test/outcome")
        .map(String::as_str)
        == Some("hold")
}

/// Submits a two-node run whose verification holds, and returns once the
/// first node verifies (its verification pod exists).
async fn run_until_verifying(flow: &Flow) -> (String, Vec<String>) {
    let pod = verification_parameter(&verification_pod(&[], "hold"));
    let selector = format!("klm.test/case={}", flow.case.namespace);
    let name = flow
        .submit(
            None,
            &[
                ("target-version", "3.28.0"),
                ("node-selector", &selector),
                ("verification-pod", &pod),
                ("verification-timeout", "5m"),
            ],
        )
        .await
        .unwrap();
    flow.await_node_status(flow.case.node(0), "verifying")
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(flow.case.admin.clone(), &flow.case.namespace);
    let mut events =
        std::pin::pin!(watcher::watcher(pods, watcher::Config::default()).applied_objects());
    let held = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(Ok(pod)) = events.next().await {
            if is_held(&pod) {
                return vec![pod.name_any()];
            }
        }
        Vec::new()
    })
    .await
    .expect("the verification pod appears");
    (name, held)
}

#[tokio::test]
async fn argo_stop_while_verifying_rolls_the_wave_back_and_frees_the_release() {
    let Some(rig) = argo_rig().await else { return };
    let flow = Flow::start(rig, CaseSpec::new("wf-stop", 2, "3.27.0"))
        .await
        .unwrap();
    let (name, held) = run_until_verifying(&flow).await;
    let releaser = release_held_pods(&flow, held);
    let stop = flow.argo().args(["stop", &name]).output().await.unwrap();
    assert!(
        stop.status.success(),
        "argo stop: {}",
        String::from_utf8_lossy(&stop.stderr)
    );
    let run = flow.wait(&name).await.unwrap();
    releaser.abort();
    run.failed();
    let report = run.report();
    let nodes = flow.nodes().await;
    let (first, second) = (flow.case.node(0), flow.case.node(1));
    // The node whose new version was never verified went back to its own version.
    assert_eq!(
        host_version(&nodes[first]).as_deref(),
        Some("3.27.0"),
        "{report}"
    );
    assert_eq!(
        annotation(&nodes[first], STATUS).as_deref(),
        Some("rolled-back"),
        "{report}"
    );
    assert!(!unschedulable(&nodes[first]), "{report}");
    assert_eq!(annotation(&nodes[second], STATUS), None, "{report}");
    assert!(!unschedulable(&nodes[second]), "{report}");
    assert_ne!(
        flow.case.run_record().await.unwrap()["state"],
        json!("running"),
        "{report}"
    );
    // The next submission is not refused, and finishes the job.
    let selector = format!("klm.test/case={}", flow.case.namespace);
    flow.run(
        None,
        &[("target-version", "3.28.0"), ("node-selector", &selector)],
    )
    .await
    .unwrap()
    .succeeded();
}

#[tokio::test]
async fn two_submissions_take_turns_on_the_release() {
    let Some(rig) = argo_rig().await else { return };
    let flow = Flow::start(rig, CaseSpec::new("wf-mutex", 1, "3.27.0"))
        .await
        .unwrap();
    let selector = format!("klm.test/case={}", flow.case.namespace);
    let first = flow
        .submit(
            None,
            &[("target-version", "3.28.0"), ("node-selector", &selector)],
        )
        .await
        .unwrap();
    let second = flow
        .submit(
            None,
            &[("target-version", "3.32.0"), ("node-selector", &selector)],
        )
        .await
        .unwrap();
    let first = flow.wait(&first).await.unwrap();
    let second = flow.wait(&second).await.unwrap();
    first.succeeded();
    second.succeeded();
    let ended = first.workflow["status"]["finishedAt"]
        .as_str()
        .unwrap()
        .to_string();
    let started_pods: Vec<&str> = second.workflow["status"]["nodes"]
        .as_object()
        .unwrap()
        .values()
        .filter(|n| n["type"] == "Pod")
        .filter_map(|n| n["startedAt"].as_str())
        .collect();
    assert!(
        started_pods.iter().all(|s| *s >= ended.as_str()),
        "the second run started a step before the first ended ({ended}): {started_pods:?}\n{}",
        second.report()
    );
    let node = flow.case.get_node(flow.case.node(0)).await;
    assert_eq!(
        host_version(&node).as_deref(),
        Some("3.32.0"),
        "{}",
        second.report()
    );
}
