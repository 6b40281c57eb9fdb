//! Metric gates against a real Prometheus (Debian's, on loopback), which
//! scrapes the rig's simulated `kata_shim_sandbox_create_failures_total` per
//! node: a node annotated to fail at a version makes it climb while it runs
//! that version.

use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::support::{Case, CaseSpec, annotation, host_version, unschedulable};
use crate::upgrade::verification_pod;
use klm_rig::metrics::{FAILURES_METRIC, SANDBOX_FAILURES_AT};

const STATUS: &str = "katacontainers.io/kata-lifecycle-manager-status";

/// The query of a case: any of its nodes failing to create sandboxes.
fn failing(case: &Case) -> String {
    format!("{FAILURES_METRIC}{{node=~\"{}-.*\"}} > 0", case.namespace)
}

/// `klm upgrade` of the case's nodes to 3.28.0, node by node, with `extra`.
async fn upgrade(case: &Case, pod: &str, extra: &[&str]) -> crate::support::Klm {
    let selector = format!("{}={}", crate::support::CASE_LABEL, case.namespace);
    let mut args = vec![
        "upgrade",
        "--target-version",
        "3.28.0",
        "--node-selector",
        &selector,
        "--verification-pod",
        pod,
        "--verification-namespace",
        &case.namespace,
        "--restart-timeout",
        "60s",
    ];
    args.extend_from_slice(extra);
    case.klm(&args).await
}

#[tokio::test]
async fn a_metric_that_goes_bad_after_the_canary_rolls_it_back_and_stops_the_run() {
    let case = Case::start(CaseSpec::new("metricbad", 3, "3.27.0"))
        .await
        .unwrap();
    let Some(prometheus) = case.rig.prometheus().await.unwrap() else {
        return;
    };
    let canary = case.node(0);
    let nodes: kube::Api<Node> = kube::Api::all(case.admin.clone());
    let broken = json!({"metadata": {"annotations": {SANDBOX_FAILURES_AT: "3.28.0"}}});
    nodes
        .patch(canary, &PatchParams::default(), &Patch::Merge(&broken))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pod = verification_pod(dir.path(), &[]).display().to_string();
    let query = failing(&case);
    let failed = upgrade(
        &case,
        &pod,
        &[
            "--canary-size",
            "1",
            "--gate",
            "canary",
            "--gate-query",
            &query,
            "--prometheus-url",
            &prometheus.url,
            "--gate-query-for",
            "3s",
            "--gate-query-interval",
            "1s",
        ],
    )
    .await
    .code(1);
    // The query's answer is in the failure: the series that went bad.
    assert!(
        failed.stderr.contains(&format!("node=\"{canary}\"}}"))
            && failed.stderr.contains("rolled back"),
        "{}\n{}",
        failed.stdout,
        failed.stderr
    );
    let n = case.get_node(canary).await;
    assert_eq!(annotation(&n, STATUS).as_deref(), Some("rolled-back"));
    assert_eq!(host_version(&n).as_deref(), Some("3.27.0"));
    assert!(!unschedulable(&n));
    for node in [case.node(1), case.node(2)] {
        let n = case.get_node(node).await;
        assert_eq!(annotation(&n, STATUS), None, "{node} is untouched");
        assert_eq!(host_version(&n).as_deref(), Some("3.27.0"), "{node}");
    }
    let record = case.run_record().await.unwrap();
    assert_eq!(record["state"], "failed", "{record}");
    assert_eq!(record["metricQuery"]["query"], query.as_str(), "{record}");
    let status = case.klm(&["status"]).await.ok();
    assert!(
        status
            .stdout
            .contains(&format!("metric gates: Prometheus query {query:?} healthy")),
        "{}",
        status.stdout
    );
}

#[tokio::test]
async fn a_healthy_metric_lets_every_wave_go_on() {
    let case = Case::start(CaseSpec::new("metricok", 3, "3.27.0"))
        .await
        .unwrap();
    let Some(prometheus) = case.rig.prometheus().await.unwrap() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pod = verification_pod(dir.path(), &[]).display().to_string();
    let query = failing(&case);
    let ran = upgrade(
        &case,
        &pod,
        &[
            "--gate-query",
            &query,
            "--gate-query-every-wave",
            "--prometheus-url",
            &prometheus.url,
            "--gate-query-for",
            "2s",
            "--gate-query-interval",
            "1s",
        ],
    )
    .await
    .ok();
    // A gate before waves 2 and 3, each asking the query once.
    assert_eq!(
        ran.stdout
            .matches("the metric query was healthy over the last 2s")
            .count(),
        2,
        "{}",
        ran.stdout
    );
    for node in &case.nodes {
        let n = case.get_node(node).await;
        assert_eq!(
            annotation(&n, STATUS).as_deref(),
            Some("completed"),
            "{node}"
        );
        assert_eq!(host_version(&n).as_deref(), Some("3.28.0"), "{node}");
    }
    assert_eq!(case.run_record().await.unwrap()["state"], "completed");
}

#[tokio::test]
async fn a_query_prometheus_refuses_or_a_prometheus_that_does_not_answer_changes_nothing() {
    let case = Case::start(CaseSpec::new("metricin", 2, "3.27.0"))
        .await
        .unwrap();
    let Some(prometheus) = case.rig.prometheus().await.unwrap() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let pod = verification_pod(dir.path(), &[]).display().to_string();
    let gate = |query: &'static str, url: String| {
        [
            "--canary-size".to_string(),
            "1".into(),
            "--gate".into(),
            "canary".into(),
            "--gate-query".into(),
            query.into(),
            "--prometheus-url".into(),
            url,
        ]
    };
    let bad = gate("sum(", prometheus.url.clone());
    let bad: Vec<&str> = bad.iter().map(String::as_str).collect();
    let refused = upgrade(&case, &pod, &bad).await.code(2);
    assert!(
        refused.stderr.contains("--gate-query \"sum(\"")
            && refused.stderr.contains("Prometheus refused the query"),
        "{}",
        refused.stderr
    );
    // Nothing listens on a port just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let away = gate("up", format!("http://127.0.0.1:{port}"));
    let away: Vec<&str> = away.iter().map(String::as_str).collect();
    let unanswered = upgrade(&case, &pod, &away).await.code(3);
    assert!(
        unanswered.stderr.contains("no answer from Prometheus"),
        "{}",
        unanswered.stderr
    );
    assert!(case.run_record().await.is_none(), "no run was recorded");
    for node in &case.nodes {
        assert_eq!(annotation(&case.get_node(node).await, STATUS), None);
    }
}
