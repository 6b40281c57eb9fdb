//! `klm drain`: evicts what may go, leaves DaemonSet pods, honours
//! PodDisruptionBudgets.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::PostParams;
use kube::{Api, ResourceExt};

use crate::support::{Case, CaseSpec};

async fn plain_pod(case: &Case, name: &str, node: &str) {
    pod_of_class(case, name, node, None).await;
}

/// A pod `name` (labelled `app=name`) on `node`, of a RuntimeClass if given.
async fn pod_of_class(case: &Case, name: &str, node: &str, class: Option<&str>) {
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"nodeName": node, "runtimeClassName": class,
                 "containers": [{"name": "app", "image": "registry.invalid/app:1"}]}
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

#[tokio::test]
async fn a_kata_scoped_drain_evicts_only_the_releases_kata_pods_and_the_plan_names_them_first() {
    use k8s_openapi::api::node::v1::RuntimeClass;
    use kube::runtime::wait::await_condition;

    let case = Case::start(CaseSpec::new("drainkata", 1, "3.27.0"))
        .await
        .unwrap();
    let node = case.node(0).to_string();
    // A RuntimeClass of the case's release (the fixture suffixes its names).
    let class = format!("kata-qemu-{}", case.namespace);
    Api::<RuntimeClass>::all(case.admin.clone())
        .get(&class)
        .await
        .expect("the release's RuntimeClass");
    plain_pod(&case, "web", &node).await;
    pod_of_class(&case, "sandboxed", &node, Some(&class)).await;
    let pods: Api<Pod> = Api::namespaced(case.admin.clone(), &case.namespace);
    let pdb: PodDisruptionBudget = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "sandboxed"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "sandboxed"}}}
    }))
    .unwrap();
    let budgets = Api::<PodDisruptionBudget>::namespaced(case.admin.clone(), &case.namespace);
    budgets.create(&PostParams::default(), &pdb).await.unwrap();
    // The disruption controller has counted the pod: the budget allows nothing.
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        await_condition(
            budgets.clone(),
            "sandboxed",
            |b: Option<&PodDisruptionBudget>| {
                b.and_then(|b| b.status.as_ref()).is_some_and(|s| {
                    s.current_healthy == Some(1) && s.disruptions_allowed == Some(0)
                })
            },
        ),
    )
    .await
    .expect("the budget's status within 60s")
    .unwrap();

    // The plan, before anything is cordoned: the Kata pod and its budget.
    let plan = case
        .klm(&[
            "plan",
            "--target-version",
            "3.28.0",
            "--drain",
            "--drain-scope",
            "kata",
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    let ns = &case.namespace;
    assert_eq!(plan["drain"]["scope"], "kata", "{plan}");
    let wave = &plan["drain"]["waves"][0];
    assert_eq!(wave[0], 1, "{plan}");
    assert_eq!(
        wave[1][0],
        serde_json::json!({"node": node, "evicts": [format!("{ns}/sandboxed")], "blockedBy": [format!("{ns}/sandboxed")]}),
        "{plan}"
    );
    let text = case
        .klm(&[
            "plan",
            "--target-version",
            "3.28.0",
            "--drain",
            "--drain-scope",
            "kata",
        ])
        .await
        .ok()
        .stdout;
    assert!(
        text.contains(&format!(
            "wave 1 {node}: would evict {ns}/sandboxed; blocked now by PodDisruptionBudget {ns}/sandboxed"
        )),
        "{text}"
    );
    assert!(
        !unschedulable_now(&case, &node).await,
        "the plan cordoned nothing"
    );

    // Without the budget: only the Kata pod goes; the plain pod stays, and says why.
    budgets
        .delete("sandboxed", &Default::default())
        .await
        .unwrap();
    let out = case
        .klm(&[
            "drain",
            "--nodes",
            &node,
            "--drain-scope",
            "kata",
            "--drain-timeout",
            "60s",
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(
        out["nodes"][0]["evicted"],
        serde_json::json!([format!("{ns}/sandboxed")]),
        "{out}"
    );
    assert!(
        out["nodes"][0]["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| {
                s["pod"] == format!("{ns}/web")
                    && s["reason"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("drain scope kata")
            }),
        "{out}"
    );
    assert!(pods.get_opt("sandboxed").await.unwrap().is_none());
    assert!(
        pods.get_opt("web").await.unwrap().is_some(),
        "a pod of no Kata RuntimeClass keeps running"
    );
}

async fn unschedulable_now(case: &Case, node: &str) -> bool {
    case.get_node(node)
        .await
        .spec
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}
