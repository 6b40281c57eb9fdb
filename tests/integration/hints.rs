//! What klm prints for a person to do next must work when pasted (issue 25,
//! items 7 and 8): the command that ends a run klm left without cleaning
//! up carries the release, chart and verification pod it needs; a step
//! asked for a run the release does not have refuses (exit 3) and names
//! the runs there are; a run that meets another's lock is offered the
//! dead run's close-run, never the lock's deletion.

use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::{Case, CaseSpec, annotation, host_version, unschedulable};
use crate::upgrade::verification_pod;

const HELD_BY: &str = "katacontainers.io/kata-lifecycle-manager-run";

/// The command inside the first backticks after `after` in `text`.
fn quoted_command<'a>(text: &'a str, after: &str) -> &'a str {
    let from = text
        .find(after)
        .unwrap_or_else(|| panic!("{after:?} in {text}"))
        + after.len();
    let rest = &text[from..];
    let start = rest.find('`').expect("a command in backticks") + 1;
    let end = start + rest[start..].find('`').expect("its closing backtick");
    &rest[start..end]
}

async fn kill(child: &tokio::process::Child, signal: &str) {
    let pid = child.id().unwrap().to_string();
    let killed = tokio::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
}

#[tokio::test]
async fn an_abandoned_runs_close_command_works_when_pasted_and_strangers_get_no_lock_to_delete() {
    let case = Case::start(CaseSpec::new("hints", 2, "3.27.0"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pod = verification_pod(dir.path(), &[]).display().to_string();
    let selector = format!("{}={}", crate::support::CASE_LABEL, case.namespace);
    let run = "run-left";
    let upgrade = |run: &str| -> Vec<String> {
        [
            "upgrade",
            "--target-version",
            "3.28.0",
            "--node-selector",
            &selector,
            "--verification-pod",
            &pod,
            "--verification-namespace",
            &case.namespace,
            "--run-id",
            run,
            "--restart-timeout",
            "60s",
            "-o",
            "json",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let args = upgrade(run);
    let mut child = case
        .klm_command(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // SIGTERM once wave 1's kata-deploy restarts, and again once the run
    // is interrupted: klm leaves at once, the run still holding its node.
    while let Some(line) = lines.next_line().await.unwrap() {
        let event: Value = serde_json::from_str(&line).unwrap();
        match event["phase"].as_str() {
            Some("restarting") => kill(&child, "-TERM").await,
            Some("interrupted") => {
                kill(&child, "-TERM").await;
                break;
            }
            _ => {}
        }
    }
    while lines.next_line().await.unwrap().is_some() {}
    let output = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    #[allow(clippy::print_stderr)]
    {
        eprintln!("klm upgrade (two SIGTERMs): {:?}\n{stderr}", output.status);
    }
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("left without cleaning up"), "{stderr}");
    let close = quoted_command(&stderr, "end the run with ").to_string();
    assert_eq!(case.run_record().await.unwrap()["state"], "running");
    let held: Vec<String> = {
        let mut held = Vec::new();
        for node in &case.nodes {
            if annotation(&case.get_node(node).await, HELD_BY).as_deref() == Some(run) {
                held.push(node.clone());
            }
        }
        held
    };
    assert!(!held.is_empty(), "the run left holding a node");

    // A stranger's run meets the lock: it is offered waiting, or the dead
    // run's close-run for its owner; never deleting the lock.
    let before = case.snapshot().await;
    let other = upgrade("run-other");
    let refused = case
        .klm(&other.iter().map(String::as_str).collect::<Vec<_>>())
        .await
        .code(3);
    assert!(
        refused.stderr.contains(&format!(
            "`klm close-run --run-id {run} --helm-release kata-deploy --helm-namespace {}`",
            case.namespace
        )),
        "{}",
        refused.stderr
    );
    for never in ["delete", "configmap", "complete --finish-run"] {
        assert!(
            !refused.stderr.contains(never),
            "{never}: {}",
            refused.stderr
        );
    }

    // A run the release does not have: refused, naming the runs there are
    // (and, for a run of another release, the flags that reach it).
    let unknown = case
        .klm(&["close-run", "--run-id", "no-such-run"])
        .await
        .code(3);
    assert!(
        unknown.stderr.contains(&format!(
            "release {}/kata-deploy has no run no-such-run",
            case.namespace
        )) && unknown
            .stderr
            .contains(&format!("{run} (running, on record)")),
        "{}",
        unknown.stderr
    );
    let elsewhere = case
        .klm(&[
            "close-run",
            "--run-id",
            run,
            "--helm-release",
            "kata-deploy-2",
        ])
        .await
        .code(3);
    assert!(
        elsewhere.stderr.contains(&format!(
            "`klm close-run --run-id {run} --helm-release kata-deploy --helm-namespace {}`",
            case.namespace
        )),
        "{}",
        elsewhere.stderr
    );
    let uncordon = case
        .klm(&["uncordon", "--all-held", "--run-id", "no-such-run"])
        .await
        .code(3);
    assert!(
        uncordon.stderr.contains("has no run no-such-run"),
        "{}",
        uncordon.stderr
    );
    assert_eq!(
        case.snapshot().await,
        before,
        "a refusal changed the cluster"
    );

    // The printed command, pasted into a shell with nothing else set up.
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_klm"))
        .parent()
        .unwrap()
        .display()
        .to_string();
    let pasted = tokio::process::Command::new("sh")
        .args(["-c", &close])
        .env_clear()
        .env("PATH", format!("{bin}:/usr/bin:/bin"))
        .current_dir("/")
        .output()
        .await
        .unwrap();
    let out = crate::support::Klm::from(pasted);
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "pasted {close}: exit {}\n{}{}",
            out.code, out.stdout, out.stderr
        );
    }
    let out = out.ok();
    assert!(
        out.stdout.contains(&format!("run {run} closed")),
        "{}",
        out.stdout
    );
    let record = case.run_record().await.unwrap();
    assert_ne!(record["state"], "running", "{record}");
    for node in &case.nodes {
        let n = case.get_node(node).await;
        assert!(!unschedulable(&n), "{node}");
        assert_eq!(annotation(&n, HELD_BY), None, "{node}");
        assert_eq!(host_version(&n).as_deref(), Some("3.27.0"), "{node}");
    }
}
