//! What klm says about a fleet must be true (issue 25, item 10): `klm plan`
//! and `klm upgrade --dry-run` agree once nodes are completed at the target,
//! and neither says "no nodes matched" of nodes it skipped; `uncordon` of a
//! schedulable node no run holds does not claim it was unschedulable before
//! a run; `klm status` of a release that is not there says so.

use crate::support::{CASE_LABEL, Case, CaseSpec};
use crate::upgrade::verification_pod;

#[tokio::test]
async fn plan_uncordon_and_status_say_what_is_true() {
    let case = Case::start(CaseSpec::new("views", 2, "3.27.0"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pod = verification_pod(dir.path(), &[]).display().to_string();
    let [n1, n2] = [case.node(0), case.node(1)];
    let all = format!("{CASE_LABEL}={}", case.namespace);
    let only_n1 = format!("kubernetes.io/hostname={n1}");
    let upgrade_n1 = [
        "upgrade",
        "--target-version",
        "3.28.0",
        "--node-selector",
        &only_n1,
        "--verification-pod",
        &pod,
        "--verification-namespace",
        &case.namespace,
        "--restart-timeout",
        "60s",
    ];
    case.klm(&upgrade_n1).await.ok();

    let before = case.snapshot().await;
    for selector in [&all, &only_n1] {
        let flags = [
            "--target-version",
            "3.28.0",
            "--node-selector",
            selector.as_str(),
            "--verification-pod",
            &pod,
            "--verification-namespace",
            &case.namespace,
        ];
        let plan = case.klm(&[&["plan"][..], &flags[..]].concat()).await.ok();
        let dry_run = case
            .klm(&[&["upgrade", "--dry-run"][..], &flags[..]].concat())
            .await
            .ok();
        assert_eq!(plan.stdout, dry_run.stdout, "plan and --dry-run agree");
        assert!(plan.stdout.contains(n1), "{}", plan.stdout);
        assert!(!plan.stdout.contains("No nodes matched"), "{}", plan.stdout);
        if selector == &only_n1 {
            assert!(
                plan.stdout.contains(&format!(
                    "Every node matched by label selector \"{only_n1}\" is completed at the target version already: nothing to do."
                )),
                "{}",
                plan.stdout
            );
        } else {
            assert!(
                plan.stdout
                    .contains(&format!("skipped (completed at the target version): {n1}"))
                    && plan.stdout.contains(&format!("wave 1: {n2}")),
                "{}",
                plan.stdout
            );
        }
    }

    // A schedulable node no run holds: nothing to do, and said so.
    let uncordon = case.klm(&["uncordon", "--nodes", n2]).await.ok();
    assert!(
        !uncordon.stdout.contains("unschedulable before the run"),
        "{}",
        uncordon.stdout
    );
    assert!(
        uncordon.stdout.contains(&format!(
            "{n2}: schedulable, and no run holds it: nothing to do"
        )),
        "{}",
        uncordon.stdout
    );
    assert_eq!(
        case.snapshot().await,
        before,
        "plan and uncordon changed nothing"
    );

    // No such release: status says so before its table.
    let status = case
        .klm(&[
            "status",
            "--helm-release",
            "no-such-release",
            "--node-selector",
            &all,
        ])
        .await
        .ok();
    assert!(
        status.stdout.starts_with(&format!(
            "Helm release no-such-release was not found in namespace {}: kata-deploy's pods and revision are not shown",
            case.namespace
        )),
        "{}",
        status.stdout
    );
}

/// Creates Kata pods (of the case's RuntimeClass) on one node of a case, as
/// an application would, and waits until each runs.
struct KataPods {
    api: kube::Api<k8s_openapi::api::core::v1::Pod>,
    node: String,
    class: String,
}

impl KataPods {
    fn on(case: &Case, node: &str) -> KataPods {
        KataPods {
            api: kube::Api::namespaced(case.admin.clone(), &case.namespace),
            node: node.to_string(),
            class: format!("kata-qemu-{}", case.namespace),
        }
    }

    /// Creates pod `name` labelled `app=<app>` and waits, watching, until it runs.
    async fn run(&self, name: &str, app: &str) {
        use k8s_openapi::api::core::v1::Pod;
        use kube::runtime::wait::await_condition;
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"app": app}},
            "spec": {"nodeName": self.node, "runtimeClassName": self.class,
                     "containers": [{"name": "app", "image": "registry.invalid/app:1"}]}
        }))
        .unwrap();
        self.api
            .create(&kube::api::PostParams::default(), &pod)
            .await
            .unwrap();
        tokio::time::timeout(
            std::time::Duration::from_secs(60),
            await_condition(self.api.clone(), name, |p: Option<&Pod>| {
                p.and_then(|p| p.status.as_ref()).is_some_and(|s| {
                    s.phase.as_deref() == Some("Running") && s.start_time.is_some()
                })
            }),
        )
        .await
        .expect("the pod runs within 60s")
        .unwrap();
    }
}

