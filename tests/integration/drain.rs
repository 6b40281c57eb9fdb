//! `klm drain`: evicts what may go, leaves DaemonSet pods, honours
//! PodDisruptionBudgets.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::PostParams;
use kube::{Api, ResourceExt};

use crate::support::{Case, CaseSpec};

async fn plain_pod(case: &Case, name: &str, node: &str) {
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "registry.invalid/app:1"}]}
    }))
    .unwrap();
    Api::<Pod>::namespaced(case.admin.clone(), &case.namespace)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
}

#[tokio::test]
async fn drain_evicts_workloads_and_leaves_kata_deploy() {
    let case = Case::start(CaseSpec::new("drain", 1, "3.27.0"))
        .await
        .unwrap();
    let node = case.node(0).to_string();
    plain_pod(&case, "web", &node).await;
    let kata_before = case.kata_pods().await[&node].uid();
    let out = case
        .klm(&[
            "drain",
            "--nodes",
            &node,
            "--drain-timeout",
            "60s",
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    let evicted = out["nodes"][0]["evicted"].as_array().unwrap();
    assert_eq!(
        evicted,
        &vec![serde_json::json!(format!("{}/web", case.namespace))],
        "{out}"
    );
    assert!(
        out["nodes"][0]["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["reason"] == "DaemonSet pod"),
        "{out}"
    );
    let pods: Api<Pod> = Api::namespaced(case.admin.clone(), &case.namespace);
    assert!(
        pods.get_opt("web").await.unwrap().is_none(),
        "the evicted pod is gone when drain returns"
    );
    assert_eq!(
        case.kata_pods().await[&node].uid(),
        kata_before,
        "kata-deploy's pod was not touched"
    );
    // Idempotent: draining again evicts nothing and succeeds.
    let again = case
        .klm(&[
            "drain",
            "--nodes",
            &node,
            "--drain-timeout",
            "30s",
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(again["nodes"][0]["evicted"], serde_json::json!([]));
}

#[tokio::test]
async fn a_pod_disruption_budget_that_allows_nothing_fails_the_drain_at_its_timeout() {
    let case = Case::start(CaseSpec::new("pdb", 1, "3.27.0"))
        .await
        .unwrap();
    let node = case.node(0).to_string();
    plain_pod(&case, "db", &node).await;
    let pdb: PodDisruptionBudget = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "db"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}}
    }))
    .unwrap();
    Api::<PodDisruptionBudget>::namespaced(case.admin.clone(), &case.namespace)
        .create(&PostParams::default(), &pdb)
        .await
        .unwrap();
    let out = case
        .klm(&["drain", "--nodes", &node, "--drain-timeout", "8s"])
        .await
        .code(1);
    assert!(
        out.stderr.contains("db"),
        "the message names the pod that stays: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("PodDisruptionBudget"),
        "the hint names the cause: {}",
        out.stderr
    );
    let pods: Api<Pod> = Api::namespaced(case.admin.clone(), &case.namespace);
    assert!(
        pods.get_opt("db").await.unwrap().is_some(),
        "the protected pod still runs"
    );
}
