//! `klm status --watch`: the fleet table follows the cluster from watches.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::{Case, CaseSpec};

/// The next state `klm status --watch -o json` prints that `wanted` accepts.
async fn next_state(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    // A guard against a hang, not a measurement: a change shows within a second.
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.expect("read klm's stdout") {
            let state: Value = serde_json::from_str(&line).expect("one JSON state per line");
            if wanted(&state) {
                return state;
            }
        }
        panic!("klm status --watch ended");
    })
    .await
    .expect("the watched state arrives")
}

fn node_status<'a>(state: &'a Value, node: &str) -> Option<&'a str> {
    state["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["name"] == node)?["status"]
        .as_str()
}

#[tokio::test]
async fn status_watch_shows_each_change_as_it_happens() {
    let case = Case::start(CaseSpec::new("watch", 2, "3.27.0"))
        .await
        .unwrap();
    let node = case.node(0).to_string();
    let selector = format!("klm.test/case={}", case.namespace);
    let mut watching = case
        .klm_command(&[
            "status",
            "--watch",
            "--node-selector",
            &selector,
            "-o",
            "json",
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("klm status --watch starts");
    let mut lines = BufReader::new(watching.stdout.take().unwrap()).lines();

    // The fleet as it is: both nodes, in service.
    let first = next_state(&mut lines, |s| {
        s["nodes"].as_array().is_some_and(|n| n.len() == 2)
    })
    .await;
    assert_eq!(node_status(&first, &node), None);

    // A run starts and cordons a node: the watch shows the run and the node held.
    case.klm(&[
        "check-prerequisites",
        "--target-version",
        "3.28.0",
        "--run-id",
        "wf-watch",
    ])
    .await
    .ok();
    case.klm(&["cordon", "--nodes", &node, "--run-id", "wf-watch"])
        .await
        .ok();
    let cordoned = next_state(&mut lines, |s| node_status(s, &node) == Some("cordoned")).await;
    assert_eq!(cordoned["run"]["runId"], "wf-watch");
    let row = cordoned["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == node.as_str())
        .unwrap();
    assert_eq!(row["schedulable"], false);
    assert_eq!(row["heldBy"], "wf-watch");

    // Released again: the next state says so.
    case.klm(&["uncordon", "--nodes", &node, "--run-id", "wf-watch"])
        .await
        .ok();
    next_state(&mut lines, |s| {
        s["nodes"]
            .as_array()
            .and_then(|n| n.iter().find(|r| r["name"] == node.as_str()))
            .is_some_and(|r| r["schedulable"] == true)
    })
    .await;
    watching.kill().await.ok();
}
