//! A partial run (issue 25, "First"): the proposal's canary flow, a run
//! whose selection takes only part of the release's nodes, in daemonset
//! mode. The release keeps `updateStrategy.type=OnDelete` after it (which
//! protects the nodes outside the run from an unverified restart), and
//! that is the normal state of a partial run, not a failure: the run
//! succeeds and says so (its summary, `klm status`, an Event on each node
//! left behind); the run that upgrades the last of them restores the
//! user's values. Both through `klm upgrade` and through the
//! WorkflowTemplate's own steps.

use serde_json::Value;

use crate::run_end::{exit_handler, start, submit, wave};
use crate::support::{CASE_LABEL, Case, CaseSpec, host_version};
use crate::upgrade::verification_pod;
use crate::workflow::Workflow;

const CANARY: &str = "klm.test/canary";

/// A case of two nodes at 3.27.0 whose first node is labelled the canary;
/// the user's values as installed.
async fn canary_case(name: &str) -> (Case, Value) {
    let case = Case::start(CaseSpec::new(name, 2, "3.27.0")).await.unwrap();
    case.label(case.node(0), CANARY, "true").await;
    let installed = case.user_values().await;
    (case, installed)
}

fn canary_selector(case: &Case) -> String {
    format!("{CASE_LABEL}={},{CANARY}=true", case.namespace)
}

fn all_selector(case: &Case) -> String {
    format!("{CASE_LABEL}={}", case.namespace)
}

/// After the canary run: the run completed, the canary at the target, the
/// other node untouched, the release on OnDelete (on record, so the next
/// run restores it), and `klm status` and the Event on the node left
/// behind say so.
async fn after_the_canary(case: &Case, run: &str) {
    let record = case.run_record().await.unwrap();
    assert_eq!(record["runId"], run);
    assert_eq!(record["state"], "completed", "{record:#}");
    assert_eq!(record["mechanics"]["updateStrategy.type"], "OnDelete");
    let [canary, rest] = [case.node(0), case.node(1)];
    assert_eq!(
        host_version(&case.get_node(canary).await).as_deref(),
        Some("3.28.0")
    );
    assert_eq!(
        host_version(&case.get_node(rest).await).as_deref(),
        Some("3.27.0"),
        "the node outside the run did not restart"
    );
    assert_eq!(
        case.user_values().await["updateStrategy"]["type"],
        "OnDelete",
        "OnDelete protects the node outside the run"
    );
    let status = case
        .klm(&["status", "--node-selector", &all_selector(case)])
        .await
        .ok();
    assert!(
        status.stdout.contains(&format!(
            "the release keeps updateStrategy.type=\"OnDelete\", verification.pod=\"\" (set by run {run} for its own mechanics) until the nodes still on an older kata-deploy are upgraded ({rest})"
        )),
        "{}",
        status.stdout
    );
    let pending: Vec<String> = case
        .node_events(rest)
        .await
        .into_iter()
        .filter(|(reason, _, _)| reason == "KataUpgradePending")
        .map(|(_, _, note)| note)
        .collect();
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert!(
        pending[0].contains("keeps updateStrategy.type=\"OnDelete\""),
        "{}",
        pending[0]
    );
}

/// After the run for the rest: every node at the target, and the release's
/// values exactly the user's again.
async fn after_the_rest(case: &Case, run: &str, installed: &Value) {
    let record = case.run_record().await.unwrap();
    assert_eq!(record["runId"], run);
    assert_eq!(record["state"], "completed", "{record:#}");
    assert_eq!(record["mechanics"], serde_json::json!({}));
    for node in &case.nodes {
        assert_eq!(
            host_version(&case.get_node(node).await).as_deref(),
            Some("3.28.0"),
            "{node}"
        );
    }
    assert_eq!(
        &case.user_values().await,
        installed,
        "the run that upgraded the last node restored the user's values"
    );
    let status = case
        .klm(&["status", "--node-selector", &all_selector(case)])
        .await
        .ok();
    assert!(!status.stdout.contains("keeps"), "{}", status.stdout);
}

#[tokio::test]
async fn a_canary_run_succeeds_and_the_run_for_the_rest_restores_the_users_values() {
    let (case, installed) = canary_case("canary1").await;
    let dir = tempfile::tempdir().unwrap();
    let pod = verification_pod(dir.path(), &[]).display().to_string();
    let upgrade = |selector: String, run: &'static str| {
        let pod = pod.clone();
        let case = &case;
        async move {
            let args = [
                "upgrade",
                "--target-version",
                "3.28.0",
                "--node-selector",
                &selector,
                "--verification-pod",
                &pod,
                "--verification-namespace",
                &case.namespace,
                "--run-id",
                run,
                "--restart-timeout",
                "60s",
            ];
            let out = case.klm(&args).await;
            #[allow(clippy::print_stderr)]
            {
                eprintln!(
                    "klm upgrade: exit {}\n{}{}",
                    out.code, out.stdout, out.stderr
                );
            }
            out
        }
    };

    let canary = upgrade(canary_selector(&case), "canary").await.ok();
    assert!(
        canary.stdout.contains(&format!(
            "every planned node is at 3.28.0; the release stays on updateStrategy.type=\"OnDelete\", verification.pod=\"\" until the nodes still on an older kata-deploy are upgraded ({})",
            case.node(1)
        )),
        "the run's summary says what the release keeps: {}",
        canary.stdout
    );
    after_the_canary(&case, "canary").await;

    let rest = upgrade(all_selector(&case), "rest").await.ok();
    assert!(
        rest.stdout.contains(&format!(
            "skipped, completed at the target already: {}",
            case.node(0)
        )),
        "{}",
        rest.stdout
    );
    after_the_rest(&case, "rest", &installed).await;
}

/// One run through the WorkflowTemplate's steps, as Argo runs
/// deploy-version; `finish-run` must succeed.
async fn by_the_steps(case: &Case, wf: &Workflow, run: &str, selector: &str) {
    let dir = tempfile::tempdir().unwrap();
    let submission = submit(case, wf, run, &[("node-selector", selector)], dir.path());
    for index in start(&submission).await {
        wave(&submission, &index.to_string()).await.ok();
    }
    let finished = submission.step("finish-run", &[]).await.ok();
    assert!(
        finished.stdout.contains("the release keeps") == (run == "wf-canary"),
        "{}",
        finished.stdout
    );
    exit_handler(&submission, "Succeeded", "").await.ok();
}

#[tokio::test]
async fn a_canary_workflow_succeeds_and_the_workflow_for_the_rest_restores_the_users_values() {
    let (case, installed) = canary_case("canary2").await;
    let dir = tempfile::tempdir().unwrap();
    let wf = Workflow::render(&case, &verification_pod(dir.path(), &[])).await;
    by_the_steps(&case, &wf, "wf-canary", &canary_selector(&case)).await;
    after_the_canary(&case, "wf-canary").await;
    by_the_steps(&case, &wf, "wf-rest", &all_selector(&case)).await;
    after_the_rest(&case, "wf-rest", &installed).await;
}
