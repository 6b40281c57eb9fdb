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
