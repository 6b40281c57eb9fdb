//! Runs as a user would make them (issue 9, and the wave bound of issue 10):
//! several kata-deploy releases side by side, each in its own namespace with
//! its own `env.multiInstallSuffix`, both modes, every step as the chart's
//! ServiceAccount. Each test failed before its fix.

use std::path::{Path, PathBuf};

use k8s_openapi::api::batch::v1::Job;
use klm_rig::verification_pod::VerificationPod;
use kube::Api;
use kube::api::ListParams;
use serde_json::{Value, json};

use crate::support::{Case, CaseSpec, annotation, host_version, job_values, unschedulable};
use crate::upgrade::verification_pod;

const STATUS: &str = "katacontainers.io/kata-lifecycle-manager-status";
const RUN: &str = "katacontainers.io/kata-lifecycle-manager-run";
const VERIFIED: &str = "katacontainers.io/kata-current-version";

fn case_selector(case: &Case) -> String {
    format!("klm.test/case={}", case.namespace)
}

/// The release's user-supplied values, as helm reports them.
async fn user_values(case: &Case) -> Value {
    let out = case
        .helm_admin(&[
            "get".into(),
            "values".into(),
            case.release.clone(),
            "-n".into(),
            case.namespace.clone(),
            "-o".into(),
            "json".into(),
        ])
        .await
        .unwrap();
    serde_json::from_str(&out).unwrap()
}

async fn check_prerequisites(case: &Case, run: &str, target: &str, pod: &Path) {
    check_prerequisites_with(case, run, target, pod, &[]).await;
}

async fn check_prerequisites_with(
    case: &Case,
    run: &str,
    target: &str,
    pod: &Path,
    extra: &[&str],
) {
    let pod = pod.display().to_string();
    let mut args = vec![
        "check-prerequisites",
        "--target-version",
        target,
        "--run-id",
        run,
        "--verification-pod",
        &pod,
        "--verification-namespace",
        &case.namespace,
    ];
    args.extend(extra);
    case.klm(&args).await.ok();
}

async fn verify(case: &Case, run: &str, nodes: &str, pod: &Path) -> crate::support::Klm {
    let pod = pod.display().to_string();
    case.klm(&[
        "verify",
        "--nodes",
        nodes,
        "--run-id",
        run,
        "--verification-pod",
        &pod,
        "--verification-namespace",
        &case.namespace,
        "--verification-timeout",
        "60s",
    ])
    .await
}

async fn cordon_and_restart(case: &Case, run: &str, nodes: &str) {
    case.klm(&["cordon", "--nodes", nodes, "--run-id", run])
        .await
        .ok();
    case.klm(&[
        "restart-kata-pod",
        "--nodes",
        nodes,
        "--run-id",
        run,
        "--timeout",
        "60s",
    ])
    .await
    .ok();
}

/// A daemonset-mode wave that passes, for the cases that need a completed node.
async fn passing_wave(case: &Case, run: &str, target: &str, nodes: &str, pod: &Path) {
    cordon_and_restart(case, run, nodes).await;
    verify(case, run, nodes, pod).await.ok();
    case.klm(&[
        "complete",
        "--nodes",
        nodes,
        "--target-version",
        target,
        "--run-id",
        run,
    ])
    .await
    .ok();
}

/// A verification pod using the release's RuntimeClass (what a real check does).
fn runtime_class_pod(dir: &Path, runtime_class: &str) -> PathBuf {
    VerificationPod::succeeding()
        .runtime_class(runtime_class)
        .tolerating_everything()
        .write(dir, "verify-runtime-class")
}

// Item 2.
#[tokio::test]
async fn default_selection_is_the_nodes_of_this_release_only() {
    let a = Case::start(CaseSpec::new("scope-a", 2, "3.27.0"))
        .await
        .unwrap();
    let b = Case::start(CaseSpec::new("scope-b", 1, "3.27.0"))
        .await
        .unwrap();
    let j = Case::start_with(CaseSpec::new("scope-j", 2, "3.32.0"), job_values)
        .await
        .unwrap();
    for (case, other) in [(&a, &b), (&b, &a), (&j, &a)] {
        let selection = case.klm(&["select-nodes", "-o", "json"]).await.ok().json();
        assert_eq!(
            selection["nodes"],
            json!(case.nodes),
            "the default selection is the release's own nodes, never {:?}: {selection}",
            other.nodes
        );
        let criteria = selection["criteria"].as_str().unwrap();
        assert!(
            criteria.contains(&format!("{}/{}", case.namespace, case.release)),
            "the plan names the release it selected for: {criteria}"
        );
    }
}

