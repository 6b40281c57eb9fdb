//! `klm upgrade` (issue 12): the whole upgrade in one process, on the rig,
//! as the chart's ServiceAccount. The same scenarios run through the
//! WorkflowTemplate's own steps (see `workflow.rs`) on a twin case, and the
//! end states (nodes, hosts, the run record, the release, each node's
//! Events) must be the same; the JSON event stream is checked event by
//! event; SIGTERM mid-wave ends the run like the exit handler.

use std::path::Path;
use std::process::Stdio;

use klm_rig::verification_pod::VerificationPod;
use kube::ResourceExt;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::run_end::{exit_handler, start, submit, wave};
use crate::support::{
    CASE_LABEL, Case, CaseSpec, Klm, annotation, host_version, job_values, unschedulable,
};
use crate::workflow::Workflow;

const STATUS: &str = "katacontainers.io/kata-lifecycle-manager-status";
const HELD_BY: &str = "katacontainers.io/kata-lifecycle-manager-run";

/// A verification pod that fails on the case's nodes `broken` while they
/// run 3.28.0 (a broken new version), and passes otherwise.
fn broken_on(case: &Case, dir: &Path, broken: &[usize]) -> std::path::PathBuf {
    let nodes: Vec<&str> = broken.iter().map(|i| case.node(*i)).collect();
    let pod = if nodes.is_empty() {
        VerificationPod::succeeding()
    } else {
        VerificationPod::succeeding().broken_at("3.28.0", &nodes)
    };
    pod.tolerating_everything()
        .write(dir, &format!("verify-{}", case.namespace))
}

