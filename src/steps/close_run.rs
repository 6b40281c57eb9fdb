//! Ending a run however it ended: what `klm close-run` does (the
//! workflow's exit handler, or by hand after `argo terminate`). It decides
//! per node, from what the run did to it, and closes the run record so the
//! next run may start:
//!
//! * nodes caught mid-upgrade (`upgrading`, `verifying`, `rolling-back`, or
//!   recorded as upgraded or verified but not completed) are left to
//!   rollback ([`crate::steps::rollback`]), or marked `failed` and kept cordoned
//!   when the run has no record to roll back with;
//! * nodes the run held but never changed (`cordoned`, `draining`) and nodes
//!   it finished with (`completed`, `rolled-back`) are released;
//! * `failed` nodes stay cordoned: they need a person.

use futures::future::try_join_all;
use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client, ResourceExt};
use serde_json::Value;

use crate::annotations::{self, NodeStatus};
use crate::error::{KubeResultExt, UserError};
use crate::events::{NodeEvent, NodeEvents};
use crate::nodes::hold::{self, Release, Released};
use crate::nodes::selection;
use crate::output::Report;
use crate::release::ReleaseRef;
use crate::run_record::{NodeProgress, Records, RunRecord, RunState};

/// Which run ended, and how.
#[derive(Debug, Clone)]
pub struct Request {
    /// The release.
    pub release: ReleaseRef,
    /// The run.
    pub run_id: String,
    /// How the workflow ended (Argo's `{{workflow.status}}`); None: the run
    /// was interrupted (closed by hand).
    pub workflow_status: Option<String>,
    /// Argo's `{{workflow.failures}}`, for the record's reason.
    pub failures: Option<String>,
    /// Why the run ended (overrides the reason built from `failures`).
    pub reason: Option<String>,
}

/// The run closed and the safe nodes released, and what is left to do.
#[derive(Debug)]
pub struct Closing {
    /// What closing did so far.
    pub report: Closed,
    /// What is left to do.
    pub leftover: Leftover,
}

/// What is left once a run is closed.
#[derive(Debug, PartialEq, Eq)]
pub enum Leftover {
    /// Nothing: no node was caught mid-upgrade.
    Nothing,
    /// Nodes were caught mid-upgrade, but the run has no record to roll
    /// back with: they are marked failed and stay cordoned (the step fails;
    /// see [`Closed::unrecorded`]).
    Unrecorded,
    /// Roll these nodes back against the run's record.
    RollBack {
        /// The run whose record has the versions to return to.
        run_id: String,
        /// Why (for the record).
        reason: String,
        /// The nodes caught mid-upgrade.
        nodes: Vec<String>,
    },
}

/// What close-run did.
#[derive(Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Closed {
    /// The run.
    pub run_id: String,
    /// The record's state afterwards (none: this run was never recorded).
    pub state: Option<RunState>,
    /// The reason recorded by this call, when it closed the record.
    pub closed_with: Option<String>,
    /// Nodes released.
    pub released: Vec<Released>,
    /// Nodes caught mid-upgrade, handed to rollback.
    pub rolled_back: Vec<String>,
    /// Nodes kept cordoned (their rollback failed, or the run has no record to roll back with).
    pub kept_failed: Vec<String>,
}

impl Report for Closed {
    fn text(&self) -> String {
        let mut lines = Vec::new();
        match (&self.state, &self.closed_with) {
            (None, _) => lines.push(format!(
                "run {} was never recorded: no record to close",
                self.run_id
            )),
            (Some(state), Some(reason)) => lines.push(format!(
                "run {} closed as {}: {reason}",
                self.run_id,
                state_name(*state)
            )),
            (Some(state), None) => {
                lines.push(format!("run {} is {}", self.run_id, state_name(*state)))
            }
        }
        for r in &self.released {
            if r.kept_cordoned {
                lines.push(format!(
                    "{}: released; left unschedulable because it was unschedulable before the run",
                    r.node
                ));
            } else {
                lines.push(format!("{}: released, back in service", r.node));
            }
        }
        for n in &self.rolled_back {
            lines.push(format!(
                "{n}: caught mid-upgrade; rolled back (see the rollback report)"
            ));
        }
        for n in &self.kept_failed {
            lines.push(format!(
                "{n}: left cordoned, marked failed (see klm status)"
            ));
        }
        lines.join("\n")
    }
}

fn state_name(state: RunState) -> &'static str {
    match state {
        RunState::Running => "running",
        RunState::Failed => "failed",
        RunState::Completed => "completed",
        RunState::CompletedWithFailures => "completed with failures",
        RunState::Interrupted => "interrupted",
    }
}

