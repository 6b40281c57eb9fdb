//! The wave policy (issue 13: pools in order, a canary wave, growing waves,
//! percentages) through the WorkflowTemplate's own steps on the rig: the
//! plan select-nodes records, what `klm plan` prints, and the bad input
//! refused before anything changes.

use serde_json::json;

use crate::run_end::{start, submit};
use crate::support::{Case, CaseSpec};
use crate::upgrade::verification_pod;
use crate::workflow::Workflow;

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
    let refusals: [(&[&str], &str); 5] = [
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
