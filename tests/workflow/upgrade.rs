//! Upgrades that run to their end: node by node, in waves, job mode, a
//! failed verification rolled back, `rollback-node` after a success, and a
//! larger fleet.

use serde_json::json;

use crate::flow::{
    Flow, STATUS, VERIFIED, annotation, argo_rig, host_version, unschedulable,
    verification_parameter, verification_pod, verification_pod_broken_at,
};
use crate::support::CaseSpec;

/// The selector of a case's nodes (the rig holds other cases' nodes too).
pub fn selector(flow: &Flow) -> String {
    format!("klm.test/case={}", flow.case.namespace)
}

fn job_values(case_label: &str) -> Vec<String> {
    vec![
        "deploymentMode=job".into(),
        format!("job.nodeSelector.klm\\.test/case={case_label}"),
    ]
}

/// Asserts every node of the case ended completed at `version`, schedulable,
/// with the simulated host at `version`.
pub async fn assert_all_completed(flow: &Flow, version: &str, report: &str) {
    for (name, node) in flow.nodes().await {
        assert_eq!(
            annotation(&node, STATUS).as_deref(),
            Some("completed"),
            "{name}\n{report}"
        );
        assert_eq!(
            annotation(&node, VERIFIED).as_deref(),
            Some(version),
            "{name}\n{report}"
        );
        assert_eq!(
            host_version(&node).as_deref(),
            Some(version),
            "{name}\n{report}"
        );
        assert!(!unschedulable(&node), "{name} is still cordoned\n{report}");
    }
}

#[tokio::test]
async fn daemonset_mode_node_by_node() {
    let Some(rig) = argo_rig().await else { return };
    // The release lives in the case's namespace (never kube-system) with its
    // own env.multiInstallSuffix: every step must find it there.
    let flow = Flow::start(rig, CaseSpec::new("wf-ds", 3, "3.27.0"))
        .await
        .unwrap();
    let values_before = flow.release_values().await;
    let selector = selector(&flow);
    let run = flow
        .run(
            None,
            &[
                ("target-version", "3.28.0"),
                ("batch-size", "1"),
                ("node-selector", &selector),
            ],
        )
        .await
        .unwrap();
    run.succeeded();
    let report = run.report();
    assert_all_completed(&flow, "3.28.0", &report).await;
    assert_eq!(flow.case.release_state().await.1, "3.28.0", "{report}");
    assert_eq!(
        flow.release_values().await,
        values_before,
        "the values klm set for its own mechanics are restored\n{report}"
    );
    assert_eq!(
        flow.case.run_record().await.unwrap()["state"],
        json!("completed"),
        "{report}"
    );
    assert!(
        run.workflow["status"]["nodes"]
            .as_object()
            .unwrap()
            .values()
            .any(|n| n["displayName"]
                .as_str()
                .is_some_and(|d| d.ends_with(".onExit"))
                && n["phase"] == "Succeeded"),
        "the exit handler ran\n{report}"
    );
}

#[tokio::test]
async fn pools_in_order_with_a_canary_and_growing_waves() {
    let Some(rig) = argo_rig().await else { return };
    let flow = Flow::start(rig, CaseSpec::new("wf-pools", 5, "3.27.0"))
        .await
        .unwrap();
    // n1 is in pool a; n2 to n5 in pool b, which goes first.
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> =
        kube::Api::all(flow.case.admin.clone());
    for (i, name) in flow.case.nodes.iter().enumerate() {
        let pool = if i == 0 { "a" } else { "b" };
        let patch = json!({"metadata": {"labels": {"klm.test/pool": pool}}});
        nodes
            .patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .unwrap();
    }
    let selector = selector(&flow);
    let run = flow
        .run(
            None,
            &[
                ("target-version", "3.28.0"),
                ("node-selector", &selector),
                ("pool-label", "klm.test/pool"),
                ("pool-order", "b,a"),
                ("canary-size", "1"),
                ("batch-size", "1"),
                ("batch-growth", "exponential"),
            ],
        )
        .await
        .unwrap();
    run.succeeded();
    let report = run.report();
    let n = |i: usize| flow.case.node(i).to_string();
    // The canary, then pool b growing (1, 2), then pool a from 1 again: no wave mixes pools.
    assert_eq!(
        flow.case.run_record().await.unwrap()["waves"],
        json!([[n(1)], [n(2)], [n(3), n(4)], [n(0)]]),
        "{report}"
    );
    assert_all_completed(&flow, "3.28.0", &report).await;
}