/// What to do with one node the run holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Return it to service: the run never changed it, or finished with it.
    Release,
    /// Roll it back and verify it again: its new version was never verified
    /// through to completion, or its rollback was cut short.
    RollBack,
    /// Keep it cordoned: its rollback failed.
    Keep,
}

/// Decides from the node's status annotation and what the record says the
/// run did to it.
pub fn decide(status: Option<NodeStatus>, progress: Option<NodeProgress>) -> Decision {
    match status {
        Some(NodeStatus::Failed) => return Decision::Keep,
        Some(NodeStatus::Upgrading | NodeStatus::Verifying | NodeStatus::RollingBack) => {
            return Decision::RollBack;
        }
        _ => {}
    }
    match progress {
        Some(NodeProgress::Failed) => Decision::Keep,
        // job mode records the wave's nodes upgraded when its helm upgrade
        // starts their installers, before the status moves on.
        Some(NodeProgress::Upgraded | NodeProgress::Verified) => Decision::RollBack,
        _ => Decision::Release,
    }
}

/// How the run ended, for the record: the state and the reason.
pub fn closing(
    workflow_status: Option<&str>,
    failures: Option<&str>,
    reason: Option<&str>,
) -> (RunState, String) {
    let messages: Vec<String> = failures
        .map(failed_steps)
        .unwrap_or_default()
        .iter()
        .map(|f| {
            let step = f["displayName"].as_str().unwrap_or("a step");
            let message = f["message"].as_str().unwrap_or("").trim();
            if message.is_empty() {
                format!("{step} {}", f["phase"].as_str().unwrap_or("failed"))
            } else {
                format!("{step}: {message}")
            }
        })
        .collect();
    // A stopped pod's node says "Stopped with strategy"; the phases of a
    // containerSet pod (a wave's) say "workflow shutdown with strategy".
    let stopped = |m: &String| {
        let m = m.to_lowercase();
        m.contains("stopped with strategy")
            || m.contains("shutdown with strategy")
            || m.contains("terminated")
            || m.contains("deadline")
            || m.contains("pod deleted")
    };
    let interrupted = workflow_status.is_none()
        || workflow_status == Some("Error")
        || messages.iter().any(stopped);
    let state = if interrupted {
        RunState::Interrupted
    } else {
        RunState::Failed
    };
    let why = match (reason, workflow_status) {
        (Some(reason), _) if !reason.trim().is_empty() => reason.trim().to_string(),
        (_, None) => "closed by hand (the workflow ended without its exit handler)".to_string(),
        (_, Some(status)) if messages.is_empty() => format!("the workflow ended {status}"),
        (_, Some(status)) => {
            let mut shown: Vec<String> = messages.iter().take(3).cloned().collect();
            if messages.len() > 3 {
                shown.push(format!("and {} more", messages.len() - 3));
            }
            format!("the workflow ended {status}: {}", shown.join("; "))
        }
    };
    (state, why)
}

/// The failed steps in Argo's `{{workflow.failures}}`. The controller stores
/// it Go-quoted (`"[{\"displayName\":...}]"`, so that substitution keeps the
/// inner quotes), which reaches klm as a JSON string holding the JSON list;
/// the bare list is accepted too.
fn failed_steps(raw: &str) -> Vec<Value> {
    let mut value: Value = match serde_json::from_str(raw) {
        Ok(value) => value,
        Err(_) => return Vec::new(),
    };
    // At most a few layers of quoting; never loop on a plain string.
    for _ in 0..3 {
        match value {
            Value::Array(steps) => return steps,
            Value::String(inner) => match serde_json::from_str(&inner) {
                Ok(parsed) => value = parsed,
                Err(_) => return Vec::new(),
            },
            _ => return Vec::new(),
        }
    }
    Vec::new()
}

impl Closed {
    /// The failure of a run that has nodes caught mid-upgrade but no record
    /// to roll them back with.
    pub fn unrecorded(&self) -> UserError {
        UserError::failed(format!(
            "run {} has no record to roll back with: {} stay cordoned, marked failed",
            self.run_id,
            self.kept_failed.join(", ")
        ))
        .hint("roll them back with `klm rollback --nodes ...` against the release's latest run")
    }
}

