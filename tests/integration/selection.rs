//! An explicit selection (issue 25, "Second"): `--node-selector` or a
//! taint is narrowed to the nodes that run this release's kata-deploy (the
//! default selection's rule). The plan names the matching nodes it leaves
//! out and why; a selection that leaves none is bad input, refused before
//! anything changes.

use std::collections::BTreeMap;

use klm_rig::NodeSpec;

use crate::support::{Case, CaseSpec, annotation, unschedulable};
use crate::upgrade::verification_pod;

const GROUP: &str = "klm.test/group";
const STATUS: &str = "katacontainers.io/kata-lifecycle-manager-status";

#[tokio::test]
async fn an_explicit_selection_leaves_out_the_nodes_without_the_releases_kata_deploy() {
    let case = Case::start(CaseSpec::new("narrow", 2, "3.27.0"))
        .await
        .unwrap();
    let group = format!("{GROUP}={}", case.namespace);
    // A node the selector matches where this release has no kata-deploy
    // pod (its DaemonSet selects the case's label, which it lacks).
    let bare = format!("{}-bare", case.namespace);
    case.rig
        .add_nodes(&[NodeSpec {
            name: bare.clone(),
            labels: BTreeMap::from([(GROUP.to_string(), case.namespace.clone())]),
            taints: Vec::new(),
            unschedulable: false,
        }])
        .await
        .unwrap();
    case.label(case.node(0), GROUP, &case.namespace).await;
    let dir = tempfile::tempdir().unwrap();
    let pod = verification_pod(dir.path(), &[]).display().to_string();
    let why = format!(
        "left out, matched but not running release {ns}/kata-deploy's kata-deploy (the pods of DaemonSet {ns}/",
        ns = case.namespace
    );

    let plan = case
        .klm(&[
            "plan",
            "--target-version",
            "3.28.0",
            "--node-selector",
            &group,
            "--verification-pod",
            &pod,
            "--verification-namespace",
            &case.namespace,
        ])
        .await
        .ok();
    assert!(
        plan.stdout.contains(&format!("wave 1: {}", case.node(0))),
        "{}",
        plan.stdout
    );
    let left_out = plan
        .stdout
        .lines()
        .find(|l| l.starts_with("left out"))
        .unwrap_or_default();
    assert!(
        left_out.starts_with(&why) && left_out.ends_with(&format!("): {bare}")),
        "the plan names the node it leaves out and why: {}",
        plan.stdout
    );
    let selected = case
        .klm(&["select-nodes", "--node-selector", &group, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(selected["nodes"], serde_json::json!([case.node(0)]));
    assert_eq!(selected["leftOut"], serde_json::json!([bare]));

    // Nothing left: refused, nothing changed.
    let before = case.snapshot().await;
    let only_bare = format!("kubernetes.io/hostname={bare}");
    for args in [
        vec!["select-nodes", "--node-selector", &only_bare],
        vec![
            "upgrade",
            "--target-version",
            "3.28.0",
            "--node-selector",
            &only_bare,
            "--verification-pod",
            &pod,
            "--verification-namespace",
            &case.namespace,
            "--run-id",
            "nothing-left",
        ],
    ] {
        let refused = case.klm(&args).await.code(2);
        assert!(
            refused.stderr.contains(&format!(
                "none of the nodes matched by label selector \"{only_bare}\" runs release {}/kata-deploy's kata-deploy",
                case.namespace
            )) && refused.stderr.contains(&bare)
                && refused.stderr.contains("hint:"),
            "{}",
            refused.stderr
        );
    }
    assert_eq!(
        case.snapshot().await,
        before,
        "a refused selection changed the cluster"
    );

    // The run upgrades the release's node and never touches the other.
    case.klm(&[
        "upgrade",
        "--target-version",
        "3.28.0",
        "--node-selector",
        &group,
        "--verification-pod",
        &pod,
        "--verification-namespace",
        &case.namespace,
        "--run-id",
        "narrowed",
        "--restart-timeout",
        "60s",
    ])
    .await
    .ok();
    let untouched = case.get_node(&bare).await;
    assert_eq!(annotation(&untouched, STATUS), None);
    assert!(!unschedulable(&untouched));
    assert_eq!(
        annotation(&case.get_node(case.node(0)).await, STATUS).as_deref(),
        Some("completed")
    );
}
