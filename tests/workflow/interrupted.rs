//! Runs that end any way but their own: `argo stop` and `argo terminate`
//! while a wave verifies, a phase whose klm process dies, and two submissions
//! at once.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::flow::{
    Finished, Flow, STATUS, annotation, argo_rig, host_version, unschedulable,
    verification_parameter, verification_pod,
};
use crate::support::CaseSpec;

/// Until aborted, turns every verification pod of the case that holds into
/// one that succeeds, except the pods whose UIDs are in `keep` (a later pod
/// of the same name is a new pod): "the check passes
/// now", for the re-verification that follows an interrupted wave.
fn release_held_pods(flow: &Flow, keep: Vec<String>) -> tokio::task::JoinHandle<()> {
    let pods: Api<Pod> = Api::namespaced(flow.case.admin.clone(), &flow.case.namespace);
    tokio::spawn(async move {
        let mut events = std::pin::pin!(
            watcher::watcher(pods.clone(), watcher::Config::default()).applied_objects()
        );
        while let Some(Ok(pod)) = events.next().await {
            let name = pod.name_any();
            if pod.uid().is_some_and(|uid| keep.contains(&uid)) || !is_held(&pod) {
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
    run_until_verifying_to(flow, "3.28.0").await
}

/// [`run_until_verifying`] of a run to `target`.
async fn run_until_verifying_to(flow: &Flow, target: &str) -> (String, Vec<String>) {
    let pod = verification_parameter(&verification_pod(&[], "hold"));
    let selector = format!("klm.test/case={}", flow.case.namespace);
    let name = flow
        .submit(
            None,
            &[
                ("target-version", target),
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
                return vec![pod.uid().unwrap_or_default()];
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
    assert_first_wave_rolled_back(&flow, &run.report()).await;
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

/// Job mode from 4.1: `argo stop` while the first wave verifies ends the
/// run safely too: the exit handler rolls the wave's node back with the
/// release's own dispatcher, without its prune.
#[tokio::test]
async fn argo_stop_mid_wave_in_job_mode_from_4_1_prunes_nothing() {
    let Some(rig) = argo_rig().await else { return };
    let flow = Flow::start_with(rig, CaseSpec::new("wf-stop41", 2, "4.1.0"), |_| {
        vec!["deploymentMode=job".into()]
    })
    .await
    .unwrap();
    let (name, held) = run_until_verifying_to(&flow, "4.2.0").await;
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
    assert_first_wave_rolled_back_to(&flow, "4.1.0", &report).await;
    for (node, state) in flow.nodes().await {
        assert_eq!(
            state.annotations().get("rig.klm.test/prunes"),
            None,
            "{node} was pruned\n{report}"
        );
        assert_eq!(
            host_version(&state).as_deref(),
            Some("4.1.0"),
            "{node} runs Kata at 4.1.0\n{report}"
        );
    }
}

#[tokio::test]
async fn two_submissions_take_turns_on_the_release() {
    let Some(rig) = argo_rig().await else { return };
    let flow = Flow::start(rig, CaseSpec::new("wf-mutex", 1, "3.27.0"))
        .await
        .unwrap();
    take_turns(&flow, &flow).await;
}

#[tokio::test]
async fn two_installs_in_two_namespaces_share_the_release_lock() {
    let Some(rig) = argo_rig().await else { return };
    let flow = Flow::start(rig, CaseSpec::new("wf-mutex-ns", 1, "3.27.0"))
        .await
        .unwrap();
    let other = flow.install_again("wf-mutex-other").await.unwrap();
    assert_ne!(flow.argo_namespace, other.argo_namespace);
    take_turns(&flow, &other).await;
}

/// Submits an upgrade to 3.28.0 through `a` and one to 3.32.0 through `b` at
/// once: both succeed, one after the other (no step of the later one starts
/// before the earlier one ended), and the node ends at the later one's target.
async fn take_turns(a: &Flow, b: &Flow) {
    let selector = format!("klm.test/case={}", a.case.namespace);
    let mut runs = Vec::new();
    for (flow, target) in [(a, "3.28.0"), (b, "3.32.0")] {
        let name = flow
            .submit(
                None,
                // Whichever runs second may go to an older version.
                &[
                    ("target-version", target),
                    ("node-selector", &selector),
                    ("allow-downgrade", "true"),
                ],
            )
            .await
            .unwrap();
        runs.push((flow, name, target));
    }
    let mut ended = Vec::new();
    for (flow, name, target) in runs {
        let run = flow.wait(&name).await.unwrap();
        run.succeeded();
        ended.push((run, target));
    }
    let pod_starts = |run: &Finished| -> Vec<String> {
        run.workflow["status"]["nodes"]
            .as_object()
            .unwrap()
            .values()
            .filter(|n| n["type"] == "Pod")
            .filter_map(|n| n["startedAt"].as_str().map(String::from))
            .collect()
    };
    // Whichever took the lock first.
    ended.sort_by_key(|(run, _)| pod_starts(run).into_iter().min());
    let (earlier, later) = (&ended[0].0, &ended[1].0);
    let earlier_end = earlier.workflow["status"]["finishedAt"].as_str().unwrap();
    let later_starts = pod_starts(later);
    assert!(
        later_starts.iter().all(|s| s.as_str() >= earlier_end),
        "{} started a step before {} ended ({earlier_end}): {later_starts:?}\n{}\n{}",
        later.name,
        earlier.name,
        earlier.report(),
        later.report()
    );
    let node = a.case.get_node(a.case.node(0)).await;
    assert_eq!(
        host_version(&node).as_deref(),
        Some(ended[1].1),
        "{}",
        later.report()
    );
}

/// After an interrupted first wave of two nodes: the first node is back on
/// its version and serves, the second was never touched, the run is closed.
async fn assert_first_wave_rolled_back(flow: &Flow, report: &str) {
    assert_first_wave_rolled_back_to(flow, "3.27.0", report).await;
}

/// [`assert_first_wave_rolled_back`] to `version`.
async fn assert_first_wave_rolled_back_to(flow: &Flow, version: &str, report: &str) {
    let nodes = flow.nodes().await;
    let (first, second) = (flow.case.node(0), flow.case.node(1));
    assert_eq!(
        host_version(&nodes[first]).as_deref(),
        Some(version),
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
    // Closed as interrupted (not as a failed wave): Argo's quoted
    // {{workflow.failures}} was read, or the run was closed by hand.
    let record = flow.case.run_record().await.unwrap();
    assert_eq!(record["state"], json!("interrupted"), "{record}\n{report}");
}

#[tokio::test]
async fn argo_terminate_then_the_close_run_entrypoint_cleans_up() {
    let Some(rig) = argo_rig().await else { return };
    let flow = Flow::start(rig, CaseSpec::new("wf-term", 2, "3.27.0"))
        .await
        .unwrap();
    let (name, held) = run_until_verifying(&flow).await;
    let terminate = flow
        .argo()
        .args(["terminate", &name])
        .output()
        .await
        .unwrap();
    assert!(
        terminate.status.success(),
        "argo terminate: {}",
        String::from_utf8_lossy(&terminate.stderr)
    );
    let run = flow.wait(&name).await.unwrap();
    run.failed();
    // Terminate runs no exit handler: the wave's node is still held.
    let node = flow.case.get_node(flow.case.node(0)).await;
    assert!(
        unschedulable(&node),
        "nothing released the node after a terminate\n{}",
        run.report()
    );
    assert_eq!(
        flow.case.run_record().await.unwrap()["state"],
        json!("running")
    );

    // The one command the README gives for after a terminate.
    let releaser = release_held_pods(&flow, held);
    let close = flow
        .run(Some("close-run"), &[("run-id", &name)])
        .await
        .unwrap();
    releaser.abort();
    close.succeeded();
    assert_first_wave_rolled_back(&flow, &close.report()).await;
}

/// A phase whose klm process dies with no verdict (what the OOM killer or a
/// node problem does) fails its wave's pod: Argo sees only the last phase's
/// exit code (64, a phase before it failed) and cannot tell a verdict from
/// a kill, so the pod is not run again; settle rolls the wave back and the
/// run stops, the node back on its version.
#[tokio::test]
async fn a_killed_phase_fails_its_wave_and_settle_rolls_it_back() {
    let Some(rig) = argo_rig().await else { return };
    let flow = Flow::start(rig, CaseSpec::new("wf-kill", 1, "3.27.0"))
        .await
        .unwrap();
    let (name, held) = run_until_verifying(&flow).await;
    // The wave's pod and its one klm process on the real node: the verify
    // phase (the phases after it wait in Argo's executor, klm not started).
    let pods: Api<Pod> = Api::namespaced(flow.case.admin.clone(), &flow.case.namespace);
    let selector = format!("workflows.argoproj.io/workflow={name}");
    let step = pods
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| p.name_any())
        .find(|p| p.contains("-upgrade-"))
        .expect("the wave's pod");
    let pids = flow
        .argo
        .pod_pids(&flow.case.namespace, &step, "klm")
        .unwrap();
    assert_eq!(pids.len(), 1, "one phase runs klm at a time: {pids:?}");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pids[0].to_string()])
        .status()
        .unwrap();
    assert!(killed.success(), "kill -KILL {}", pids[0]);
    let releaser = release_held_pods(&flow, held);
    let run = flow.wait(&name).await.unwrap();
    releaser.abort();
    run.failed();
    let report = run.report();
    let upgrade_pods = run.workflow["status"]["nodes"]
        .as_object()
        .unwrap()
        .values()
        .filter(|n| n["type"] == "Pod" && n["templateName"] == "upgrade")
        .count();
    assert_eq!(
        upgrade_pods, 1,
        "the wave's pod was not run again\n{report}"
    );
    assert!(
        run.steps
            .iter()
            .any(|(step, phase)| step.starts_with("settle") && phase == "Failed"),
        "settle rolled the wave back and failed it\n{report}"
    );
    let node = flow.case.get_node(flow.case.node(0)).await;
    assert_eq!(
        annotation(&node, STATUS).as_deref(),
        Some("rolled-back"),
        "{report}"
    );
    assert_eq!(host_version(&node).as_deref(), Some("3.27.0"), "{report}");
}

/// A workflow's run is paused with `argo suspend` (klm pause says so): the
/// step in flight finishes, no further step starts, and `argo resume` lets
/// the run go on to its end, every node verified. (The only wait with
/// nothing to watch for is the one that checks nothing happens.)
#[tokio::test]
async fn argo_suspend_mid_wave_starts_nothing_more_until_argo_resume() {
    let Some(rig) = argo_rig().await else { return };
    let flow = Flow::start(rig, CaseSpec::new("wf-suspend", 2, "3.27.0"))
        .await
        .unwrap();
    let (name, _held) = run_until_verifying(&flow).await;
    let suspend = flow.argo().args(["suspend", &name]).output().await.unwrap();
    assert!(
        suspend.status.success(),
        "argo suspend: {}",
        String::from_utf8_lossy(&suspend.stderr)
    );
    // The verification in flight passes and its step's pod ends (a
    // suspended workflow's status is not updated until it is resumed).
    let releaser = release_held_pods(&flow, Vec::new());
    let step_pods: Api<Pod> = Api::namespaced(flow.case.admin.clone(), &flow.case.namespace);
    let of_workflow =
        watcher::Config::default().labels(&format!("workflows.argoproj.io/workflow={name}"));
    let mut events =
        std::pin::pin!(watcher::watcher(step_pods, of_workflow.clone()).applied_objects());
    let step_done = |pod: &Pod, step: &str| {
        pod.name_any().contains(&format!("-{step}-"))
            && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
    };
    let first_wave = tokio::time::timeout(Duration::from_secs(180), async {
        while let Some(Ok(pod)) = events.next().await {
            if step_done(&pod, "upgrade") {
                return pod.name_any();
            }
        }
        String::new()
    })
    .await
    .expect("the first wave's pod ends within 3 minutes");
    // For the next 15 seconds (the controller requeues every second) no
    // further step pod appears: the next wave waits.
    let step_pods: Api<Pod> = Api::namespaced(flow.case.admin.clone(), &flow.case.namespace);
    let mut events = std::pin::pin!(watcher::watcher(step_pods, of_workflow).applied_objects());
    let started = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(Ok(pod)) = events.next().await {
            if pod.name_any().contains("-upgrade-") && pod.name_any() != first_wave {
                return pod.name_any();
            }
        }
        String::new()
    })
    .await;
    assert!(
        started.is_err(),
        "a step started while suspended: {started:?}"
    );
    assert_eq!(
        annotation(&flow.nodes().await[flow.case.node(1)], STATUS),
        None,
        "the second node is untouched while suspended"
    );
    let resume = flow.argo().args(["resume", &name]).output().await.unwrap();
    assert!(
        resume.status.success(),
        "argo resume: {}",
        String::from_utf8_lossy(&resume.stderr)
    );
    let run = flow.wait(&name).await.unwrap();
    releaser.abort();
    run.succeeded();
    let report = run.report();
    for (node, found) in flow.nodes().await {
        assert_eq!(
            annotation(&found, STATUS).as_deref(),
            Some("completed"),
            "{node}\n{report}"
        );
        assert_eq!(host_version(&found).as_deref(), Some("3.28.0"), "{node}");
        assert!(!unschedulable(&found), "{node}");
    }
}