/// Closes the run's record (unless the workflow succeeded or the record is
/// already closed, or another run owns it) and releases the nodes it holds
/// that are safe to release; says what is left for the nodes caught
/// mid-upgrade.
pub async fn close(client: &Client, request: &Request) -> anyhow::Result<Closing> {
    let run_id = &request.run_id;
    let succeeded = request.workflow_status.as_deref() == Some("Succeeded");
    let release_id = annotations::release_id(&request.release.namespace, &request.release.name);
    let records = Records::new(client, &request.release.namespace);
    let latest = records
        .load(&request.release.name)
        .await?
        .map(|(record, _)| record);
    // Failed before it was recorded (or another run holds the release):
    // never close someone else's record.
    let record = latest.clone().filter(|r| &r.run_id == run_id);
    let nodes_api: Api<Node> = Api::all(client.clone());
    let all_nodes = nodes_api
        .list(&kube::api::ListParams::default())
        .await
        .during(|| "listing nodes".to_string())?
        .items;
    let known = crate::runs::Known::of(&release_id, latest.as_ref(), &all_nodes);
    // By hand (no workflow status: not an exit handler), a run this release
    // does not have is a mistake (a typo, another release or namespace),
    // not "nothing to close". An exit handler's run that failed before it
    // was recorded has nothing to close.
    if request.workflow_status.is_none() && !known.has(run_id) {
        return Err(known.unknown(run_id, "close-run").into());
    }
    let mut report = Closed {
        run_id: run_id.clone(),
        ..Default::default()
    };

    // 1. Close the record first: even if a rollback below is cut short, the
    // next run is not refused.
    let record = match record {
        Some(current) if current.state == RunState::Running && !succeeded => {
            let (record, why) = close_record(&records, &current, request).await?;
            report.closed_with = Some(why);
            Some(record)
        }
        record => record,
    };
    report.state = record.as_ref().map(|r| r.state);

    // 2. Decide per node the run holds.
    let Division {
        release,
        roll_back,
        keep,
    } = divide(&all_nodes, run_id, &release_id, record.as_ref());
    report.kept_failed.extend(keep);

    // 3. Release what is safe, before any slow rollback.
    report.released = release_safe(client, &all_nodes, &release, run_id, &release_id).await?;

    // 4. Nodes caught mid-upgrade go to rollback (verified again when the
    // verification pod is given); without a record there is nothing to roll
    // back to, so they stay cordoned, marked failed.
    if roll_back.is_empty() {
        return Ok(Closing {
            report,
            leftover: Leftover::Nothing,
        });
    }
    let Some(record) = record else {
        for node in &roll_back {
            let holder = hold::Holder {
                run_id,
                release: &release_id,
            };
            hold::advance(client, node, Some(holder), NodeStatus::Failed).await?;
        }
        report.kept_failed.extend(roll_back);
        return Ok(Closing {
            report,
            leftover: Leftover::Unrecorded,
        });
    };
    report.rolled_back = roll_back.clone();
    let reason = report
        .closed_with
        .clone()
        .or(record.failure.clone())
        .unwrap_or_else(|| format!("run {run_id} ended with nodes mid-upgrade"));
    Ok(Closing {
        report,
        leftover: Leftover::RollBack {
            run_id: record.run_id,
            reason,
            nodes: roll_back,
        },
    })
}

/// Closes the running record of a run whose workflow did not succeed, with
/// the state and reason its workflow's end gives; returns it as written,
/// with the reason.
async fn close_record(
    records: &Records,
    current: &RunRecord,
    request: &Request,
) -> anyhow::Result<(RunRecord, String)> {
    let (state, why) = closing(
        request.workflow_status.as_deref(),
        request.failures.as_deref(),
        request.reason.as_deref(),
    );
    let updated = records
        .update(&current.release, &current.run_id, |r| {
            if r.state == RunState::Running {
                r.state = state;
                r.failure = Some(why.clone());
            }
            // A closed run waits for nothing.
            r.held = None;
        })
        .await?;
    Ok((updated, why))
}

/// Returns `names` (nodes the run holds that are safe to release) to
/// service from the nodes as listed, each with an Event.
async fn release_safe(
    client: &Client,
    listed: &[Node],
    names: &[String],
    run_id: &str,
    release_id: &str,
) -> anyhow::Result<Vec<Released>> {
    let how = Release {
        uncordon: true,
        release: Some(release_id.to_string()),
        ..Default::default()
    };
    let nodes: Vec<&Node> = listed
        .iter()
        .filter(|n| names.contains(&n.name_any()))
        .collect();
    let released = try_join_all(
        nodes
            .iter()
            .map(|n| hold::release_from(client, (*n).clone(), Some(run_id), &how)),
    )
    .await?;
    let released: Vec<Released> = released.into_iter().flatten().collect();
    NodeEvents::new(client, run_id, release_id)
        .knowing(nodes)
        .record_each(
            released
                .iter()
                .map(|r| (r.node.clone(), NodeEvent::Released)),
        )
        .await;
    Ok(released)
}