#[tokio::test]
async fn a_pools_own_pod_failing_stops_the_run_in_that_pool_and_the_next_pool_is_untouched() {
    let Some(rig) = argo_rig().await else { return };
    let flow = Flow::start(rig, CaseSpec::new("wf-poolpod", 4, "3.27.0"))
        .await
        .unwrap();
    // n1: pool cpu (the default pod); n2, n3: pool gpu, whose own pod fails
    // on the new version; n4: pool tdx, after gpu.
    let pools = ["cpu", "gpu", "gpu", "tdx"];
    label_pools(&flow, &pools).await;
    flow.install_chart_with(
        &verification_pod(&[], "succeed"),
        &[("gpu", &verification_pod_broken_at("3.28.0", &[]))],
    )
    .await
    .unwrap();
    let selector = selector(&flow);
    let run = flow
        .run(
            None,
            &[
                ("target-version", "3.28.0"),
                ("node-selector", &selector),
                ("pool-label", "klm.test/pool"),
                ("pool-order", "cpu,gpu,tdx"),
            ],
        )
        .await
        .unwrap();
    run.failed();
    let report = run.report();
    let node = |i: usize| flow.case.node(i).to_string();
    let nodes = flow.nodes().await;
    let status = |i: usize| annotation(&nodes[&node(i)], STATUS);
    assert_eq!(
        status(0).as_deref(),
        Some("completed"),
        "cpu passed with the default pod\n{report}"
    );
    assert_eq!(
        status(1).as_deref(),
        Some("rolled-back"),
        "gpu's own pod failed it\n{report}"
    );
    assert_eq!(
        host_version(&nodes[&node(1)]).as_deref(),
        Some("3.27.0"),
        "{report}"
    );
    for i in [2, 3] {
        assert_eq!(status(i), None, "{} is untouched\n{report}", node(i));
        assert_eq!(
            host_version(&nodes[&node(i)]).as_deref(),
            Some("3.27.0"),
            "{report}"
        );
        assert!(!unschedulable(&nodes[&node(i)]), "{report}");
    }
    assert_eq!(
        flow.case.run_record().await.unwrap()["state"],
        json!("failed"),
        "{report}"
    );
}

