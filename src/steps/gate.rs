//! What a run does before a held wave (`klm gate`, and `klm upgrade` before
//! such a wave): pass the wave's gate — soak, then verify the nodes before
//! it again (rolling back those that fail, which fails the run), then ask
//! the run's metric query over the soak's samples (unhealthy: every node
//! since the last gate is rolled back and the run fails), then wait for a
//! person's approval — and wait for the maintenance window to open.
//!
//! One call does what can be done now and says what the wave waits for
//! next ([`Wait`]); the caller waits (Argo: a suspend step; klm upgrade: in
//! process) and calls again, until the wave may start. How far the run got
//! is recorded in the run's gate, so a retried or resumed call carries on.

use std::time::Duration;

use jiff::Timestamp;
use kube::Client;

use crate::error::UserError;
use crate::events::NodeEvents;
use crate::helm::Helm;
use crate::nodes::hold;
use crate::release::ReleaseRef;
use crate::run::Run;
use crate::run_record::{Held, RunRecord, Waiting, now};
use crate::schedule::gates::Gate;
use crate::schedule::metric::{self, Verdict};
use crate::schedule::window::Window;
use crate::steps::rollback::{self, RolledBack};

/// Who gives an approval: what a held run tells people to run.
#[derive(Debug, Clone)]
pub enum Approver {
    /// The workflow's suspend step: `argo resume`.
    Argo {
        /// The command, e.g. `argo resume upgrade-x7k2p -n argo`.
        command: String,
    },
    /// `klm approve`, for `klm upgrade`.
    Klm,
}

impl Approver {
    fn command(&self, record: &RunRecord) -> String {
        match self {
            Approver::Argo { command } => command.clone(),
            Approver::Klm => format!(
                "klm approve --run-id {} --helm-release {} --helm-namespace {}",
                record.run_id, record.release, record.namespace
            ),
        }
    }
}

/// Which wave of which run, and what it waited for last.
#[derive(Debug, Clone)]
pub struct Request {
    /// The release.
    pub release: ReleaseRef,
    /// The run.
    pub run_id: String,
    /// The wave (from 1) about to start.
    pub wave: u32,
    /// What the wave waited for before this call (None: the first call).
    /// After an approval wait in Argo, the wait ending is the approval.
    pub resumed_from: Option<Waiting>,
    /// Who approves.
    pub approver: Approver,
    /// How nodes that fail their verification after the soak are rolled
    /// back; its verification pods verify them after the soak too.
    pub rollback: rollback::Settings,
    /// How to reach the Prometheus of the run's metric query.
    pub prometheus: crate::prometheus::Credentials,
    /// Now (a parameter, so tests can set the clock).
    pub now: Timestamp,
}

/// What the wave waits for next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// Nothing: the wave may start.
    Nothing,
    /// The gate's soak, which ends then.
    Soak(Timestamp),
    /// A person's approval.
    Approval,
    /// The maintenance window, which opens then.
    Window(Timestamp),
}

impl Wait {
    /// What the run waits for (None: nothing), and until when.
    pub fn held_for(&self) -> Option<(Waiting, Option<Timestamp>)> {
        match self {
            Wait::Nothing => None,
            Wait::Soak(ends) => Some((Waiting::Soak, Some(*ends))),
            Wait::Approval => Some((Waiting::Approval, None)),
            Wait::Window(opens) => Some((Waiting::Window, Some(*opens))),
        }
    }

    /// How long a timed wait (a soak, a window) still takes from `now`, in
    /// whole seconds rounded up, at least 1 (zero for the others).
    pub fn remaining(&self, now: Timestamp) -> Duration {
        match self.held_for() {
            Some((_, Some(then))) => until(now, then),
            _ => Duration::ZERO,
        }
    }

    /// The word the workflow branches on, and the seconds of a timed wait.
    pub fn step_outputs(&self, now: Timestamp) -> (&'static str, u64) {
        let word = self
            .held_for()
            .map_or("none", |(waiting, _)| waiting.as_str());
        (word, self.remaining(now).as_secs())
    }
}

/// What one call did and what the wave waits for now.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Passage {
    /// The run.
    pub run_id: String,
    /// The wave.
    pub wave: u32,
    /// What it waits for, for people (None: it may start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    /// What happened in this call, for people.
    pub done: Vec<String>,
    /// What the wave waits for.
    #[serde(skip)]
    pub wait: Wait,
}