/// The nodes run `run_id` of release `release_id` holds, by what closing
/// the run does to them ([`decide`]).
#[derive(Debug, Default, PartialEq, Eq)]
struct Division {
    /// Safe to return to service.
    release: Vec<String>,
    /// Caught mid-upgrade: rolled back.
    roll_back: Vec<String>,
    /// Failed: kept cordoned for a person.
    keep: Vec<String>,
}

/// Divides the nodes of `all_nodes` the run holds (a run id is unique only
/// per release: another release's run of the same name is not this one).
fn divide(
    all_nodes: &[Node],
    run_id: &str,
    release_id: &str,
    record: Option<&RunRecord>,
) -> Division {
    let mut division = Division::default();
    for node in all_nodes {
        if selection::annotation(node, annotations::RUN) != Some(run_id)
            || !hold::same_release(
                selection::annotation(node, annotations::RELEASE),
                Some(release_id),
            )
        {
            continue;
        }
        let name = node.name_any();
        let status = selection::annotation(node, annotations::STATUS)
            .and_then(|s| s.parse::<NodeStatus>().ok());
        let progress = record.and_then(|r| r.nodes.get(&name).copied());
        match decide(status, progress) {
            Decision::Release => division.release.push(name),
            Decision::RollBack => division.roll_back.push(name),
            Decision::Keep => division.keep.push(name),
        }
    }
    division
}

/// A run ended: closed, its safe nodes released, those caught mid-upgrade
/// rolled back.
#[derive(Debug)]
pub struct Ended {
    /// What closing did.
    pub closed: Closed,
    /// The rollback of the nodes caught mid-upgrade, if there were any.
    pub rolled_back: Option<crate::steps::rollback::RolledBack>,
    unrecorded: bool,
}

impl Ended {
    /// Ok when every node the run held is released or rolled back.
    pub fn outcome(&self) -> Result<(), UserError> {
        if self.unrecorded {
            return Err(self.closed.unrecorded());
        }
        match &self.rolled_back {
            Some(report) => report.outcome(),
            None => Ok(()),
        }
    }
}

/// Ends the run however it ended ([`close`]), then rolls back the nodes it
/// was caught mid-upgrade with (as `settings` say): what the workflow's exit
/// handler does, and what `klm upgrade` does on any exit.
pub async fn end_run(
    client: &Client,
    helm: &crate::helm::Helm,
    request: &Request,
    settings: &crate::steps::rollback::Settings,
) -> anyhow::Result<Ended> {
    let Closing { report, leftover } = close(client, request).await?;
    let (run_id, reason, nodes) = match leftover {
        Leftover::Nothing | Leftover::Unrecorded => {
            resume_reconcilers(client, request).await?;
            return Ok(Ended {
                unrecorded: leftover == Leftover::Unrecorded,
                closed: report,
                rolled_back: None,
            });
        }
        Leftover::RollBack {
            run_id,
            reason,
            nodes,
        } => (run_id, reason, nodes),
    };
    let rollback = crate::steps::rollback::Request {
        nodes: crate::nodes::unique(nodes).into(),
        reason: Some(reason),
        release: request.release.clone(),
        run_id: Some(run_id),
        settings: settings.clone(),
        fails_run: true,
    };
    let rolled_back = crate::steps::rollback::roll_back(client, helm, &rollback).await;
    // Whatever the rollback did, the run is over: kata-deploy's reconcile
    // CronJobs run again.
    resume_reconcilers(client, request).await?;
    Ok(Ended {
        closed: report,
        rolled_back: Some(rolled_back?),
        unrecorded: false,
    })
}