/// Puts the case's nodes in pools (the `klm.test/pool` label), in node order.
async fn label_pools(flow: &Flow, pools: &[&str]) {
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> =
        kube::Api::all(flow.case.admin.clone());
    for (name, pool) in flow.case.nodes.iter().zip(pools) {
        let patch = json!({"metadata": {"labels": {"klm.test/pool": pool}}});
        nodes
            .patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn job_mode_in_waves_of_two() {
    let Some(rig) = argo_rig().await else { return };
    let flow = Flow::start_with(rig, CaseSpec::new("wf-job", 4, "3.32.0"), job_values)
        .await
        .unwrap();
    let selector = selector(&flow);
    let run = flow
        .run(
            None,
            &[
                ("target-version", "3.33.0"),
                ("batch-size", "2"),
                ("node-selector", &selector),
            ],
        )
        .await
        .unwrap();
    run.succeeded();
    let report = run.report();
    assert_all_completed(&flow, "3.33.0", &report).await;
    let values = flow.release_values().await;
    assert!(
        values["job"].get("nodes").is_none(),
        "job.nodes is the user's again: {values}\n{report}"
    );
}

#[tokio::test]
async fn a_failed_verification_rolls_its_node_back_and_stops() {
    let Some(rig) = argo_rig().await else { return };
    let flow = Flow::start(rig, CaseSpec::new("wf-fail", 3, "3.27.0"))
        .await
        .unwrap();
    let [first, second, third] = [flow.case.node(0), flow.case.node(1), flow.case.node(2)];
    let pod = verification_parameter(&verification_pod_broken_at("3.28.0", &[second]));
    let selector = selector(&flow);
    let run = flow
        .run(
            None,
            &[
                ("target-version", "3.28.0"),
                ("batch-size", "1"),
                ("node-selector", &selector),
                ("verification-pod", &pod),
            ],
        )
        .await
        .unwrap();
    run.failed();
    let report = run.report();
    let nodes = flow.nodes().await;
    // The first wave passed and stays completed.
    assert_eq!(
        annotation(&nodes[first], STATUS).as_deref(),
        Some("completed"),
        "{report}"
    );
    assert_eq!(
        host_version(&nodes[first]).as_deref(),
        Some("3.28.0"),
        "{report}"
    );
    // The second was rolled back to the version it ran before, and serves again.
    assert_eq!(
        annotation(&nodes[second], STATUS).as_deref(),
        Some("rolled-back"),
        "{report}"
    );
    assert_eq!(
        host_version(&nodes[second]).as_deref(),
        Some("3.27.0"),
        "{report}"
    );
    assert!(!unschedulable(&nodes[second]), "{report}");
    // The third was never touched.
    assert_eq!(annotation(&nodes[third], STATUS), None, "{report}");
    assert_eq!(
        host_version(&nodes[third]).as_deref(),
        Some("3.27.0"),
        "{report}"
    );
    assert!(!unschedulable(&nodes[third]), "{report}");
    assert_eq!(
        flow.case.run_record().await.unwrap()["state"],
        json!("failed"),
        "{report}"
    );
    assert!(
        run.logs.contains(second),
        "the step logs name the failed node\n{report}"
    );

    // Argo's custom metrics tell the same, labelled by release and target.
    let metrics = flow
        .argo
        .metrics()
        .expect("the controller's metrics endpoint answers");
    let release = format!("{}/{}", flow.case.namespace, flow.case.release);
    let sample = |name: &str, result: &str| -> Option<f64> {
        metrics
            .lines()
            .find(|line| {
                line.starts_with(&format!("{name}{{"))
                    && line.contains(&format!("release=\"{release}\""))
                    && line.contains(&format!("result=\"{result}\""))
                    && line.contains("target_version=\"3.28.0\"")
            })
            .and_then(|line| line.rsplit(' ').next()?.parse().ok())
    };
    let nodes_total = "argo_workflows_kata_lifecycle_manager_nodes_total";
    let waves = "argo_workflows_kata_lifecycle_manager_wave_duration_seconds_count";
    let runs = "argo_workflows_kata_lifecycle_manager_runs_total";
    let ours: Vec<&str> = metrics
        .lines()
        .filter(|l| l.contains("kata_lifecycle_manager") && l.contains(&release))
        .collect();
    assert_eq!(sample(nodes_total, "completed"), Some(1.0), "{ours:#?}");
    assert_eq!(sample(nodes_total, "rolled-back"), Some(1.0), "{ours:#?}");
    assert_eq!(sample(nodes_total, "failed"), Some(0.0), "{ours:#?}");
    assert_eq!(sample(waves, "Succeeded"), Some(1.0), "{ours:#?}");
    assert_eq!(sample(waves, "Failed"), Some(1.0), "{ours:#?}");
    assert_eq!(sample(runs, "Failed"), Some(1.0), "{ours:#?}");
}

#[tokio::test]
async fn a_failure_budget_of_one_rolls_the_failed_node_back_and_the_run_goes_on() {
    let Some(rig) = argo_rig().await else { return };
    let flow = Flow::start(rig, CaseSpec::new("wf-budget", 3, "3.27.0"))
        .await
        .unwrap();
    let [first, second, third] = [flow.case.node(0), flow.case.node(1), flow.case.node(2)];
    let pod = verification_parameter(&verification_pod_broken_at("3.28.0", &[second]));
    let selector = selector(&flow);
    let run = flow
        .run(
            None,
            &[
                ("target-version", "3.28.0"),
                ("batch-size", "1"),
                ("max-failed-nodes", "1"),
                ("node-selector", &selector),
                ("verification-pod", &pod),
            ],
        )
        .await
        .unwrap();
    // The failure fit the budget: the workflow went on and succeeded.
    run.succeeded();
    let report = run.report();
    let nodes = flow.nodes().await;
    for node in [first, third] {
        assert_eq!(
            annotation(&nodes[node], STATUS).as_deref(),
            Some("completed"),
            "{node}\n{report}"
        );
        assert_eq!(
            host_version(&nodes[node]).as_deref(),
            Some("3.28.0"),
            "{node}\n{report}"
        );
        assert!(!unschedulable(&nodes[node]), "{node}\n{report}");
    }
    assert_eq!(
        annotation(&nodes[second], STATUS).as_deref(),
        Some("rolled-back"),
        "{report}"
    );
    assert_eq!(
        host_version(&nodes[second]).as_deref(),
        Some("3.27.0"),
        "{report}"
    );
    assert!(!unschedulable(&nodes[second]), "{report}");
    let record = flow.case.run_record().await.unwrap();
    assert_eq!(
        record["state"],
        json!("completed-with-failures"),
        "{report}"
    );
    assert!(
        record["failedNodes"][second]
            .as_str()
            .is_some_and(|why| why.contains("wave 2")),
        "{record}\n{report}"
    );
    assert!(
        run.logs
            .contains("1 of the 1 failed node(s) the run allows"),
        "settle's log says the failure fit the budget\n{report}"
    );
}

#[tokio::test]
async fn rollback_node_returns_a_node_to_its_version_before_the_run() {
    let Some(rig) = argo_rig().await else { return };
    let flow = Flow::start(rig, CaseSpec::new("wf-rbnode", 2, "3.27.0"))
        .await
        .unwrap();
    let selector = selector(&flow);
    flow.run(
        None,
        &[("target-version", "3.28.0"), ("node-selector", &selector)],
    )
    .await
    .unwrap()
    .succeeded();
    let node = flow.case.node(1).to_string();
    // Exactly the command the README shows: no target-version.
    let run = flow
        .run(Some("rollback-node"), &[("node-name", &node)])
        .await
        .unwrap();
    run.succeeded();
    let report = run.report();
    let nodes = flow.nodes().await;
    assert_eq!(
        host_version(&nodes[&node]).as_deref(),
        Some("3.27.0"),
        "{report}"
    );
    assert_eq!(
        annotation(&nodes[&node], STATUS).as_deref(),
        Some("rolled-back"),
        "{report}"
    );
    assert!(
        !unschedulable(&nodes[&node]),
        "released after its re-verification\n{report}"
    );
    let other = flow.case.node(0);
    assert_eq!(
        host_version(&nodes[other]).as_deref(),
        Some("3.28.0"),
        "the other node is untouched\n{report}"
    );
}

/// Job mode from 4.1 on the real controller: the release moves once without
/// hooks, each wave runs klm's copy of the release's own dispatcher; a wave
/// that fails verification is rolled back on its own node, and no node is
/// ever pruned.
#[tokio::test]
async fn job_mode_from_4_1_waves_and_a_rollback_prune_nothing() {
    let Some(rig) = argo_rig().await else { return };
    let flow = Flow::start_with(rig, CaseSpec::new("wf-job41", 3, "4.1.0"), |_| {
        vec!["deploymentMode=job".into()]
    })
    .await
    .unwrap();
    let [first, second, third] = [flow.case.node(0), flow.case.node(1), flow.case.node(2)];
    let pod = verification_parameter(&verification_pod_broken_at("4.2.0", &[second]));
    let selector = selector(&flow);
    let run = flow
        .run(
            None,
            &[
                ("target-version", "4.2.0"),
                ("batch-size", "1"),
                ("node-selector", &selector),
                ("verification-pod", &pod),
            ],
        )
        .await
        .unwrap();
    run.failed();
    let report = run.report();
    let nodes = flow.nodes().await;
    let expected = [
        (first, "completed", "4.2.0"),
        (second, "rolled-back", "4.1.0"),
    ];
    for (node, status, version) in expected {
        assert_eq!(
            annotation(&nodes[node], STATUS).as_deref(),
            Some(status),
            "{node}\n{report}"
        );
        assert_eq!(
            host_version(&nodes[node]).as_deref(),
            Some(version),
            "{node}\n{report}"
        );
        assert!(!unschedulable(&nodes[node]), "{node}\n{report}");
    }
    assert_eq!(annotation(&nodes[third], STATUS), None, "{report}");
    assert_eq!(
        host_version(&nodes[third]).as_deref(),
        Some("4.1.0"),
        "the third node kept Kata: {report}"
    );
    for (name, node) in &nodes {
        assert_eq!(
            annotation(node, "rig.klm.test/prunes"),
            None,
            "{name} was pruned\n{report}"
        );
    }
    let values = flow.release_values().await;
    assert!(
        values.get("job").and_then(|j| j.get("nodes")).is_none(),
        "klm set no job.nodes: {values}\n{report}"
    );
}

/// The proposal's canary flow (issue 25, "First"), in daemonset mode: one
/// labelled node first, then the rest. Both workflows succeed; between them
/// the release keeps OnDelete (the node not yet upgraded must not restart
/// unverified), on record for the next run; the workflow that upgrades the
/// last node gives the user's values back.
#[tokio::test]
async fn a_canary_node_first_then_the_rest_both_succeed_and_the_values_come_back() {
    let Some(rig) = argo_rig().await else { return };
    let flow = Flow::start(rig, CaseSpec::new("wf-canary", 2, "3.27.0"))
        .await
        .unwrap();
    let values_before = flow.release_values().await;
    let (canary, rest) = (flow.case.node(0).to_string(), flow.case.node(1).to_string());
    flow.case.label(&canary, "klm.test/canary", "true").await;
    let all = selector(&flow);
    let only_canary = format!("{all},klm.test/canary=true");

    let run = flow
        .run(
            None,
            &[
                ("target-version", "3.28.0"),
                ("node-selector", &only_canary),
            ],
        )
        .await
        .unwrap();
    run.succeeded();
    let report = run.report();
    let nodes = flow.nodes().await;
    assert_eq!(
        host_version(&nodes[&canary]).as_deref(),
        Some("3.28.0"),
        "{report}"
    );
    assert_eq!(
        host_version(&nodes[&rest]).as_deref(),
        Some("3.27.0"),
        "the node outside the canary run did not restart\n{report}"
    );
    let record = flow.case.run_record().await.unwrap();
    assert_eq!(record["state"], json!("completed"), "{report}");
    assert_eq!(
        record["mechanics"]["updateStrategy.type"],
        json!("OnDelete"),
        "what stays on the release is on record for the next run\n{report}"
    );
    assert_eq!(
        flow.release_values().await["updateStrategy"]["type"],
        json!("OnDelete"),
        "{report}"
    );

    let run = flow
        .run(
            None,
            &[("target-version", "3.28.0"), ("node-selector", &all)],
        )
        .await
        .unwrap();
    run.succeeded();
    let report = run.report();
    assert_all_completed(&flow, "3.28.0", &report).await;
    assert_eq!(
        flow.release_values().await,
        values_before,
        "the run that upgraded the last node restored the user's values\n{report}"
    );
}