impl crate::output::Report for Passage {
    fn text(&self) -> String {
        let mut lines = self.done.clone();
        lines.push(match &self.held {
            Some(held) => format!("run {}: {held}", self.run_id),
            None => format!("run {}: wave {} may start", self.run_id, self.wave),
        });
        lines.join("\n")
    }
}

/// Passes what it can of wave `request.wave`'s gate and window now, and
/// says what the wave waits for next. A soak's verification that fails
/// rolls those nodes back and fails the run (an error, exit 1).
pub async fn pass(client: &Client, helm: &Helm, request: &Request) -> anyhow::Result<Passage> {
    let run = Run::active(client, &request.release, Some(&request.run_id)).await?;
    run.wave(request.wave)?;
    let index = request.wave as usize;
    let mut passage = Passage {
        run_id: run.run_id.clone(),
        wave: request.wave,
        held: None,
        done: Vec::new(),
        wait: Wait::Nothing,
    };
    if let Some(gate) = run.plan.gates.iter().find(|g| g.before_wave == index) {
        let wait = pass_gate(client, helm, &run, gate, request, &mut passage.done).await?;
        if wait != Wait::Nothing {
            return hold(&run, request, wait, passage).await;
        }
    }
    if let Some(raw) = &run.plan.window {
        let window = Window::parse(raw)
            .map_err(|why| UserError::failed(format!("the run's recorded window: {why}")))?
            .ok_or_else(|| UserError::failed("the run's recorded window is empty"))?;
        let opens = window.next_open(request.now);
        if opens > request.now {
            return hold(&run, request, Wait::Window(opens), passage).await;
        }
    }
    if run.held.is_some() {
        run.update(|r| r.held = None).await?;
    }
    Ok(passage)
}

/// Passes what can be passed of `gate` now; what is left to wait for.
async fn pass_gate(
    client: &Client,
    helm: &Helm,
    run: &Run,
    gate: &Gate,
    request: &Request,
    done: &mut Vec<String>,
) -> anyhow::Result<Wait> {
    let mut passage = gate.passage.clone();
    if let Some(seconds) = gate.soak_seconds {
        let ends = match &passage.soak_until {
            Some(at) => at.parse::<Timestamp>().map_err(|e| {
                UserError::failed(format!("the gate's recorded soak end {at:?}: {e}"))
            })?,
            None => {
                let ends = request.now + Duration::from_secs(seconds);
                passage.soak_until = Some(ends.to_string());
                record_passage(run, gate, &passage).await?;
                ends
            }
        };
        if request.now < ends {
            return Ok(Wait::Soak(ends));
        }
        if !passage.reverified {
            reverify(client, helm, run, gate, request).await?;
            passage.reverified = true;
            record_passage(run, gate, &passage).await?;
            done.push(format!(
                "gate after {}: {} node(s) passed their verification after the soak",
                gate.after,
                gate.reverify.len()
            ));
        }
    }
    if gate.query && !passage.queried {
        ask_prometheus(client, helm, run, gate, request, done).await?;
        passage.queried = true;
        record_passage(run, gate, &passage).await?;
    }
    if gate.approval && passage.approved.is_none() {
        if request.resumed_from != Some(Waiting::Approval) {
            return Ok(Wait::Approval);
        }
        // The workflow's approval step ended: a person resumed it.
        passage.approved = Some(format!("resumed at {}", request.now));
        record_passage(run, gate, &passage).await?;
        done.push(format!("gate after {}: approved", gate.after));
    }
    Ok(Wait::Nothing)
}

/// Verifies the gate's nodes again; rolls back those that fail (the run
/// fails, so no later wave starts) and returns the failure.
async fn reverify(
    client: &Client,
    helm: &Helm,
    record: &RunRecord,
    gate: &Gate,
    request: &Request,
) -> anyhow::Result<()> {
    let Some(again) = &request.rollback.reverify else {
        return Err(UserError::bad_input(format!(
            "the gate after {} verifies {} node(s) again after its soak, and no verification pod was given",
            gate.after,
            gate.reverify.len()
        ))
        .hint("pass --verification-pod (the workflow passes the chart's)")
        .into());
    };
    let nodes = hold::get_all(client, &gate.reverify).await?;
    let assigned = again.pods.assign(&nodes, record.pool_label.as_deref())?;
    let verdicts = crate::verification::verify_nodes(
        client,
        &assigned,
        &record.run_id,
        again.timeout,
        again.keep_failed,
    )
    .await?;
    let release_id = record.release_id();
    NodeEvents::new(client, &record.run_id, &release_id)
        .record_each(
            verdicts
                .iter()
                .map(|v| (v.node.clone(), v.event(Some("after the soak")))),
        )
        .await;
    let failed: Vec<String> = verdicts
        .iter()
        .filter(|v| !v.passed)
        .map(|v| v.node.clone())
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    let reason = format!(
        "the gate after {} (before wave {}): {} failed verification after the soak (run {})",
        gate.after,
        gate.before_wave,
        failed.join(", "),
        record.run_id
    );
    let look = "see the failed verification pods' Events on the nodes";
    Err(roll_back_and_fail(client, helm, record, request, &failed, reason, look).await)
}