/// Resumes the reconcile CronJobs the run suspended (job mode from 4.1),
/// once the run is closed, and forgets them.
async fn resume_reconcilers(client: &Client, request: &Request) -> anyhow::Result<()> {
    let records = Records::new(client, &request.release.namespace);
    let Some((record, _)) = records.load(&request.release.name).await? else {
        return Ok(());
    };
    if record.run_id != request.run_id || record.suspended.is_empty() || !record.state.is_closed() {
        return Ok(());
    }
    crate::dispatch::resume_reconcilers(client, &record).await?;
    records
        .update(&record.release, &record.run_id, |r| r.suspended.clear())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_nodes_are_rolled_back_and_the_rest_released() {
        use Decision::*;
        for status in [
            NodeStatus::Upgrading,
            NodeStatus::Verifying,
            NodeStatus::RollingBack,
        ] {
            assert_eq!(decide(Some(status), Some(NodeProgress::Held)), RollBack);
        }
        for status in [
            NodeStatus::Preparing,
            NodeStatus::Cordoned,
            NodeStatus::Draining,
            NodeStatus::Completed,
            NodeStatus::RolledBack,
        ] {
            assert_eq!(decide(Some(status), Some(NodeProgress::Held)), Release);
        }
        assert_eq!(decide(Some(NodeStatus::Failed), None), Keep);
        // job mode: upgraded by the wave's helm upgrade, status still cordoned.
        assert_eq!(
            decide(Some(NodeStatus::Cordoned), Some(NodeProgress::Upgraded)),
            RollBack
        );
        assert_eq!(
            decide(Some(NodeStatus::Draining), Some(NodeProgress::Verified)),
            RollBack
        );
        assert_eq!(decide(None, None), Release);
    }

    #[test]
    fn nodes_without_a_record_fail_the_step() {
        let report = Closed {
            run_id: "upgrade-1".into(),
            kept_failed: vec!["w1".into(), "w2".into()],
            ..Default::default()
        };
        let err = report.unrecorded();
        assert_eq!(err.status, crate::error::ExitStatus::Failed);
        assert_eq!(
            err.message,
            "run upgrade-1 has no record to roll back with: w1, w2 stay cordoned, marked failed"
        );
        assert!(
            report
                .text()
                .starts_with("run upgrade-1 was never recorded")
        );
    }

    #[test]
    fn the_reason_names_the_failed_steps() {
        let stopped = r#"[{"displayName":"verify(0)","message":"Stopped with strategy 'Stop'","templateName":"verify","phase":"Failed"}]"#;
        let (state, why) = closing(Some("Failed"), Some(stopped), None);
        assert_eq!(state, RunState::Interrupted);
        assert!(
            why.contains("verify(0): Stopped with strategy 'Stop'"),
            "{why}"
        );
        // A wave's pod stopped mid-way: its phases' nodes, as Argo 3.7 words them.
        let phases = r#"[{"displayName":"main","message":"workflow shutdown with strategy:  Stop","templateName":"upgrade","phase":"Error"},{"displayName":"verify","message":"workflow shutdown with strategy:  Stop","templateName":"upgrade","phase":"Failed"}]"#;
        assert_eq!(
            closing(Some("Failed"), Some(phases), None).0,
            RunState::Interrupted
        );
        let failed =
            r#"[{"displayName":"finish-run","message":"Error (exit code 1)","phase":"Failed"}]"#;
        let (state, why) = closing(Some("Failed"), Some(failed), None);
        assert_eq!(state, RunState::Failed);
        assert!(
            why.starts_with("the workflow ended Failed: finish-run"),
            "{why}"
        );
        // As the exit handler really receives it: Go-quoted by the controller.
        let quoted = serde_json::to_string(stopped).unwrap();
        let (state, why) = closing(Some("Failed"), Some(&quoted), None);
        assert_eq!(state, RunState::Interrupted, "{why}");
        assert!(why.contains("verify(0)"), "{why}");
        assert_eq!(
            closing(Some("Error"), Some("null"), None).0,
            RunState::Interrupted
        );
        let (state, why) = closing(None, None, Some("terminated by hand"));
        assert_eq!(
            (state, why.as_str()),
            (RunState::Interrupted, "terminated by hand")
        );
    }

    fn node_held(name: &str, run: &str, release: &str, status: &str) -> Node {
        serde_json::from_value(
            serde_json::json!({"metadata": {"name": name, "annotations": {
                annotations::RUN: run,
                annotations::RELEASE: release,
                annotations::STATUS: status,
            }}}),
        )
        .unwrap()
    }

    #[test]
    fn closing_divides_only_the_nodes_this_run_of_this_release_holds() {
        let ours = "kube-system/kata-deploy";
        let mut record = crate::run_record::example();
        record.nodes.insert("done".into(), NodeProgress::Completed);
        let nodes = vec![
            node_held("done", "upgrade-1", ours, "completed"),
            node_held("mid", "upgrade-1", ours, "upgrading"),
            node_held("broken", "upgrade-1", ours, "failed"),
            node_held(
                "same-id-other-release",
                "upgrade-1",
                "other/kata-deploy",
                "upgrading",
            ),
            node_held("other-run", "upgrade-2", ours, "upgrading"),
        ];
        assert_eq!(
            divide(&nodes, "upgrade-1", ours, Some(&record)),
            Division {
                release: vec!["done".into()],
                roll_back: vec!["mid".into()],
                keep: vec!["broken".into()],
            }
        );
    }
}