#[tokio::test]
async fn status_sandboxes_names_the_kata_pods_still_on_the_runtime_they_started_with() {
    let case = Case::start(CaseSpec::new("sandboxes", 1, "3.27.0"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let verification = verification_pod(dir.path(), &[]).display().to_string();
    let node = case.node(0).to_string();
    let ns = case.namespace.clone();
    let pods = KataPods::on(&case, &node);
    pods.run("before", "app").await;

    case.klm(&[
        "upgrade",
        "--target-version",
        "3.28.0",
        "--verification-pod",
        &verification,
        "--verification-namespace",
        &ns,
        "--restart-timeout",
        "60s",
    ])
    .await
    .ok();
    pods.run("after", "app").await;

    let status = case
        .klm(&["status", "--sandboxes", "-o", "json"])
        .await
        .ok()
        .json();
    let sandboxes = status["sandboxes"].as_array().expect("sandboxes listed");
    assert_eq!(sandboxes.len(), 1, "{status}");
    assert_eq!(sandboxes[0]["node"], node.as_str(), "{status}");
    assert_eq!(sandboxes[0]["version"], "3.28.0", "{status}");
    let listed: Vec<&str> = sandboxes[0]["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_str().unwrap())
        .collect();
    assert_eq!(listed, [format!("{ns}/before")], "{status}");
    let text = case.klm(&["status", "--sandboxes"]).await.ok().stdout;
    assert!(
        text.contains(&format!("{ns}/before (started ")) && !text.contains(&format!("{ns}/after")),
        "{text}"
    );
    // Without the flag, status is the table alone.
    let plain = case.klm(&["status", "-o", "json"]).await.ok().json();
    assert!(plain.get("sandboxes").is_none(), "{plain}");
}

#[tokio::test]
async fn recycle_old_sandboxes_evicts_them_once_the_node_is_completed_honouring_budgets() {
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use kube::api::PostParams;
    use kube::runtime::wait::{await_condition, conditions};

    let case = Case::start(CaseSpec::new("recycle", 1, "3.27.0"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let verification = verification_pod(dir.path(), &[]).display().to_string();
    let node = case.node(0).to_string();
    let ns = case.namespace.clone();
    // Two old sandboxes, one of them kept by a budget that allows no
    // disruption.
    let kata_pods = KataPods::on(&case, &node);
    kata_pods.run("old", "free").await;
    kata_pods.run("guarded", "guarded").await;
    let pods = kata_pods.api.clone();
    let budgets: kube::Api<PodDisruptionBudget> = kube::Api::namespaced(case.admin.clone(), &ns);
    let budget: PodDisruptionBudget = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "guarded"},
        "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "guarded"}}}
    }))
    .unwrap();
    budgets
        .create(&PostParams::default(), &budget)
        .await
        .unwrap();

    let plan = case
        .klm(&[
            "plan",
            "--target-version",
            "3.28.0",
            "--verification-pod",
            &verification,
            "--verification-namespace",
            &ns,
            "--recycle-old-sandboxes",
            "2",
        ])
        .await
        .ok();
    assert!(
        plan.stdout
            .contains("old sandboxes: once a node is completed, up to 2 of its Kata pods"),
        "{}",
        plan.stdout
    );

    let ran = case
        .klm(&[
            "upgrade",
            "--target-version",
            "3.28.0",
            "--verification-pod",
            &verification,
            "--verification-namespace",
            &ns,
            "--restart-timeout",
            "60s",
            "--recycle-old-sandboxes",
            "2",
            "--recycle-timeout",
            "3s",
        ])
        .await
        .ok();
    assert!(
        ran.stdout.lines().any(|l| l.contains("sandboxes-recycled")
            && l.contains(&format!("recycled 1 old Kata pod(s) ({ns}/old)"))
            && l.contains(&format!("left running: {ns}/guarded ("))),
        "{}",
        ran.stdout
    );
    // The evicted pod goes; the guarded one stays and is still listed.
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        await_condition(pods.clone(), "old", conditions::is_deleted("")),
    )
    .await
    .expect("the evicted pod is gone within 60s")
    .unwrap();
    assert!(pods.get_opt("guarded").await.unwrap().is_some());
    let status = case
        .klm(&["status", "--sandboxes", "-o", "json"])
        .await
        .ok()
        .json();
    let listed: Vec<&str> = status["sandboxes"][0]["pods"]
        .as_array()
        .expect("sandboxes listed")
        .iter()
        .map(|p| p[0].as_str().unwrap())
        .collect();
    assert_eq!(listed, [format!("{ns}/guarded")], "{status}");
    let reasons: Vec<String> = case
        .node_events(&node)
        .await
        .into_iter()
        .map(|(reason, _, _)| reason)
        .collect();
    assert!(
        reasons.contains(&"KataSandboxesRecycled".to_string()),
        "{reasons:?}"
    );
}
