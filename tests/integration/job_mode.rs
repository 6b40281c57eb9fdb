//! kata-deploy's job mode: waves scoped with job.nodes, and the refusal where
//! kata-deploy (>= 4.1) would uninstall Kata from the rest of the fleet.

use serde_json::json;

use crate::support::{Case, CaseSpec, annotation, host_version, job_values};
use crate::upgrade::verification_pod;

#[tokio::test]
async fn job_mode_upgrades_one_wave_at_a_time() {
    // The case label is the namespace, known only after the namespace exists:
    // install in daemonset-free job mode with the case selector.
    let case = Case::start_with(CaseSpec::new("jobmode", 3, "3.32.0"), job_values)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pod = verification_pod(dir.path(), &[]).display().to_string();
    let run = "wf-job";
    let checked = case
        .klm(&[
            "check-prerequisites",
            "--target-version",
            "3.33.0",
            "--run-id",
            run,
            "--verification-pod",
            &pod,
            "--verification-namespace",
            &case.namespace,
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(checked["mode"], "job");
    let selection = case
        .klm(&[
            "select-nodes",
            "--node-selector",
            &format!("klm.test/case={}", case.namespace),
            "--batch-size",
            "2",
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(selection["waves"].as_array().unwrap().len(), 2);

    for (i, wave) in selection["waves"].as_array().unwrap().iter().enumerate() {
        let nodes = wave["nodeList"].as_str().unwrap();
        case.klm(&["cordon", "--nodes", nodes, "--run-id", run])
            .await
            .ok();
        let upgraded = case
            .klm(&[
                "helm-upgrade",
                "--target-version",
                "3.33.0",
                "--nodes",
                nodes,
                "--run-id",
                run,
                "-o",
                "json",
            ])
            .await
            .ok()
            .json();
        assert_eq!(upgraded["nodes"], json!(wave["nodes"]));
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
        for node in &case.nodes {
            let in_wave_or_earlier = selection["waves"].as_array().unwrap()[..=i]
                .iter()
                .any(|w| w["nodes"].as_array().unwrap().iter().any(|n| n == node));
            let expected = if in_wave_or_earlier {
                "3.33.0"
            } else {
                "3.32.0"
            };
            assert_eq!(
                host_version(&case.get_node(node).await).as_deref(),
                Some(expected),
                "wave {i}, node {node}"
            );
        }
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
        ])
        .await
        .ok();
        case.klm(&[
            "complete",
            "--nodes",
            nodes,
            "--target-version",
            "3.33.0",
            "--run-id",
            run,
        ])
        .await
        .ok();
    }
    let finished = case
        .klm(&[
            "complete",
            "--finish-run",
            "--target-version",
            "3.33.0",
            "--run-id",
            run,
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    let restored: Vec<&str> = finished["restored"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        restored.contains(&"job.nodes"),
        "job.nodes is restored (without re-running the installer): {finished}"
    );
    for node in &case.nodes {
        assert_eq!(
            annotation(
                &case.get_node(node).await,
                "katacontainers.io/kata-lifecycle-manager-status"
            )
            .as_deref(),
            Some("completed")
        );
    }
}

#[tokio::test]
async fn job_mode_rollback_reinstalls_the_recorded_version_on_the_node_only() {
    let case = Case::start_with(CaseSpec::new("jobback", 2, "3.32.0"), job_values)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pod = verification_pod(dir.path(), &[case.node(0)])
        .display()
        .to_string();
    let run = "wf-jobback";
    case.klm(&[
        "check-prerequisites",
        "--target-version",
        "3.33.0",
        "--run-id",
        run,
        "--verification-pod",
        &pod,
        "--verification-namespace",
        &case.namespace,
    ])
    .await
    .ok();
    let node = case.node(0);
    case.klm(&["cordon", "--nodes", node, "--run-id", run])
        .await
        .ok();
    case.klm(&[
        "helm-upgrade",
        "--target-version",
        "3.33.0",
        "--nodes",
        node,
        "--run-id",
        run,
    ])
    .await
    .ok();
    case.klm(&[
        "restart-kata-pod",
        "--nodes",
        node,
        "--run-id",
        run,
        "--timeout",
        "60s",
    ])
    .await
    .ok();
    case.klm(&[
        "verify",
        "--nodes",
        node,
        "--run-id",
        run,
        "--verification-pod",
        &pod,
        "--verification-namespace",
        &case.namespace,
    ])
    .await
    .code(1);
    case.klm(&[
        "rollback",
        "--nodes",
        node,
        "--run-id",
        run,
        "--timeout",
        "60s",
    ])
    .await
    .ok();
    assert_eq!(
        host_version(&case.get_node(node).await).as_deref(),
        Some("3.32.0")
    );
    assert_eq!(
        host_version(&case.get_node(case.node(1)).await).as_deref(),
        Some("3.32.0"),
        "the other node was never touched"
    );
    assert_eq!(case.release_state().await.1, "3.32.0");
}

/// A job-mode case on the 4.1 flavour (its installer selects with the
/// top-level nodeSelector the case already sets: `job.nodeSelector` is gone).
async fn pruning_case(name: &str, nodes: usize, version: &str) -> Case {
    Case::start_with(CaseSpec::new(name, nodes, version), |_| {
        vec!["deploymentMode=job".into()]
    })
    .await
    .unwrap()
}

/// How many times the simulated dispatchers pruned Kata from each node.
async fn prunes(case: &Case) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for node in &case.nodes {
        let n = case.get_node(node).await;
        if let Some(count) = annotation(&n, "rig.klm.test/prunes") {
            found.push((node.clone(), count));
        }
    }
    found
}

/// `klm upgrade` of every node of a case, one node a wave.
fn upgrade_all<'a>(case: &'a Case, target: &'a str, pod: &'a str, run: &'a str) -> Vec<String> {
    [
        "upgrade",
        "--target-version",
        target,
        "--node-selector",
        &format!("klm.test/case={}", case.namespace),
        "--batch-size",
        "1",
        "--verification-pod",
        pod,
        "--verification-namespace",
        &case.namespace,
        "--run-id",
        run,
        "--restart-timeout",
        "90s",
        "-o",
        "json",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

#[tokio::test]
async fn from_4_1_waves_run_the_releases_own_dispatcher_and_prune_nothing() {
    upgrades_without_pruning("prune41", "4.1.0", "4.2.0").await;
}

#[tokio::test]
async fn on_main_s_external_dispatcher_waves_prune_nothing_either() {
    upgrades_without_pruning("prunemain", "4.2.0", "0.0.0-dev").await;
}

/// Three nodes, one a wave, from `from` to `to` in job mode: each node at
/// `to`, none pruned, the user's values untouched, one revision.
async fn upgrades_without_pruning(name: &str, from: &str, to: &str) {
    let case = pruning_case(name, 3, from).await;
    let dir = tempfile::tempdir().unwrap();
    let pod = verification_pod(dir.path(), &[]).display().to_string();
    let values_before = case.user_values().await;
    let run = format!("wf-{name}");
    let args = upgrade_all(&case, to, &pod, &run);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    case.klm(&args).await.ok();
    for node in &case.nodes {
        let n = case.get_node(node).await;
        // The installer's image is the chart's appVersion (main's chart
        // carries the release it follows).
        assert_eq!(
            host_version(&n).as_deref(),
            Some(klm_rig::charts::app_version(to)),
            "{node}"
        );
        assert_eq!(
            annotation(&n, "katacontainers.io/kata-lifecycle-manager-status").as_deref(),
            Some("completed")
        );
    }
    assert_eq!(prunes(&case).await, Vec::new(), "no node was ever pruned");
    // The user's values are the user's: klm set nothing of its own but the
    // mode it keeps.
    let values_after = case.user_values().await;
    let mut expected = values_before;
    expected["deploymentMode"] = json!("job");
    assert_eq!(values_after, expected);
    // The release moved once without hooks; no helm upgrade ran per wave.
    let history = case
        .helm_admin(&[
            "history".into(),
            case.release.clone(),
            "-n".into(),
            case.namespace.clone(),
            "-o".into(),
            "json".into(),
        ])
        .await
        .unwrap();
    let history: Vec<serde_json::Value> = serde_json::from_str(&history).unwrap();
    assert_eq!(history.len(), 2, "{history:#?}");
    assert!(
        history[1]["description"]
            .as_str()
            .unwrap()
            .ends_with("(hooks not run)"),
        "{history:#?}"
    );
}

#[tokio::test]
async fn from_4_1_a_failed_wave_is_rolled_back_on_its_own_nodes_and_prunes_nothing() {
    let case = pruning_case("prune41b", 3, "4.1.0").await;
    let dir = tempfile::tempdir().unwrap();
    // 4.2.0 is broken on the second node only: its rollback verifies again.
    let pod = klm_rig::verification_pod::VerificationPod::succeeding()
        .broken_at("4.2.0", &[case.node(1)])
        .tolerating_everything()
        .write(dir.path(), "verify-broken-n2")
        .display()
        .to_string();
    let args = upgrade_all(&case, "4.2.0", &pod, "wf-prune41b");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let failed = case.klm(&args).await.code(1);
    let versions: Vec<Option<String>> = {
        let mut v = Vec::new();
        for node in &case.nodes {
            v.push(host_version(&case.get_node(node).await));
        }
        v
    };
    assert_eq!(
        versions,
        vec![
            Some("4.2.0".into()),
            Some("4.1.0".into()),
            Some("4.1.0".into())
        ],
        "the first wave completed, the second rolled back, the third never started"
    );
    assert_eq!(
        annotation(
            &case.get_node(case.node(1)).await,
            "katacontainers.io/kata-lifecycle-manager-status"
        )
        .as_deref(),
        Some("rolled-back"),
        "{}",
        failed.stdout
    );
    assert_eq!(prunes(&case).await, Vec::new(), "no node was ever pruned");
    assert_eq!(case.release_state().await.1, "4.1.0");
}

#[tokio::test]
async fn a_dispatcher_hook_of_unknown_shape_is_refused_before_anything_runs() {
    let case = Case::start_with(CaseSpec::new("prune41c", 1, "4.1.0"), |_| {
        vec![
            "deploymentMode=job".into(),
            "fake.dispatcherFlags={--prune-harder}".into(),
        ]
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pod = verification_pod(dir.path(), &[]).display().to_string();
    let before = case.snapshot().await;
    let refused = case
        .klm(&[
            "check-prerequisites",
            "--target-version",
            "4.2.0",
            "--verification-pod",
            &pod,
            "--verification-namespace",
            &case.namespace,
        ])
        .await
        .code(3);
    assert!(
        refused
            .stderr
            .contains("flags klm does not know: --prune-harder"),
        "{}",
        refused.stderr
    );
    assert_eq!(case.snapshot().await, before, "the refusal changed nothing");
}

#[tokio::test]
async fn a_chart_whose_default_mode_changed_keeps_the_release_in_its_mode() {
    // Installed at 4.2.0 with the default mode (daemonset), no value set.
    let case = Case::start(CaseSpec::new("modepin", 2, "4.2.0"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pod = verification_pod(dir.path(), &[]).display().to_string();
    // 4.3.0 makes job mode the default: without the pin, the release would
    // be rendered in job mode (which kata-deploy's state check refuses).
    let args = upgrade_all(&case, "4.3.0", &pod, "wf-modepin");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    case.klm(&args).await.ok();
    let values = case.user_values().await;
    assert_eq!(values["deploymentMode"], json!("daemonset"), "{values}");
    let pods = case.kata_pods().await;
    for node in &case.nodes {
        assert_eq!(
            host_version(&case.get_node(node).await).as_deref(),
            Some("4.3.0"),
            "{node}"
        );
        assert!(
            pods.contains_key(node),
            "{node} runs kata-deploy's DaemonSet pod"
        );
    }
}

#[tokio::test]
async fn a_value_the_target_removed_is_refused_by_the_preflight_with_the_fix() {
    // 4.0 in daemonset mode with a job.nodeSelector carried over: 4.1 removed
    // the key and refuses it in both modes.
    let case = Case::start_with(CaseSpec::new("removedkey", 1, "4.0.0"), |label| {
        vec![format!("job.nodeSelector.klm\\.test/case={label}")]
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pod = verification_pod(dir.path(), &[]).display().to_string();
    let before = case.snapshot().await;
    let refused = case
        .klm(&[
            "check-prerequisites",
            "--target-version",
            "4.1.0",
            "--verification-pod",
            &pod,
            "--verification-namespace",
            &case.namespace,
        ])
        .await
        .code(3);
    assert!(
        refused.stderr.contains("helm would refuse to upgrade")
            && refused.stderr.contains("job.nodeSelector=null"),
        "helm's words and the fix: {}",
        refused.stderr
    );
    assert_eq!(
        case.snapshot().await,
        before,
        "nothing was recorded or changed"
    );
}

/// Job mode under a failure budget of one: the second node fails and is
/// rolled back, the third is upgraded after it, and nothing is pruned.
async fn a_budget_of_one_goes_on_past_a_failed_node(case: &Case, from: &str, to: &str) {
    let dir = tempfile::tempdir().unwrap();
    let pod = klm_rig::verification_pod::VerificationPod::succeeding()
        .broken_at(to, &[case.node(1)])
        .tolerating_everything()
        .write(dir.path(), "verify-broken-n2")
        .display()
        .to_string();
    let run = format!("wf-{}", case.namespace);
    let mut args = upgrade_all(case, to, &pod, &run);
    args.extend(["--max-failed-nodes".to_string(), "1".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let ran = case.klm(&args).await.ok();
    let mut versions = Vec::new();
    for node in &case.nodes {
        versions.push(host_version(&case.get_node(node).await));
    }
    let to_app = klm_rig::charts::app_version(to).to_string();
    assert_eq!(
        versions,
        vec![Some(to_app.clone()), Some(from.into()), Some(to_app)],
        "the first and third nodes upgraded, the second rolled back\n{}",
        ran.stdout
    );
    let record = case.run_record().await.unwrap();
    assert_eq!(record["state"], "completed-with-failures", "{record}");
    assert_eq!(prunes(case).await, Vec::new(), "no node was ever pruned");
}

#[tokio::test]
async fn job_mode_under_a_failure_budget_goes_on_past_a_failed_node() {
    let case = Case::start_with(CaseSpec::new("jobbudget", 3, "3.32.0"), job_values)
        .await
        .unwrap();
    a_budget_of_one_goes_on_past_a_failed_node(&case, "3.32.0", "3.33.0").await;
}

#[tokio::test]
async fn from_4_1_under_a_failure_budget_the_run_goes_on_and_prunes_nothing() {
    let case = pruning_case("prune41budget", 3, "4.1.0").await;
    a_budget_of_one_goes_on_past_a_failed_node(&case, "4.1.0", "4.2.0").await;
    assert_eq!(case.release_state().await.1, "4.2.0");
}