/// Asks the run's metric query over the samples of the soak: healthy, the
/// gate passes; unhealthy, every node since the last gate is rolled back and
/// the run fails with the query's answer; inconclusive (Prometheus did not
/// answer), the run fails and nothing is rolled back.
async fn ask_prometheus(
    client: &Client,
    helm: &Helm,
    record: &RunRecord,
    gate: &Gate,
    request: &Request,
    done: &mut Vec<String>,
) -> anyhow::Result<()> {
    let Some(query) = &record.plan.metric_query else {
        return Err(UserError::failed(format!(
            "the gate after {} asks the run's metric query, and the run recorded none",
            gate.after
        ))
        .into());
    };
    let verdict = match crate::prometheus::Prometheus::connect(&query.url, &request.prometheus) {
        Ok(prometheus) => metric::evaluate(&prometheus, query, request.now).await,
        Err(err) => Verdict::Inconclusive {
            why: err.to_string(),
        },
    };
    match verdict {
        Verdict::Passed { samples } => {
            done.push(format!(
                "gate after {}: the metric query was healthy over the last {} ({samples} sample(s))",
                gate.after,
                crate::schedule::period::human(query.for_seconds)
            ));
            Ok(())
        }
        Verdict::Failed { at, answer } => {
            let reason = format!(
                "the gate after {} (before wave {}): the metric query {:?} returned {answer} at {at} (run {})",
                gate.after, gate.before_wave, query.query, record.run_id
            );
            let look = "see the metric in Prometheus";
            Err(roll_back_and_fail(client, helm, record, request, &gate.reverify, reason, look).await)
        }
        Verdict::Inconclusive { why } => Err(UserError::failed(format!(
            "the gate after {} (before wave {}): the metric query could not say whether {} node(s) are healthy: {why}; nothing was rolled back and no further wave starts",
            gate.after,
            gate.before_wave,
            gate.reverify.len()
        ))
        .hint(format!(
            "make Prometheus answer at {} (and its token and CA), check the nodes by hand, then start a new run: nodes completed by run {} are skipped",
            query.url, record.run_id
        ))
        .into()),
    }
}

/// Rolls `nodes` back for `reason` (the run fails, so no later wave starts)
/// and returns the run's failure.
async fn roll_back_and_fail(
    client: &Client,
    helm: &Helm,
    record: &RunRecord,
    request: &Request,
    nodes: &[String],
    reason: String,
    look: &str,
) -> anyhow::Error {
    let rolled_back = rollback::roll_back(
        client,
        helm,
        &rollback::Request {
            nodes: nodes.to_vec().into(),
            reason: Some(reason.clone()),
            release: request.release.clone(),
            run_id: Some(record.run_id.clone()),
            settings: request.rollback.clone(),
            fails_run: true,
        },
    )
    .await;
    let report: RolledBack = match rolled_back {
        Ok(report) => report,
        Err(err) => return err,
    };
    if let Err(err) = report.outcome() {
        return err.into();
    }
    UserError::failed(format!(
        "{reason}; rolled back {}: no further wave starts",
        nodes.join(", ")
    ))
    .hint(format!(
        "{look} and `klm status --run-id {}`; fix the cause, then start a new run: nodes completed by this run are skipped",
        record.run_id
    ))
    .into()
}

/// Records the run as held before the request's wave, for `wait`.
async fn hold(
    run: &Run,
    request: &Request,
    wait: Wait,
    mut passage: Passage,
) -> anyhow::Result<Passage> {
    let (waiting_for, until) = wait
        .held_for()
        .expect("a wave that waits for nothing is not held");
    let approve_with = (waiting_for == Waiting::Approval).then(|| request.approver.command(run));
    let since = match &run.held {
        Some(h) if h.wave == request.wave as usize && h.waiting_for == waiting_for => {
            h.since.clone()
        }
        _ => now(),
    };
    let held = Held {
        wave: request.wave as usize,
        waiting_for,
        since,
        until: until.map(|t| t.to_string()),
        approve_with,
    };
    passage.held = Some(held.to_string());
    run.update(|r| r.held = Some(held.clone())).await?;
    passage.wait = wait;
    Ok(passage)
}

