//! Bad input that changed the cluster (issue 25): each of these is refused
//! now, with exit 2 or 3 and a message that says why, and changes nothing
//! (nodes, kata-deploy pods, the run record, the release); and a check by
//! hand writes nothing into a closed run's record.

use crate::run_end::{start, submit};
use crate::support::{Case, CaseSpec, annotation};
use crate::upgrade::verification_pod;
use crate::workflow::Workflow;

const STATUS: &str = "katacontainers.io/kata-lifecycle-manager-status";

#[tokio::test]
async fn refused_steps_after_a_run_change_nothing() {
    let case = Case::start(CaseSpec::new("refused", 2, "3.27.0"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pod = verification_pod(dir.path(), &[]).display().to_string();
    let [n1, n2] = [case.node(0), case.node(1)];
    let ns = case.namespace.clone();
    let only_n2 = format!("kubernetes.io/hostname={n2}");
    // A run that upgraded n1 only, now closed: the release is at 3.28.0.
    case.klm(&[
        "upgrade",
        "--target-version",
        "3.28.0",
        "--node-selector",
        &format!("kubernetes.io/hostname={n1}"),
        "--verification-pod",
        &pod,
        "--verification-namespace",
        &ns,
        "--run-id",
        "first",
        "--restart-timeout",
        "60s",
    ])
    .await
    .ok();

    let refused: Vec<(Vec<&str>, i32, &str)> = vec![
        // 1. A node the run never touched is not cordoned, then refused.
        (vec!["rollback", "--nodes", n2], 3, "never touched"),
        (
            vec!["rollback", "--nodes", n2, "--run-id", "first"],
            3,
            "never touched",
        ),
        // 2. A bare 0 is no duration, as 0s is not.
        (
            vec![
                "upgrade",
                "--target-version",
                "3.28.0",
                "--verification-pod",
                &pod,
                "--verification-namespace",
                &ns,
                "--restart-timeout",
                "0",
            ],
            2,
            "longer than zero",
        ),
        (
            vec![
                "verify",
                "--nodes",
                n1,
                "--verification-pod",
                &pod,
                "--verification-namespace",
                &ns,
                "--verification-timeout",
                "0",
            ],
            2,
            "longer than zero",
        ),
        // 3. Only Argo's statuses.
        (
            vec!["settle", "--wave", "1", "--upgrade-status", "done"],
            2,
            "is not an Argo status",
        ),
        // 6. A downgrade must be asked for.
        (
            vec![
                "check-prerequisites",
                "--target-version",
                "3.27.0",
                "--verification-pod",
                &pod,
                "--verification-namespace",
                &ns,
            ],
            2,
            "older than the release's 3.28.0",
        ),
        (
            vec![
                "upgrade",
                "--target-version",
                "3.27.0",
                "--verification-pod",
                &pod,
                "--verification-namespace",
                &ns,
                "--node-selector",
                &only_n2,
            ],
            2,
            "--allow-downgrade",
        ),
        (
            vec!["plan", "--target-version", "3.27.0"],
            2,
            "older than the release's 3.28.0",
        ),
    ];
    let mut failures = Vec::new();
    for (args, code, says) in &refused {
        let before = case.snapshot().await;
        let out = case.klm(args).await;
        let said = format!("{}{}", out.stdout, out.stderr);
        // klm's own errors carry `hint:` lines; clap's point at --help.
        let guided = said.contains("hint:") || said.contains("--help");
        if out.code != *code || !said.contains(says) || !guided {
            failures.push(format!(
                "klm {}\n  want exit {code} saying {says:?}\n  got exit {}: {}",
                args.join(" "),
                out.code,
                said.trim()
            ));
        }
        if case.snapshot().await != before {
            failures.push(format!("klm {} changed the cluster", args.join(" ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // An explicit downgrade plans, and says it downgrades.
    let plan = case
        .klm(&["plan", "--target-version", "3.27.0", "--allow-downgrade"])
        .await
        .ok();
    assert!(plan.stdout.contains("downgrades"), "{}", plan.stdout);

    // 4. A check by hand with no run active writes nothing into the closed
    // run's record (nor moves the node).
    let before = case.snapshot().await;
    case.klm(&[
        "verify",
        "--nodes",
        n2,
        "--verification-pod",
        &pod,
        "--verification-namespace",
        &ns,
    ])
    .await
    .ok();
    assert_eq!(
        case.snapshot().await,
        before,
        "verify by hand changed the run record"
    );
}

/// 3. `settle --upgrade-status succeeded` (any case) completes the wave as
/// `Succeeded` does; it rolled a verified wave back before.
#[tokio::test]
async fn settle_takes_argos_statuses_in_any_case() {
    let case = Case::start(CaseSpec::new("settlecase", 1, "3.27.0"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wf = Workflow::render(&case, &verification_pod(dir.path(), &[])).await;
    let run = submit(&case, &wf, "wf-lower", &[], dir.path());
    assert_eq!(start(&run).await, vec![1]);
    for phase in ["cordon", "drain", "restart-kata-pod", "verify"] {
        run.container("upgrade", phase, &[("index", "1")])
            .await
            .ok();
    }
    run.step("settle", &[("index", "1"), ("upgrade-status", "succeeded")])
        .await
        .ok();
    assert_eq!(
        annotation(&case.get_node(case.node(0)).await, STATUS).as_deref(),
        Some("completed")
    );
    assert_eq!(case.run_record().await.unwrap()["state"], "running");
}