/// The args of `klm upgrade` of the case's nodes to 3.28.0 (node by node,
/// to 3.28.0, unless `extra` says otherwise).
fn upgrade_args(case: &Case, run: &str, pod: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "upgrade",
        "--node-selector",
        &format!("{CASE_LABEL}={}", case.namespace),
        "--verification-pod",
        &pod.display().to_string(),
        "--verification-namespace",
        &case.namespace,
        "--run-id",
        run,
        "--restart-timeout",
        "60s",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    if !extra.contains(&"--target-version") {
        args.extend(["--target-version".into(), "3.28.0".into()]);
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// Starts `klm upgrade` (see [`upgrade_args`]) with its output piped; the
/// process and its standard output's lines.
fn spawn_upgrade(
    case: &Case,
    run: &str,
    pod: &Path,
    extra: &[&str],
) -> (
    tokio::process::Child,
    tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
) {
    let args = upgrade_args(case, run, pod, extra);
    let mut klm = case.klm_command(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let mut child = klm
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

/// Runs `klm upgrade` (see [`upgrade_args`]) to its end.
async fn klm_upgrade(case: &Case, run: &str, pod: &Path, extra: &[&str]) -> Klm {
    let args = upgrade_args(case, run, pod, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let klm = case.klm(&args).await;
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "klm upgrade: exit {}\n{}{}",
            klm.code, klm.stdout, klm.stderr
        );
    }
    klm
}

/// The same run through the WorkflowTemplate's steps, as Argo runs
/// deploy-version: the waves until one fails, then the exit handler.
async fn through_the_steps(case: &Case, run: &str, pod: &Path) {
    through_the_steps_with(case, run, pod, &[]).await
}

/// [`through_the_steps`] with workflow parameters.
async fn through_the_steps_with(case: &Case, run: &str, pod: &Path, params: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let wf = Workflow::render(case, pod).await;
    let submission = submit(case, &wf, run, params, dir.path());
    let mut status = "Succeeded";
    for index in start(&submission).await {
        if wave(&submission, &index.to_string()).await.code != 0 {
            status = "Failed";
            break;
        }
    }
    if status == "Succeeded" {
        submission.step("finish-run", &[]).await.ok();
    }
    let failures = if status == "Failed" {
        r#"[{"displayName":"settle","message":"Error (exit code 1)","phase":"Failed"}]"#
    } else {
        ""
    };
    exit_handler(&submission, status, failures).await.ok();
}

/// Replaces the case's own names (nodes, namespace, run) so that twin
/// cases compare equal.
fn normalise(text: &str, case: &Case, run: &str) -> String {
    let mut out = text.to_string();
    // The longest names first: n10 before n1.
    for (i, node) in case.nodes.iter().enumerate().rev() {
        out = out.replace(node.as_str(), &format!("<node{}>", i + 1));
    }
    out.replace(&case.namespace, "<ns>").replace(run, "<run>")
}

/// What a run leaves behind, in the case's own terms.
async fn end_state(case: &Case, run: &str) -> Value {
    let mut nodes = Vec::new();
    for name in &case.nodes {
        let node = case.get_node(name).await;
        let annotations: Map<String, Value> = node
            .annotations()
            .iter()
            .filter(|(k, _)| k.starts_with("katacontainers.io/") || k.starts_with("rig.klm.test/"))
            .map(|(k, v)| match k.ends_with("-verified-at") {
                // When, differs from run to run; that it is there does not.
                true => (k.clone(), json!("a time")),
                false => (k.clone(), json!(normalise(v, case, run))),
            })
            .collect();
        let labels: Map<String, Value> = node
            .labels()
            .iter()
            .filter(|(k, _)| k.starts_with("katacontainers.io/"))
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        let events: Vec<String> = case
            .node_events(name)
            .await
            .into_iter()
            .map(|(reason, kind, _)| format!("{kind} {reason}"))
            .collect();
        nodes.push(json!({
            "annotations": annotations,
            "labels": labels,
            "unschedulable": unschedulable(&node),
            "taints": node.spec.as_ref().and_then(|s| s.taints.clone()),
            "events": events,
        }));
    }
    let record = case.run_record().await.unwrap_or(Value::Null);
    let kept: Map<String, Value> = [
        "state",
        "targetVersion",
        "mode",
        "nodes",
        "waves",
        "nodeVersions",
        "before",
        "chartValues",
    ]
    .iter()
    .map(|k| (k.to_string(), record[*k].clone()))
    .collect();
    let record: Value =
        serde_json::from_str(&normalise(&Value::Object(kept).to_string(), case, run)).unwrap();
    let (revision, version) = case.release_state().await;
    json!({"nodes": nodes, "record": record, "release": [revision, version]})
}

/// The phases of a JSON event stream as `(phase, wave, node index)`.
fn phases(case: &Case, events: &[Value]) -> Vec<(String, Option<u64>, Option<usize>)> {
    events
        .iter()
        .map(|e| {
            let node = e["node"]
                .as_str()
                .map(|n| case.nodes.iter().position(|m| m == n).expect("a case node") + 1);
            (
                e["phase"].as_str().unwrap().to_string(),
                e["wave"].as_u64(),
                node,
            )
        })
        .collect()
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON event: {l}: {e}")))
        .collect()
}

#[tokio::test]
async fn three_nodes_upgrade_as_the_steps_do_with_an_ordered_event_stream() {
    let spec = |name| CaseSpec::new(name, 3, "3.27.0");
    let (by_steps, in_one) = tokio::join!(Case::start(spec("steps3")), Case::start(spec("one3")));
    let (by_steps, in_one) = (by_steps.unwrap(), in_one.unwrap());
    let dir = tempfile::tempdir().unwrap();

    through_the_steps(&by_steps, "run-3", &broken_on(&by_steps, dir.path(), &[])).await;
    let upgraded = klm_upgrade(
        &in_one,
        "run-3",
        &broken_on(&in_one, dir.path(), &[]),
        &["-o", "json"],
    )
    .await
    .ok();

    for node in &in_one.nodes {
        let n = in_one.get_node(node).await;
        assert_eq!(
            annotation(&n, STATUS).as_deref(),
            Some("completed"),
            "{node}"
        );
        assert_eq!(host_version(&n).as_deref(), Some("3.28.0"), "{node}");
        assert!(!unschedulable(&n), "{node}");
        assert_eq!(annotation(&n, HELD_BY), None, "{node}");
    }
    assert_eq!(in_one.run_record().await.unwrap()["state"], "completed");
    assert_eq!(
        end_state(&in_one, "run-3").await,
        end_state(&by_steps, "run-3").await,
        "klm upgrade and the workflow's steps leave the same cluster"
    );

    // The Events tell each node's upgrade.
    let events: Vec<String> = in_one
        .node_events(in_one.node(1))
        .await
        .into_iter()
        .map(|(reason, _, note)| {
            assert!(note.contains("run-3"), "{note}");
            reason
        })
        .collect();
    assert_eq!(
        events,
        [
            "KataUpgradeCordoned",
            "KataUpgraded",
            "KataVerificationPassed",
            "KataUpgradeCompleted"
        ]
    );

    // One JSON object per event, in order, each with the run, wave, node,
    // phase and time; then the summary.
    let lines = json_lines(&upgraded.stdout);
    let (summary, events) = lines.split_last().expect("a summary");
    assert_eq!(summary["phase"], "summary", "{summary}");
    assert_eq!(summary["result"], "completed", "{summary}");
    assert_eq!(summary["completed"], 3, "{summary}");
    assert_eq!(summary["wavesDone"], 3, "{summary}");
    assert_eq!(summary["notReached"], serde_json::json!([]), "{summary}");
    assert!(summary.get("next").is_none(), "{summary}");
    // Versions and counts are fields, not only words.
    assert_eq!(
        (events[0]["from"].as_str(), events[0]["to"].as_str()),
        (Some("3.27.0"), Some("3.28.0")),
        "{}",
        events[0]
    );
    assert_eq!(
        events[1]["nodes"],
        serde_json::json!(in_one.nodes),
        "{}",
        events[1]
    );
    for event in events {
        assert_eq!(event["runId"], "run-3", "{event}");
        for key in ["wave", "node", "phase", "time"] {
            assert!(event.get(key).is_some(), "{key} missing: {event}");
        }
    }
    let times: Vec<&str> = events.iter().map(|e| e["time"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert_eq!(events[1]["waves"], 3);
    let s = |p: &str| p.to_string();
    let mut expected = vec![
        (s("started"), None, None),
        (s("planned"), None, None),
        (s("release-upgraded"), None, None),
    ];
    for wave in 1..=3u64 {
        let node = Some(wave as usize);
        expected.push((s("wave-started"), Some(wave), None));
        for phase in [
            "cordoned",
            "restarting",
            "verifying",
            "verified",
            "completed",
        ] {
            expected.push((s(phase), Some(wave), node));
        }
        expected.push((s("wave-completed"), Some(wave), None));
    }
    expected.extend([(s("closing"), None, None), (s("run-completed"), None, None)]);
    assert_eq!(phases(&in_one, events), expected);

    // Resuming a finished run's target changes nothing: every node is skipped.
    let snapshot = in_one.snapshot().await;
    let again = klm_upgrade(&in_one, "run-3b", &broken_on(&in_one, dir.path(), &[]), &[])
        .await
        .ok();
    assert!(
        again.stdout.contains("0 node(s) selected"),
        "{}",
        again.stdout
    );
    assert_eq!(in_one.kata_pods().await.len(), 3);
    let after = in_one.snapshot().await;
    assert_eq!(
        serde_json::from_str::<Value>(&after).unwrap()["nodes"],
        serde_json::from_str::<Value>(&snapshot).unwrap()["nodes"]
    );
}

#[tokio::test]
async fn a_failure_on_the_second_node_rolls_it_back_and_leaves_the_third_untouched() {
    let spec = |name| CaseSpec::new(name, 3, "3.27.0");
    let (by_steps, in_one) = tokio::join!(Case::start(spec("stepsf")), Case::start(spec("onef")));
    let (by_steps, in_one) = (by_steps.unwrap(), in_one.unwrap());
    let dir = tempfile::tempdir().unwrap();
    let untouched_pod = in_one.kata_pods().await[in_one.node(2)].uid();

    through_the_steps(&by_steps, "run-f", &broken_on(&by_steps, dir.path(), &[1])).await;
    // Without a terminal and without -o json: one plain line per event.
    let failed = klm_upgrade(&in_one, "run-f", &broken_on(&in_one, dir.path(), &[1]), &[])
        .await
        .code(1);
    assert!(failed.stderr.contains("wave 2"), "{}", failed.stderr);
    let n2 = in_one.node(1);
    assert!(
        failed
            .stdout
            .lines()
            .any(|l| l.contains(&format!("wave 2 {n2} verification-failed"))),
        "{}",
        failed.stdout
    );
    assert!(
        failed.stdout.contains(
            "run run-f: failed: 1 node(s) completed, 1 rolled back, 0 failed, in 2 of 3 wave(s)"
        ),
        "{}",
        failed.stdout
    );
    // The first line names the run; after the failure, the node the run
    // never reached and the exact command to start again.
    assert!(
        failed
            .stdout
            .lines()
            .next()
            .unwrap_or_default()
            .contains("run run-f started"),
        "{}",
        failed.stdout
    );
    let n3 = in_one.node(2);
    assert!(
        failed.stdout.contains(&format!("left untouched (1): {n3}")),
        "{}",
        failed.stdout
    );
    assert!(
        failed.stdout.lines().any(|l| l
            .starts_with("next: fix the cause of the failure, then klm upgrade ")
            && !l.contains("--run-id")),
        "{}",
        failed.stdout
    );
    // The wave's failure is told once on stdout (the run's end does not
    // repeat it) and once as the error.
    assert_eq!(
        failed.stdout.matches("failed verification on").count(),
        1,
        "{}",
        failed.stdout
    );

    let n = in_one.get_node(in_one.node(0)).await;
    assert_eq!(annotation(&n, STATUS).as_deref(), Some("completed"));
    assert_eq!(host_version(&n).as_deref(), Some("3.28.0"));
    let n = in_one.get_node(n2).await;
    assert_eq!(annotation(&n, STATUS).as_deref(), Some("rolled-back"));
    assert_eq!(host_version(&n).as_deref(), Some("3.27.0"));
    assert!(!unschedulable(&n));
    let n = in_one.get_node(in_one.node(2)).await;
    assert_eq!(annotation(&n, STATUS), None, "the third node is untouched");
    assert!(!unschedulable(&n));
    assert_eq!(
        in_one.kata_pods().await[in_one.node(2)].uid(),
        untouched_pod
    );
    let record = in_one.run_record().await.unwrap();
    assert_eq!(record["state"], "failed");

    let reasons: Vec<String> = in_one
        .node_events(n2)
        .await
        .into_iter()
        .map(|(reason, _, _)| reason)
        .collect();
    assert!(
        reasons.contains(&"KataVerificationFailed".to_string()),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&"KataRolledBack".to_string()),
        "{reasons:?}"
    );

    assert_eq!(
        end_state(&in_one, "run-f").await,
        end_state(&by_steps, "run-f").await,
        "klm upgrade and the workflow's steps leave the same cluster"
    );
}

#[tokio::test]
async fn a_failure_budget_of_one_rolls_the_failed_node_back_and_the_run_goes_on() {
    let spec = |name| CaseSpec::new(name, 3, "3.27.0");
    let (by_steps, in_one) = tokio::join!(Case::start(spec("stepsb")), Case::start(spec("oneb")));
    let (by_steps, in_one) = (by_steps.unwrap(), in_one.unwrap());
    let dir = tempfile::tempdir().unwrap();

    let budget = [("max-failed-nodes", "1")];
    through_the_steps_with(
        &by_steps,
        "run-b",
        &broken_on(&by_steps, dir.path(), &[1]),
        &budget,
    )
    .await;
    let ran = klm_upgrade(
        &in_one,
        "run-b",
        &broken_on(&in_one, dir.path(), &[1]),
        &["--max-failed-nodes", "1"],
    )
    .await
    .code(0);
    let (n1, n2, n3) = (in_one.node(0), in_one.node(1), in_one.node(2));
    assert!(
        ran.stdout.lines().any(|l| l.contains("wave 2")
            && l.contains("wave-failed-within-budget")
            && l.contains("1 of the 1 failed node(s) the run allows")),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout.contains(
            "run run-b: completed-with-failures: 2 node(s) completed, 1 rolled back, 0 failed, in 3 of 3 wave(s)"
        ),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout.contains(&format!(
            "completed with failures: {n2} failed within the budget"
        )),
        "{}",
        ran.stdout
    );
    assert!(
        ran.stdout
            .lines()
            .any(|l| l.starts_with("next: fix the cause of the failures, then klm upgrade ")),
        "{}",
        ran.stdout
    );

    // The nodes before and after the failed one are upgraded; the failed
    // one is back at its version, in service.
    for node in [n1, n3] {
        let n = in_one.get_node(node).await;
        assert_eq!(
            annotation(&n, STATUS).as_deref(),
            Some("completed"),
            "{node}"
        );
        assert_eq!(host_version(&n).as_deref(), Some("3.28.0"), "{node}");
        assert!(!unschedulable(&n), "{node}");
    }
    let n = in_one.get_node(n2).await;
    assert_eq!(annotation(&n, STATUS).as_deref(), Some("rolled-back"));
    assert_eq!(host_version(&n).as_deref(), Some("3.27.0"));
    assert!(!unschedulable(&n));

    let record = in_one.run_record().await.unwrap();
    assert_eq!(record["state"], "completed-with-failures");
    assert_eq!(record["maxFailedNodes"], 1);
    let why = record["failedNodes"][n2].as_str().unwrap_or_default();
    assert!(why.contains("wave 2"), "{record}");
    let reasons: Vec<String> = in_one
        .node_events(n2)
        .await
        .into_iter()
        .map(|(reason, _, _)| reason)
        .collect();
    for reason in [
        "KataVerificationFailed",
        "KataUpgradeFailedWithinBudget",
        "KataRolledBack",
    ] {
        assert!(
            reasons.contains(&reason.to_string()),
            "{reason}: {reasons:?}"
        );
    }
    let status = in_one.klm(&["status"]).await.code(0);
    assert!(
        status
            .stdout
            .contains("failure budget: 1 of 1 node(s) failed"),
        "{}",
        status.stdout
    );

    assert_eq!(
        end_state(&in_one, "run-b").await,
        end_state(&by_steps, "run-b").await,
        "klm upgrade and the workflow's steps leave the same cluster"
    );

    // The next run retries only the failed node.
    let retried = klm_upgrade(&in_one, "run-b2", &broken_on(&in_one, dir.path(), &[]), &[])
        .await
        .code(0);
    assert!(
        retried.stdout.contains("1 node(s) selected"),
        "{}",
        retried.stdout
    );
    let n = in_one.get_node(n2).await;
    assert_eq!(annotation(&n, STATUS).as_deref(), Some("completed"));
    assert_eq!(host_version(&n).as_deref(), Some("3.28.0"));
}

#[tokio::test]
async fn a_second_failure_over_a_budget_of_one_stops_the_run() {
    let case = Case::start(CaseSpec::new("overb", 3, "3.27.0"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let failed = klm_upgrade(
        &case,
        "run-o",
        &broken_on(&case, dir.path(), &[0, 1]),
        &["--max-failed-nodes", "1"],
    )
    .await
    .code(1);
    assert!(
        failed.stdout.contains("wave-failed-within-budget"),
        "{}",
        failed.stdout
    );
    let n = case.get_node(case.node(2)).await;
    assert_eq!(annotation(&n, STATUS), None, "the third node is untouched");
    let record = case.run_record().await.unwrap();
    assert_eq!(record["state"], "failed");
    for node in [case.node(0), case.node(1)] {
        let n = case.get_node(node).await;
        assert_eq!(
            annotation(&n, STATUS).as_deref(),
            Some("rolled-back"),
            "{node}"
        );
        assert_eq!(host_version(&n).as_deref(), Some("3.27.0"), "{node}");
    }
}

#[tokio::test]
async fn a_canary_gate_soaks_verifies_again_and_waits_for_klm_approve() {
    let case = Case::start(CaseSpec::new("gate", 3, "3.27.0"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pod = broken_on(&case, dir.path(), &[]);
    let gate = [
        "-o",
        "json",
        "--canary-size",
        "1",
        "--batch-size",
        "2",
        "--gate",
        "canary",
        "--gate-soak",
        "2s",
        "--gate-approval",
    ];
    let (child, mut lines) = spawn_upgrade(&case, "run-gate", &pod, &gate);
    let mut events: Vec<Value> = Vec::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        let event: Value = serde_json::from_str(&line).unwrap();
        let approval = event["phase"] == "held"
            && event["message"]
                .as_str()
                .unwrap_or_default()
                .contains("waiting for approval");
        events.push(event);
        if approval {
            break;
        }
    }
    // Held before wave 2: klm status says so, and names the command.
    let status = case.klm(&["status"]).await.code(0);
    assert!(
        status
            .stdout
            .contains("held before wave 2: waiting for approval (klm approve --run-id run-gate"),
        "{}",
        status.stdout
    );
    let record = case.run_record().await.unwrap();
    assert_eq!(
        record["gates"][0]["passage"]["reverified"], true,
        "{record:#}"
    );
    assert_eq!(
        annotation(&case.get_node(case.node(1)).await, STATUS),
        None,
        "wave 2 waits"
    );
    let approved = case.klm(&["approve", "--run-id", "run-gate"]).await.code(0);
    assert!(
        approved.stdout.contains("wave 2 approved"),
        "{}",
        approved.stdout
    );
    while let Some(line) = lines.next_line().await.unwrap() {
        events.push(serde_json::from_str(&line).unwrap());
    }
    let output = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}\n{events:#?}");
    let seen: Vec<(&str, Option<u64>)> = events
        .iter()
        .map(|e| (e["phase"].as_str().unwrap(), e["wave"].as_u64()))
        .collect();
    let at = |phase: &str, wave: u64| {
        seen.iter()
            .position(|s| *s == (phase, Some(wave)))
            .unwrap_or_else(|| panic!("no {phase} of wave {wave}: {seen:?}"))
    };
    // The canary completes, the soak holds, its verification passes again,
    // the approval holds, then wave 2 starts.
    assert!(at("wave-completed", 1) < at("held", 2), "{seen:?}");
    assert!(at("held", 2) < at("gate-passed", 2), "{seen:?}");
    assert!(at("gate-passed", 2) < at("wave-started", 2), "{seen:?}");
    for node in &case.nodes {
        let n = case.get_node(node).await;
        assert_eq!(
            annotation(&n, STATUS).as_deref(),
            Some("completed"),
            "{node}"
        );
    }
    // Nothing waits for an approval any more.
    let refused = case.klm(&["approve", "--run-id", "run-gate"]).await.code(3);
    assert!(
        refused.stderr.contains("waits for no approval"),
        "{}",
        refused.stderr
    );
}

#[tokio::test]
async fn sigterm_mid_wave_releases_the_nodes_and_a_new_run_can_start() {
    let case = Case::start(CaseSpec::new("sigterm", 2, "3.27.0"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pod = broken_on(&case, dir.path(), &[]);
    let (child, mut lines) = spawn_upgrade(&case, "run-term", &pod, &["-o", "json"]);
    let mut events = Vec::new();
    // SIGTERM once wave 1's kata-deploy restarts.
    while let Some(line) = lines.next_line().await.unwrap() {
        let event: Value = serde_json::from_str(&line).unwrap();
        let restarting = event["phase"] == "restarting";
        events.push(event);
        if restarting {
            let pid = child.id().unwrap().to_string();
            let killed = tokio::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .await
                .unwrap();
            assert!(killed.success());
            break;
        }
    }
    while let Some(line) = lines.next_line().await.unwrap() {
        events.push(serde_json::from_str(&line).unwrap());
    }
    let output = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "klm upgrade (SIGTERM): {:?}\n{events:#?}\n{stderr}",
            output.status
        );
    }
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("interrupted by SIGTERM"), "{stderr}");
    let seen: Vec<&str> = events
        .iter()
        .map(|e| e["phase"].as_str().unwrap())
        .collect();
    let after_signal = &seen[seen.iter().position(|p| *p == "restarting").unwrap()..];
    assert!(after_signal.contains(&"interrupted"), "{seen:?}");
    assert_eq!(seen.last(), Some(&"summary"), "{seen:?}");
    assert_eq!(seen[seen.len() - 2], "run-failed", "{seen:?}");
    let summary = events.last().unwrap();
    assert_eq!(summary["result"], "failed", "{summary}");
    let next = summary["next"].as_str().unwrap_or_default();
    assert!(
        next.starts_with("klm upgrade ") && !next.contains("--run-id"),
        "the next command is a new run of the same upgrade: {summary}"
    );
    assert!(
        !seen.contains(&"wave-started")
            || seen.iter().filter(|p| **p == "wave-started").count() == 1,
        "no second wave: {seen:?}"
    );

    // The run is closed failed; every node is released, none left held.
    let record = case.run_record().await.unwrap();
    assert_eq!(record["state"], "failed", "{record}");
    assert!(
        record["failure"].as_str().unwrap().contains("SIGTERM"),
        "{record}"
    );
    for node in &case.nodes {
        let n = case.get_node(node).await;
        assert!(!unschedulable(&n), "{node}");
        assert_eq!(annotation(&n, HELD_BY), None, "{node}");
        assert_eq!(
            host_version(&n).as_deref(),
            Some("3.27.0"),
            "{node} is back where it was"
        );
    }

    // The lock is free: a new run starts and completes.
    klm_upgrade(&case, "run-term-2", &pod, &["--batch-size", "2"])
        .await
        .ok();
    for node in &case.nodes {
        assert_eq!(
            host_version(&case.get_node(node).await).as_deref(),
            Some("3.28.0")
        );
    }
}

#[tokio::test]
async fn dry_run_is_the_plan_and_changes_nothing() {
    let case = Case::start(CaseSpec::new("dryrun", 2, "3.27.0"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let snapshot = case.snapshot().await;
    let plan = klm_upgrade(
        &case,
        "run-dry",
        &broken_on(&case, dir.path(), &[]),
        &["--dry-run", "--batch-size", "2"],
    )
    .await
    .ok();
    assert!(
        plan.stdout.contains("Nothing was changed."),
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.contains(case.node(1)), "{}", plan.stdout);
    assert_eq!(case.snapshot().await, snapshot);
    // No verification pod: refused before anything changes.
    let selector = format!("{CASE_LABEL}={}", case.namespace);
    let refused = case
        .klm(&[
            "upgrade",
            "--target-version",
            "3.28.0",
            "--node-selector",
            &selector,
        ])
        .await
        .code(2);
    assert!(
        refused.stderr.contains("no verification pod"),
        "{}",
        refused.stderr
    );
    assert_eq!(case.snapshot().await, snapshot);
}

#[tokio::test]
async fn job_mode_waves_are_scoped_upgrades_and_complete() {
    let case = Case::start_with(CaseSpec::new("onejob", 3, "3.32.0"), job_values)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let upgraded = klm_upgrade(
        &case,
        "run-job",
        &broken_on(&case, dir.path(), &[]),
        &[
            "--target-version",
            "3.33.0",
            "--batch-size",
            "2",
            "-o",
            "json",
        ],
    )
    .await
    .ok();
    let events = json_lines(&upgraded.stdout);
    assert_eq!(events[1]["waves"], 2, "{}", upgraded.stdout);
    assert!(
        !events.iter().any(|e| e["phase"] == "release-upgraded"),
        "job mode upgrades wave by wave, not before the waves"
    );
    for node in &case.nodes {
        let n = case.get_node(node).await;
        assert_eq!(
            annotation(&n, STATUS).as_deref(),
            Some("completed"),
            "{node}"
        );
        assert_eq!(host_version(&n).as_deref(), Some("3.33.0"), "{node}");
        assert!(!unschedulable(&n), "{node}");
    }
    let record = case.run_record().await.unwrap();
    assert_eq!(record["state"], "completed");
    assert_eq!(record["mode"], "job");
    assert_eq!(case.release_state().await.1, "3.33.0");
}

#[tokio::test]
async fn klm_pause_holds_the_next_wave_resume_lets_it_start_and_abort_ends_the_run() {
    let case = Case::start(CaseSpec::new("pause", 2, "3.27.0"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pod = broken_on(&case, dir.path(), &[]);
    // Wave 2 waits for an approval: a point where the run is sure to be.
    let gate = [
        "-o",
        "json",
        "--canary-size",
        "1",
        "--gate",
        "canary",
        "--gate-approval",
    ];
    let (child, mut lines) = spawn_upgrade(&case, "run-pause", &pod, &gate);
    let mut events: Vec<Value> = Vec::new();
    let mut aborted = false;
    while let Some(line) = lines.next_line().await.unwrap() {
        let event: Value = serde_json::from_str(&line).unwrap();
        let phase = event["phase"].as_str().unwrap_or_default().to_string();
        let wave = event["wave"].as_u64();
        events.push(event);
        match (phase.as_str(), wave) {
            ("held", _) => {
                // Paused while held: once approved, wave 2 still waits.
                let paused = case.klm(&["pause", "--run-id", "run-pause"]).await.ok();
                assert!(
                    paused.stdout.contains("run run-pause paused by "),
                    "{}",
                    paused.stdout
                );
                let again = case.klm(&["pause", "--run-id", "run-pause"]).await.ok();
                assert!(again.stdout.contains("already paused"), "{}", again.stdout);
                let status = case.klm(&["status", "--run-id", "run-pause"]).await.ok();
                assert!(
                    status.stdout.lines().any(|l| l.starts_with("paused by ")),
                    "{}",
                    status.stdout
                );
                case.klm(&["approve", "--run-id", "run-pause"]).await.ok();
            }
            ("paused", _) => {
                let n2 = case.get_node(case.node(1)).await;
                assert!(!unschedulable(&n2), "a paused run cordons nothing new");
                case.klm(&["resume", "--run-id", "run-pause"]).await.ok();
            }
            // Aborted mid-wave: the run ends as the exit handler ends it.
            ("restarting", Some(2)) if !aborted => {
                aborted = true;
                let abort = case.klm(&["abort", "--run-id", "run-pause"]).await.ok();
                assert!(abort.stdout.contains("aborted by "), "{}", abort.stdout);
            }
            _ => {}
        }
    }
    let output = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let seen: Vec<(&str, Option<u64>)> = events
        .iter()
        .map(|e| (e["phase"].as_str().unwrap(), e["wave"].as_u64()))
        .collect();
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "klm upgrade (paused, resumed, aborted): {:?}\n{seen:?}\n{stderr}",
            output.status
        );
    }
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("klm abort"), "{stderr}");
    let position = |wanted: (&str, Option<u64>)| seen.iter().position(|s| *s == wanted);
    let paused = position(("paused", Some(2))).expect("wave 2 paused");
    let resumed = position(("resumed", Some(2))).expect("wave 2 resumed");
    let started = position(("wave-started", Some(2))).expect("wave 2 started");
    assert!(paused < resumed && resumed < started, "{seen:?}");
    assert!(seen.contains(&("interrupted", None)), "{seen:?}");
    assert_eq!(seen[seen.len() - 2].0, "run-failed", "{seen:?}");
    // Node 1 completed; node 2, caught mid-wave, is back and in service.
    let n1 = case.get_node(case.node(0)).await;
    assert_eq!(annotation(&n1, STATUS).as_deref(), Some("completed"));
    let n2 = case.get_node(case.node(1)).await;
    assert_eq!(host_version(&n2).as_deref(), Some("3.27.0"));
    assert!(!unschedulable(&n2));
    assert_eq!(annotation(&n2, HELD_BY), None);
    let record = case.run_record().await.unwrap();
    assert_ne!(record["state"], "running", "{record}");
    assert!(record["aborted"]["by"].is_string(), "{record}");
    // Nothing is left to pause.
    let refused = case.klm(&["pause", "--run-id", "run-pause"]).await.code(3);
    assert!(
        refused.stderr.contains("nothing to pause"),
        "{}",
        refused.stderr
    );
}

#[tokio::test]
async fn a_workflows_run_is_paused_with_argo_and_klm_says_how() {
    let case = Case::start(CaseSpec::new("pausewf", 1, "3.27.0"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pod = broken_on(&case, dir.path(), &[]).display().to_string();
    // A run the WorkflowTemplate's first step recorded.
    case.klm(&[
        "check-prerequisites",
        "--target-version",
        "3.28.0",
        "--run-id",
        "upgrade-x7k2p",
        "--verification-pod",
        &pod,
        "--verification-namespace",
        &case.namespace,
    ])
    .await
    .ok();
    let before = case.snapshot().await;
    for (command, argo) in [
        ("pause", "argo suspend upgrade-x7k2p"),
        ("resume", "argo resume upgrade-x7k2p"),
        ("abort", "argo stop upgrade-x7k2p"),
    ] {
        let refused = case
            .klm(&[command, "--run-id", "upgrade-x7k2p"])
            .await
            .code(3);
        assert!(
            refused.stderr.contains("driven by its workflow") && refused.stderr.contains(argo),
            "{}",
            refused.stderr
        );
    }
    assert_eq!(case.snapshot().await, before, "nothing changed");
}