/// Writes how far the run got through `gate`.
async fn record_passage(
    run: &Run,
    gate: &Gate,
    passage: &crate::schedule::gates::Passage,
) -> anyhow::Result<()> {
    run.update(|r| {
        if let Some(g) = r
            .plan
            .gates
            .iter_mut()
            .find(|g| g.before_wave == gate.before_wave)
        {
            g.passage = passage.clone();
        }
    })
    .await?;
    Ok(())
}

/// From `now` to `then`, in whole seconds rounded up (at least 1).
fn until(now: Timestamp, then: Timestamp) -> Duration {
    let millis = then
        .as_millisecond()
        .saturating_sub(now.as_millisecond())
        .max(0) as u64;
    Duration::from_secs(millis.div_ceil(1000).max(1))
}

/// Waits until the run's gate before `wave` is approved (`klm approve`),
/// watching the run record; fails when the run is closed meanwhile.
pub async fn await_approval(
    client: &Client,
    release: &ReleaseRef,
    run_id: &str,
    wave: u32,
) -> anyhow::Result<()> {
    crate::run_record::watch_run(
        client,
        &release.namespace,
        &release.name,
        run_id,
        format!("the approval of run {run_id}"),
        |r| {
            if r.state.is_closed() {
                crate::wait::Check::Failed(format!(
                    "run {run_id} was closed while it waited for approval"
                ))
            } else if r
                .plan
                .gates
                .iter()
                .any(|g| g.before_wave == wave as usize && g.passage.approved.is_some())
            {
                crate::wait::Check::Done(())
            } else {
                crate::wait::Check::Pending
            }
        },
    )
    .await?;
    Ok(())
}

/// Approves the gate the run is held at (`klm approve`): refused when the
/// run waits for no approval, or when its workflow gives it (`argo resume`).
pub async fn approve(
    client: &Client,
    release: &ReleaseRef,
    run_id: Option<&str>,
    by: &str,
) -> anyhow::Result<String> {
    let run = Run::recorded(client, release, run_id).await?;
    let held = run
        .held
        .as_ref()
        .filter(|h| h.waiting_for == Waiting::Approval && !run.state.is_closed());
    let Some(held) = held else {
        let now = match (&run.held, run.state.is_closed()) {
            (_, true) => format!("it is {:?}", run.state).to_lowercase(),
            (Some(h), false) => h.to_string(),
            (None, false) => "it is not held".to_string(),
        };
        return Err(UserError::precondition(format!(
            "run {} waits for no approval: {now}",
            run.run_id
        ))
        .hint(format!("see `klm status --run-id {}`", run.run_id))
        .into());
    };
    if let Some(command) = held
        .approve_with
        .as_deref()
        .filter(|c| !c.starts_with("klm approve"))
    {
        return Err(UserError::precondition(format!(
            "run {} is held by its workflow, which a person resumes itself",
            run.run_id
        ))
        .hint(format!("run: {command}"))
        .into());
    }
    let wave = held.wave;
    let approval = format!("by {by} at {}", now());
    run.update(|r| {
        if let Some(g) = r.plan.gates.iter_mut().find(|g| g.before_wave == wave) {
            g.passage.approved = Some(approval.clone());
        }
    })
    .await?;
    Ok(format!(
        "run {}: wave {wave} approved {approval}",
        run.run_id
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_round_up_to_whole_seconds() {
        let now: Timestamp = "2026-12-02T10:00:00Z".parse().unwrap();
        let then: Timestamp = "2026-12-02T10:00:01.2Z".parse().unwrap();
        assert_eq!(until(now, then), Duration::from_secs(2));
        assert_eq!(
            until(then, now),
            Duration::from_secs(1),
            "never zero: the caller waits, then asks again"
        );
        assert_eq!(Wait::Window(then).remaining(now), Duration::from_secs(2));
        let soak_ends: Timestamp = "2026-12-02T10:10:00Z".parse().unwrap();
        assert_eq!(Wait::Soak(soak_ends).step_outputs(now), ("soak", 600));
        assert_eq!(Wait::Approval.step_outputs(now), ("approval", 0));
        assert_eq!(Wait::Nothing.step_outputs(now), ("none", 0));
        let opens: Timestamp = "2026-12-02T10:00:05Z".parse().unwrap();
        assert_eq!(Wait::Window(opens).step_outputs(now), ("window", 5));
    }
}
