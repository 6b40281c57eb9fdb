//! The wave policy (issue 13: pools in order, a canary wave, growing waves,
//! percentages) through the WorkflowTemplate's own steps on the rig: the
//! plan select-nodes records, what `klm plan` prints, and the bad input
//! refused before anything changes.

use serde_json::json;

use klm_rig::verification_pod::VerificationPod;

use crate::run_end::{exit_handler, start, submit, wave};
use crate::support::{Case, CaseSpec, annotation, host_version, unschedulable};
use crate::upgrade::verification_pod;
use crate::workflow::Workflow;

const STATUS: &str = "katacontainers.io/kata-lifecycle-manager-status";

const POOL: &str = "klm.test/pool";

/// Puts the case's node `i` in `pool`.
async fn label_pool(case: &Case, i: usize, pool: &str) {
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(case.admin.clone());
    let patch = json!({"metadata": {"labels": {POOL: pool}}});
    nodes
        .patch(
            case.node(i),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .expect("label the node");
}

#[tokio::test]
async fn pools_canary_growth_and_percentages_shape_the_recorded_waves() {
    let case = Case::start(CaseSpec::new("policy", 6, "3.27.0"))
        .await
        .unwrap();
    for (i, pool) in ["cpu", "cpu", "gpu", "gpu", "gpu", "gpu"]
        .iter()
        .enumerate()
    {
        label_pool(&case, i, pool).await;
    }
    let n = |i: usize| case.node(i).to_string();
    let dir = tempfile::tempdir().unwrap();
    let pod = verification_pod(dir.path(), &[]);

    // What the plan shows, changing nothing.
    let snapshot = case.snapshot().await;
    let selector = format!("{}={}", crate::support::CASE_LABEL, case.namespace);
    let policy = [
        "--pool-label",
        POOL,
        "--pool-order",
        "gpu,cpu",
        "--canary-size",
        "1",
        "--batch-size",
        "50%",
        "--batch-growth",
        "linear",
        "--max-batch-size",
        "2",
    ];
    let mut args = vec![
        "plan",
        "--target-version",
        "3.28.0",
        "--node-selector",
        &selector,
    ];
    args.extend(policy);
    let plan = case.klm(&args).await.ok();
    assert!(
        plan.stdout.contains(
            "batch size 50%, growing linearly up to 2, a canary wave of 1, pools gpu, cpu first"
        ),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout
            .contains(&format!("wave 2 (pool gpu): {}, {}", n(3), n(4))),
        "{}",
        plan.stdout
    );
    assert_eq!(case.snapshot().await, snapshot);

    // The same policy through the workflow's parameters: 50% of 6 is 3,
    // capped at 2; the canary first, then gpu, then cpu; no wave mixes pools.
    let wf = Workflow::render(&case, &pod).await;
    let run = submit(
        &case,
        &wf,
        "wf-policy",
        &[
            ("pool-label", POOL),
            ("pool-order", "gpu,cpu"),
            ("canary-size", "1"),
            ("batch-size", "50%"),
            ("batch-growth", "linear"),
            ("max-batch-size", "2"),
        ],
        dir.path(),
    );
    assert_eq!(start(&run).await, vec![1, 2, 3, 4]);
    assert_eq!(
        case.run_record().await.unwrap()["waves"],
        json!([[n(2)], [n(3), n(4)], [n(5)], [n(0), n(1)]])
    );
}

#[tokio::test]
async fn a_wave_policy_that_contradicts_itself_is_refused_before_anything_changes() {
    let case = Case::start(CaseSpec::new("policybad", 2, "3.27.0"))
        .await
        .unwrap();
    let snapshot = case.snapshot().await;
    let refusals: [(&[&str], &str); 10] = [
        (&["--gate", "canary", "--gate-approval"], "there is none"),
        (&["--gate-soak", "10m"], "--gate is none"),
        (&["--gate", "pool", "--gate-soak", "1m"], "no --pool-label"),
        (
            &["--gate", "canary", "--canary-size", "1"],
            "holds the run for nothing",
        ),
        (&["--window", "Mon 25:00-26:00"], "not a time of day"),
        (&["--pool-order", "gpu"], "needs --pool-label"),
        (
            &["--batch-size", "3", "--max-batch-size", "2"],
            "below --batch-size 3",
        ),
        (&["--batch-size", "0%"], "not a percentage"),
        (&["--batch-growth", "fast"], "fast"),
        (
            &["--pool-label", POOL, "--pool-order", "gpu,gpu"],
            "named twice",
        ),
    ];
    for (flags, expected) in refusals {
        let mut args = vec!["select-nodes", "--run-id", "wf-bad"];
        args.extend(flags);
        let refused = case.klm(&args).await.code(2);
        assert!(
            refused.stderr.contains(expected),
            "{flags:?}: {}",
            refused.stderr
        );
    }
    assert_eq!(case.snapshot().await, snapshot);
}

#[tokio::test]
async fn a_pools_own_pod_verifies_its_nodes_and_its_failure_stops_the_run_in_that_pool() {
    let case = Case::start(CaseSpec::new("poolpod", 4, "3.27.0"))
        .await
        .unwrap();
    for (i, pool) in ["cpu", "gpu", "gpu", "tdx"].iter().enumerate() {
        label_pool(&case, i, pool).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let default_pod = verification_pod(dir.path(), &[]);
    // gpu's own pod fails on the new version (and passes once rolled back).
    let gpu_pod = VerificationPod::succeeding()
        .broken_at("3.28.0", &[])
        .tolerating_everything()
        .write(dir.path(), "verify-gpu");
    let selector = format!("{}={}", crate::support::CASE_LABEL, case.namespace);

    // Pool pods without a pool label: refused before anything changes.
    let snapshot = case.snapshot().await;
    let gpu = format!("gpu={}", gpu_pod.display());
    let default = default_pod.display().to_string();
    let refused = case
        .klm(&[
            "check-prerequisites",
            "--target-version",
            "3.28.0",
            "--run-id",
            "wf-poolpod",
            "--verification-pod",
            &default,
            "--pool-verification-pod",
            &gpu,
            "--verification-namespace",
            &case.namespace,
        ])
        .await
        .code(2);
    assert!(
        refused.stderr.contains("no pool label"),
        "{}",
        refused.stderr
    );
    assert_eq!(case.snapshot().await, snapshot);
    let plan = case
        .klm(&[
            "plan",
            "--target-version",
            "3.28.0",
            "--node-selector",
            &selector,
            "--pool-label",
            POOL,
            "--pool-order",
            "cpu,gpu,tdx",
            "--verification-pod",
            &default,
            "--pool-verification-pod",
            &gpu,
            "--verification-namespace",
            &case.namespace,
        ])
        .await
        .ok();
    assert!(
        plan.stdout
            .contains("verified: pool gpu with its own pod; every other node with the default pod"),
        "{}",
        plan.stdout
    );

    let wf = Workflow::render_with(
        &case,
        &default_pod,
        &[
            "--set-file".into(),
            format!("verificationPods.gpu={}", gpu_pod.display()),
        ],
    )
    .await;
    let run = submit(
        &case,
        &wf,
        "wf-poolpod",
        &[("pool-label", POOL), ("pool-order", "cpu,gpu,tdx")],
        dir.path(),
    );
    assert_eq!(start(&run).await, vec![1, 2, 3, 4]);
    wave(&run, "1").await.ok();
    let settled = wave(&run, "2").await.code(1);
    assert!(settled.stderr.contains("wave 2"), "{}", settled.stderr);
    exit_handler(
        &run,
        "Failed",
        r#"[{"displayName":"settle","message":"Error (exit code 1)","phase":"Failed"}]"#,
    )
    .await
    .ok();

    let node = |i: usize| case.node(i).to_string();
    let n = case.get_node(&node(0)).await;
    assert_eq!(
        annotation(&n, STATUS).as_deref(),
        Some("completed"),
        "cpu: the default pod passed"
    );
    let n = case.get_node(&node(1)).await;
    assert_eq!(
        annotation(&n, STATUS).as_deref(),
        Some("rolled-back"),
        "gpu: its own pod failed"
    );
    assert_eq!(host_version(&n).as_deref(), Some("3.27.0"));
    assert!(!unschedulable(&n));
    for i in [2, 3] {
        let n = case.get_node(&node(i)).await;
        assert_eq!(annotation(&n, STATUS), None, "{} is untouched", node(i));
        assert_eq!(host_version(&n).as_deref(), Some("3.27.0"));
    }
    assert_eq!(case.run_record().await.unwrap()["poolLabel"], POOL);
    // The status table shows each node's pool and the pod that verifies it.
    let status = case.klm(&["status", "--run-id", "wf-poolpod"]).await.ok();
    let row = |i: usize| {
        status
            .stdout
            .lines()
            .find(|l| l.starts_with(&node(i)))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        row(1).contains("gpu") && row(1).ends_with("pool pod"),
        "{}",
        status.stdout
    );
    assert!(
        row(0).contains("cpu") && row(0).ends_with("default pod"),
        "{}",
        status.stdout
    );
}

#[tokio::test]
async fn the_unavailability_budget_counts_nodes_already_out_and_holds_each_wave_to_it() {
    let case = Case::start(CaseSpec::new("budget", 4, "3.27.0"))
        .await
        .unwrap();
    let node = |i: usize| case.node(i).to_string();
    // Someone else cordoned n4 before the run.
    case.cordon_by_hand(&node(3)).await;
    let dir = tempfile::tempdir().unwrap();
    let wf = Workflow::render(&case, &verification_pod(dir.path(), &[])).await;
    let run = submit(
        &case,
        &wf,
        "wf-budget",
        &[("batch-size", "3"), ("max-unavailable", "2")],
        dir.path(),
    );
    // n4 is reported and skipped; with it out, 2 allow waves of 1.
    assert_eq!(start(&run).await, vec![1, 2, 3]);
    let record = case.run_record().await.unwrap();
    assert_eq!(record["waves"], json!([[node(0)], [node(1)], [node(2)]]));
    assert_eq!(record["maxUnavailable"], 2);
    let selected = run.container("start", "select-nodes", &[]).await.ok();
    assert!(
        selected.stdout.contains(&format!(
            "unavailable already, skipped: {} (cordoned)",
            node(3)
        )),
        "{}",
        selected.stdout
    );

    // Since the plan n2 and n3 went out of service: wave 1 would make 3 of
    // the planned nodes unschedulable at once. Refused, nothing changed.
    case.cordon_by_hand(&node(1)).await;
    case.cordon_by_hand(&node(2)).await;
    // The node controller adds the cordon's taint: the snapshot waits for it.
    for i in [1, 2] {
        tainted(&case, &node(i)).await;
    }
    let snapshot = case.snapshot().await;
    let refused = run
        .container("upgrade", "cordon", &[("index", "1")])
        .await
        .code(3);
    assert!(
        refused.stderr.contains("budget (--max-unavailable) is 2"),
        "{}",
        refused.stderr
    );
    assert_eq!(case.snapshot().await, snapshot);
    // One comes back: wave 1 fits again.
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(case.admin.clone());
    let uncordon = json!({"spec": {"unschedulable": false}});
    nodes
        .patch(
            &node(2),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&uncordon),
        )
        .await
        .unwrap();
    wave(&run, "1").await.ok();
    assert_eq!(
        annotation(&case.get_node(&node(0)).await, STATUS).as_deref(),
        Some("completed")
    );

    // With include-unavailable, the cordoned nodes (n2, n4) are planned
    // too; 75% of 4 is 3, less the 2 out: waves of 1.
    let plan = case
        .klm(&[
            "plan",
            "--target-version",
            "3.28.0",
            "--node-selector",
            &format!("{}={}", crate::support::CASE_LABEL, case.namespace),
            "--max-unavailable",
            "75%",
            "--include-unavailable",
        ])
        .await
        .ok();
    assert!(
        plan.stdout
            .contains("planned anyway (--include-unavailable)"),
        "{}",
        plan.stdout
    );
}

/// Waits (by watching) until the node carries the cordon's taint.
async fn tainted(case: &Case, name: &str) {
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(case.admin.clone());
    let has_taint = |node: Option<&k8s_openapi::api::core::v1::Node>| {
        node.and_then(|n| n.spec.as_ref())
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| {
                t.iter()
                    .any(|t| t.key == "node.kubernetes.io/unschedulable")
            })
    };
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        kube::runtime::wait::await_condition(nodes, name, has_taint),
    )
    .await
    .expect("the node controller taints a cordoned node")
    .expect("watch the node");
}