// Item 3.
#[tokio::test]
async fn rollback_reverts_first_when_the_new_version_broke_the_verification_pod() {
    let case = Case::start(CaseSpec::new("rcgone", 1, "3.27.0"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pod = runtime_class_pod(dir.path(), &format!("kata-qemu-{}", case.namespace));
    let pod_arg = pod.display().to_string();
    let run = "wf-rcgone";
    let node = case.node(0);
    check_prerequisites(&case, run, "3.28.0", &pod).await;
    case.klm(&[
        "helm-upgrade",
        "--target-version",
        "3.28.0",
        "--run-id",
        run,
        "--set",
        "runtimeClasses.enabled=false",
    ])
    .await
    .ok();
    cordon_and_restart(&case, run, node).await;
    let verified = verify(&case, run, node, &pod).await.code(1);
    let all = format!("{}{}", verified.stdout, verified.stderr);
    assert!(all.contains("RuntimeClass"), "the admission message: {all}");
    assert!(
        !all.contains("lacks this permission"),
        "no RBAC hint: {all}"
    );

    case.klm(&[
        "rollback",
        "--nodes",
        node,
        "--run-id",
        run,
        "--timeout",
        "60s",
        "--verification-pod",
        &pod_arg,
        "--verification-namespace",
        &case.namespace,
    ])
    .await
    .ok();
    let n = case.get_node(node).await;
    assert_eq!(host_version(&n).as_deref(), Some("3.27.0"));
    assert_eq!(annotation(&n, STATUS).as_deref(), Some("rolled-back"));
    assert_eq!(annotation(&n, VERIFIED).as_deref(), Some("3.27.0"));
    assert!(!unschedulable(&n));
    assert_eq!(case.release_state().await.1, "3.27.0");
}

// Item 4.
#[tokio::test]
async fn a_daemonset_run_with_no_selected_node_changes_nothing() {
    let case = Case::start(CaseSpec::new("empty", 1, "3.27.0"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pod = verification_pod(dir.path(), &[]);
    let run = "wf-empty";
    check_prerequisites(&case, run, "3.28.0", &pod).await;
    let before = case.release_state().await;
    let selection = case
        .klm(&[
            "select-nodes",
            "--node-selector",
            "klm.test/case=matches-nothing",
            "--run-id",
            run,
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(selection["count"], 0);
    case.klm(&[
        "helm-upgrade",
        "--target-version",
        "3.28.0",
        "--run-id",
        run,
    ])
    .await
    .ok();
    assert_eq!(
        case.release_state().await,
        before,
        "no helm revision for a run that selected no node"
    );
}

// Item 5.
#[tokio::test]
async fn holds_of_two_releases_under_one_run_id_stay_apart() {
    let a = Case::start(CaseSpec::new("hold-a", 1, "3.27.0"))
        .await
        .unwrap();
    let b = Case::start(CaseSpec::new("hold-b", 1, "3.27.0"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pod = verification_pod(dir.path(), &[]);
    let run = "wf-same-name";
    for case in [&a, &b] {
        check_prerequisites(case, run, "3.28.0", &pod).await;
        case.klm(&["cordon", "--nodes", case.node(0), "--run-id", run])
            .await
            .ok();
    }
    let refused = b
        .klm(&["cordon", "--nodes", a.node(0), "--run-id", run])
        .await
        .code(3);
    assert!(
        refused.stderr.contains(&a.namespace),
        "the refusal names the holding release: {}",
        refused.stderr
    );
    a.klm(&["uncordon", "--all-held", "--run-id", run])
        .await
        .ok();
    assert!(!unschedulable(&a.get_node(a.node(0)).await));
    let other = b.get_node(b.node(0)).await;
    assert!(
        unschedulable(&other),
        "release B's node stays cordoned by B's run"
    );
    assert_eq!(annotation(&other, RUN).as_deref(), Some(run));
}

// Item 6.
#[tokio::test]
async fn a_failed_rollback_of_one_node_leaves_the_rest_of_the_wave_rolled_back() {
    let case = Case::start(CaseSpec::new("halfback", 2, "3.27.0"))
        .await
        .unwrap();
    // Before the run: kata-deploy at 3.27.0 would not come up again on the
    // second node (set without restarting anything).
    case.helm_admin(&[
        "upgrade".into(),
        case.release.clone(),
        crate::support::chart_reference().replace("{version}", "3.27.0"),
        "-n".into(),
        case.namespace.clone(),
        "--reuse-values".into(),
        "--set".into(),
        "updateStrategy.type=OnDelete".into(),
        "--set".into(),
        format!("fake.failOnNodes={{{}}}", case.node(1)),
    ])
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let failing = verification_pod(dir.path(), &[case.node(0), case.node(1)]);
    let run = "wf-halfback";
    let both = case.nodes.join(",");
    check_prerequisites(&case, run, "3.28.0", &failing).await;
    case.klm(&[
        "helm-upgrade",
        "--target-version",
        "3.28.0",
        "--run-id",
        run,
        "--set",
        "fake.failOnNodes=null",
    ])
    .await
    .ok();
    cordon_and_restart(&case, run, &both).await;
    verify(&case, run, &both, &failing).await.code(1);
    case.klm(&[
        "rollback",
        "--nodes",
        &both,
        "--run-id",
        run,
        "--timeout",
        "20s",
    ])
    .await
    .code(1);
    let good = case.get_node(case.node(0)).await;
    assert_eq!(annotation(&good, STATUS).as_deref(), Some("rolled-back"));
    assert!(
        !unschedulable(&good),
        "the node that rolled back is released"
    );
    assert_eq!(host_version(&good).as_deref(), Some("3.27.0"));
    let bad = case.get_node(case.node(1)).await;
    assert_eq!(annotation(&bad, STATUS).as_deref(), Some("failed"));
    assert!(unschedulable(&bad));
    let record = case.run_record().await.unwrap();
    assert_eq!(record["nodes"][case.node(0)], "rolled-back");
    assert_eq!(record["nodes"][case.node(1)], "failed");
}

// Item 7.
#[tokio::test]
async fn a_target_version_other_than_the_runs_is_refused() {
    let case = Case::start(CaseSpec::new("wrongver", 1, "3.27.0"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pod = verification_pod(dir.path(), &[]);
    let run = "wf-wrongver";
    let node = case.node(0);
    check_prerequisites(&case, run, "3.28.0", &pod).await;
    case.klm(&[
        "helm-upgrade",
        "--target-version",
        "3.28.0",
        "--run-id",
        run,
    ])
    .await
    .ok();
    cordon_and_restart(&case, run, node).await;
    verify(&case, run, node, &pod).await.ok();
    let before = case.snapshot().await;
    for args in [
        &["complete", "--nodes", node, "--target-version", "9.9.9"][..],
        &["complete", "--finish-run", "--target-version", "9.9.9"][..],
        &["helm-upgrade", "--target-version", "9.9.9"][..],
        &[
            "check-prerequisites",
            "--target-version",
            "9.9.9",
            "--run-id",
            run,
        ][..],
    ] {
        let mut args = args.to_vec();
        if !args.contains(&"--run-id") {
            args.extend(["--run-id", run]);
        }
        let refused = case.klm(&args).await.code(2);
        assert!(
            refused.stderr.contains("3.28.0"),
            "{args:?} names the run's target: {}",
            refused.stderr
        );
        assert_eq!(case.snapshot().await, before, "{args:?} changed nothing");
    }
}

// Item 8, daemonset mode.
#[tokio::test]
async fn daemonset_rollback_returns_each_node_to_the_version_it_ran() {
    let case = Case::start(CaseSpec::new("ownver", 2, "3.27.0"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let passing = verification_pod(dir.path(), &[]);
    let failing = verification_pod(dir.path(), &[case.node(1)]);
    check_prerequisites(&case, "wf-first", "3.28.0", &passing).await;
    case.klm(&[
        "helm-upgrade",
        "--target-version",
        "3.28.0",
        "--run-id",
        "wf-first",
    ])
    .await
    .ok();
    passing_wave(&case, "wf-first", "3.28.0", case.node(0), &passing).await;
    // The fleet is half upgraded: finishing says so (and leaves OnDelete).
    case.klm(&[
        "complete",
        "--finish-run",
        "--target-version",
        "3.28.0",
        "--run-id",
        "wf-first",
    ])
    .await;
    assert_eq!(case.run_record().await.unwrap()["state"], "completed");

    let run = "wf-second";
    check_prerequisites(&case, run, "3.28.0", &failing).await;
    case.klm(&[
        "helm-upgrade",
        "--target-version",
        "3.28.0",
        "--run-id",
        run,
    ])
    .await
    .ok();
    cordon_and_restart(&case, run, case.node(1)).await;
    assert_eq!(
        host_version(&case.get_node(case.node(1)).await).as_deref(),
        Some("3.28.0")
    );
    verify(&case, run, case.node(1), &failing).await.code(1);
    case.klm(&[
        "rollback",
        "--nodes",
        case.node(1),
        "--run-id",
        run,
        "--timeout",
        "60s",
    ])
    .await
    .ok();
    let back = case.get_node(case.node(1)).await;
    assert_eq!(
        host_version(&back).as_deref(),
        Some("3.27.0"),
        "the node returns to the version it ran before run 2, not the release's"
    );
    assert_eq!(annotation(&back, STATUS).as_deref(), Some("rolled-back"));
    assert!(!unschedulable(&back));
    assert_eq!(
        host_version(&case.get_node(case.node(0)).await).as_deref(),
        Some("3.28.0"),
        "the node run 1 completed keeps its version"
    );
    let record = case.run_record().await.unwrap();
    assert_eq!(record["nodeVersions"][case.node(1)], "3.27.0", "{record}");
}

/// One job-mode wave up to verification.
async fn job_wave(case: &Case, run: &str, target: &str, nodes: &str) {
    case.klm(&["cordon", "--nodes", nodes, "--run-id", run])
        .await
        .ok();
    case.klm(&[
        "helm-upgrade",
        "--target-version",
        target,
        "--nodes",
        nodes,
        "--run-id",
        run,
    ])
    .await
    .ok();
    case.klm(&[
        "restart-kata-pod",
        "--nodes",
        nodes,
        "--run-id",
        run,
        "--timeout",
        "60s",
    ])
    .await
    .ok();
}

/// The UIDs of the release's install Jobs: a re-run dispatcher replaces them.
async fn install_jobs(case: &Case) -> Vec<String> {
    let mut uids: Vec<String> = Api::<Job>::namespaced(case.admin.clone(), &case.namespace)
        .list(&ListParams::default().labels("kata-deploy/stage=install"))
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|j| j.metadata.uid.clone())
        .collect();
    uids.sort();
    uids
}

// Item 8, job mode.
#[tokio::test]
async fn job_mode_rollback_returns_each_node_to_the_version_it_ran() {
    let case = Case::start_with(CaseSpec::new("jobown", 2, "3.32.0"), job_values)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let passing = verification_pod(dir.path(), &[]);
    let failing = verification_pod(dir.path(), &[case.node(1)]);
    check_prerequisites(&case, "wf-jfirst", "3.33.0", &passing).await;
    job_wave(&case, "wf-jfirst", "3.33.0", case.node(0)).await;
    verify(&case, "wf-jfirst", case.node(0), &passing)
        .await
        .ok();
    case.klm(&[
        "complete",
        "--nodes",
        case.node(0),
        "--finish-run",
        "--target-version",
        "3.33.0",
        "--run-id",
        "wf-jfirst",
    ])
    .await;
    assert_eq!(case.run_record().await.unwrap()["state"], "completed");

    let run = "wf-jsecond";
    check_prerequisites(&case, run, "3.33.0", &failing).await;
    job_wave(&case, run, "3.33.0", case.node(1)).await;
    assert_eq!(
        host_version(&case.get_node(case.node(1)).await).as_deref(),
        Some("3.33.0")
    );
    verify(&case, run, case.node(1), &failing).await.code(1);
    case.klm(&[
        "rollback",
        "--nodes",
        case.node(1),
        "--run-id",
        run,
        "--timeout",
        "60s",
    ])
    .await
    .ok();
    assert_eq!(
        host_version(&case.get_node(case.node(1)).await).as_deref(),
        Some("3.32.0"),
        "the node returns to the version it ran before run 2"
    );
    assert_eq!(
        host_version(&case.get_node(case.node(0)).await).as_deref(),
        Some("3.33.0")
    );
}

/// The values a case installed kata-deploy with (what the user supplied).
fn installed_values(case: &Case, job: bool) -> Value {
    let mut values = json!({
        "nodeSelector": {"klm.test/case": case.namespace},
        "env": {"multiInstallSuffix": case.namespace},
    });
    if job {
        values["deploymentMode"] = json!("job");
        values["job"] = json!({"nodeSelector": {"klm.test/case": case.namespace}});
    }
    values
}

// Item 9, job mode: finish-run and rollback.
#[tokio::test]
async fn job_mode_runs_leave_the_users_values() {
    let case = Case::start_with(CaseSpec::new("jobvals", 2, "3.32.0"), job_values)
        .await
        .unwrap();
    let mine = installed_values(&case, true);
    assert_eq!(user_values(&case).await, mine);
    let dir = tempfile::tempdir().unwrap();
    let passing = verification_pod(dir.path(), &[]);
    let run = "wf-jobvals";
    check_prerequisites(&case, run, "3.33.0", &passing).await;
    let both = case.nodes.join(",");
    job_wave(&case, run, "3.33.0", &both).await;
    verify(&case, run, &both, &passing).await.ok();
    case.klm(&[
        "complete",
        "--nodes",
        &both,
        "--target-version",
        "3.33.0",
        "--run-id",
        run,
    ])
    .await
    .ok();
    let jobs = install_jobs(&case).await;
    case.klm(&[
        "complete",
        "--finish-run",
        "--target-version",
        "3.33.0",
        "--run-id",
        run,
    ])
    .await
    .ok();
    assert_eq!(
        user_values(&case).await,
        mine,
        "finish-run leaves exactly the user's values"
    );
    assert_eq!(case.release_state().await.1, "3.33.0");
    assert_eq!(
        install_jobs(&case).await,
        jobs,
        "restoring the values re-ran no installer"
    );

    let failing = verification_pod(dir.path(), &[case.node(0)]);
    // A second run (a downgrade: the fixture has no later job-mode version
    // that klm drives wave by wave) that fails and is rolled back.
    let run = "wf-jobvals-back";
    check_prerequisites_with(&case, run, "3.32.0", &failing, &["--allow-downgrade"]).await;
    job_wave(&case, run, "3.32.0", case.node(0)).await;
    verify(&case, run, case.node(0), &failing).await.code(1);
    case.klm(&[
        "rollback",
        "--nodes",
        case.node(0),
        "--run-id",
        run,
        "--timeout",
        "60s",
    ])
    .await
    .ok();
    assert_eq!(
        host_version(&case.get_node(case.node(0)).await).as_deref(),
        Some("3.33.0")
    );
    assert_eq!(
        user_values(&case).await,
        mine,
        "a job-mode rollback leaves exactly the user's values"
    );
    assert_eq!(case.release_state().await.1, "3.33.0");
}

// Item 9, daemonset mode: no empty maps left behind.
#[tokio::test]
async fn a_daemonset_run_leaves_exactly_the_users_values() {
    let case = Case::start(CaseSpec::new("dsvals", 1, "3.27.0"))
        .await
        .unwrap();
    let mine = installed_values(&case, false);
    assert_eq!(user_values(&case).await, mine);
    let dir = tempfile::tempdir().unwrap();
    let pod = verification_pod(dir.path(), &[]);
    let run = "wf-dsvals";
    check_prerequisites(&case, run, "3.28.0", &pod).await;
    case.klm(&[
        "helm-upgrade",
        "--target-version",
        "3.28.0",
        "--run-id",
        run,
    ])
    .await
    .ok();
    passing_wave(&case, run, "3.28.0", case.node(0), &pod).await;
    case.klm(&[
        "complete",
        "--finish-run",
        "--target-version",
        "3.28.0",
        "--run-id",
        run,
    ])
    .await
    .ok();
    assert_eq!(user_values(&case).await, mine);
}

// Issue 10, "bounded up front".
#[tokio::test]
async fn a_plan_with_more_waves_than_a_workflow_carries_is_refused() {
    let case = Case::start(CaseSpec::new("maxwaves", 3, "3.27.0"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pod = verification_pod(dir.path(), &[]);
    let run = "wf-maxwaves";
    check_prerequisites(&case, run, "3.28.0", &pod).await;
    let before = case.snapshot().await;
    let dir_waves = dir.path().join("waves.json");
    let waves_file = dir_waves.display().to_string();
    let refused = case
        .klm(&[
            "select-nodes",
            "--node-selector",
            &case_selector(&case),
            "--max-waves",
            "2",
            "--run-id",
            run,
            "--waves-file",
            &waves_file,
        ])
        .await
        .code(2);
    assert!(
        refused.stderr.contains("--batch-size 2"),
        "says which batch size fits: {}",
        refused.stderr
    );
    assert!(!dir_waves.exists(), "no waves file for a refused plan");
    assert_eq!(case.snapshot().await, before, "the refusal changed nothing");
    let fits = case
        .klm(&[
            "select-nodes",
            "--node-selector",
            &case_selector(&case),
            "--max-waves",
            "2",
            "--batch-size",
            "2",
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(fits["waves"].as_array().unwrap().len(), 2);
    let unlimited = case
        .klm(&[
            "select-nodes",
            "--node-selector",
            &case_selector(&case),
            "--max-waves",
            "0",
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(unlimited["waves"].as_array().unwrap().len(), 3);
}
