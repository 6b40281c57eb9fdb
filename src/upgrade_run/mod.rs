//! `klm upgrade`: the whole upgrade in one process, for clusters without
//! Argo. It is the WorkflowTemplate's steps composed, in the same order,
//! through the same library calls, with the same guarantees:
//!
//! 1. start the run ([`check_prerequisites::start_run`]: checked, recorded, the
//!    release's run lock taken), plan it ([`crate::steps::select_nodes::plan_run`]: nodes
//!    completed at the target are skipped), upgrade the release before the
//!    waves ([`crate::steps::helm_upgrade::upgrade`] at [`crate::steps::helm_upgrade::Stage::BeforeWaves`]);
//! 2. per wave: cordon, drain (when asked), upgrade at [`crate::steps::helm_upgrade::Stage::Wave`] (job
//!    mode), restart kata-deploy, verify; then settle ([`crate::steps::settle::settle`]):
//!    complete the wave, or roll it back and stop;
//! 3. finish the run ([`crate::steps::complete::complete`] with `finish_run`);
//! 4. on any exit, end the run as the exit handler does
//!    ([`crate::steps::close_run::end_run`]): what was in flight is rolled back, held
//!    nodes are released, the record is closed unless the run completed.
//!
//! Ctrl-C or SIGTERM ([`interrupt`]) cancels the step under way, except a
//! helm upgrade, a settle or the close, which finish first; the run then
//! ends as in 4. A second signal leaves at once, without cleaning up.
//! Everything that happens is reported as an [`Event`] to an [`Observer`].

pub mod event;
mod guard;
pub mod interrupt;
pub mod progress;
mod sequence;
pub mod view;

use std::time::Duration;

use kube::Client;
use semver::Version;

use crate::error::UserError;
use crate::helm::Helm;
use crate::nodes::selection::Criteria;
use crate::release::ReleaseRef;
use crate::steps::check_prerequisites;
use crate::steps::close_run::Ended;
use crate::steps::pause;
use crate::steps::rollback::{self, Reverify};
use crate::verification::Pods;
use crate::versions::ModeChoice;
use crate::wait::Check;
use guard::{Abandoned, Reporter, Stop};
use sequence::{close, waves};

pub use event::{Event, Phase};
pub use interrupt::{Interrupts, Signal};

/// Everything a run is asked to do: the WorkflowTemplate's parameters.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The release.
    pub release: ReleaseRef,
    /// The run (None: a new id, `klm-<unix seconds>`).
    pub run_id: Option<String>,
    /// The kata-deploy chart version to upgrade to.
    pub target: Version,
    /// The mode asked for.
    pub mode: ModeChoice,
    /// The run's extra chart values.
    pub chart_values: Vec<String>,
    /// Which nodes.
    pub criteria: Criteria,
    /// Order nodes by this label first (pool order).
    pub pool_label: Option<String>,
    /// How the waves are cut.
    pub policy: crate::nodes::waves::Policy,
    /// When the waves may start: gates between them, a window.
    pub schedule: crate::schedule::Schedule,
    /// The verification pods: the default, and the pools' own.
    pub verification: Pods,
    /// How long one node's verification may take.
    pub verification_timeout: Duration,
    /// Keep failed verification pods for inspection.
    pub keep_failed: bool,
    /// Drain each wave's nodes, with this timeout and scope (None: no drain).
    pub drain: Option<(Duration, crate::drain::DrainScope)>,
    /// Evict old sandboxes of each completed node (None: leave them).
    pub recycle: Option<crate::sandboxes::Recycle>,
    /// How to reach the Prometheus of a metric gate.
    pub prometheus: crate::prometheus::Credentials,
    /// The kata-deploy chart reference.
    pub chart: String,
    /// How long one helm upgrade or rollback may take.
    pub helm_timeout: Duration,
    /// How long a node's kata-deploy may take to come back Ready.
    pub restart_timeout: Duration,
    /// A target older than the release's version was asked for explicitly.
    pub allow_downgrade: bool,
    /// The flags that reach this run again as they were given (the cluster,
    /// the release, the chart, the verification pods): the commands klm
    /// prints carry them, so that they work when pasted.
    pub reach: Vec<String>,
}

impl Settings {
    /// The command that ends run `run_id` later, as the exit handler would.
    pub fn close_command(&self, run_id: &str) -> String {
        crate::output::command_line(
            ["klm", "close-run", "--run-id", run_id]
                .into_iter()
                .map(String::from)
                .chain(self.reach.iter().cloned()),
        )
    }
}

impl Settings {
    /// How the run rolls nodes back (a failed wave, the close): verified again.
    fn rollback(&self) -> rollback::Settings {
        rollback::Settings {
            chart: self.chart.clone(),
            helm_timeout: self.helm_timeout,
            timeout: self.restart_timeout,
            reverify: Some(Reverify {
                pods: self.verification.clone(),
                timeout: self.verification_timeout,
                keep_failed: self.keep_failed,
            }),
        }
    }
}

/// What the run talks to.
#[derive(Clone, Copy)]
pub struct Cluster<'a> {
    /// The client every step uses.
    pub client: &'a Client,
    /// A client without retries, for evictions (drain retries them itself).
    pub evicting: &'a Client,
    /// helm, pointed at the same cluster as the same identity.
    pub helm: &'a Helm,
}

/// Whoever watches the run: each event, in order, as it happens.
pub trait Observer {
    /// Takes one event.
    fn event(&mut self, event: &Event);
}

/// How the run's work ended, before the run was closed.
#[derive(Debug)]
pub enum Ending {
    /// Every wave was settled and the run finished.
    Completed(Finished),
    /// A wave failed and was rolled back; no further wave started.
    WaveFailed(UserError),
    /// Ctrl-C or SIGTERM.
    Interrupted(Signal),
    /// A step outside a wave failed (or a wave could not be settled).
    Failed(anyhow::Error),
}

/// What a finished run leaves.
#[derive(Debug, Default)]
pub struct Finished {
    /// What it left on the release for the nodes outside it, if anything
    /// (a partial run).
    pub left: Option<String>,
    /// The nodes that failed within its failure budget (rolled back, or
    /// kept cordoned when their rollback failed).
    pub failed: Vec<String>,
}

/// How closing the run went.
#[derive(Debug)]
pub enum Closing {
    /// Closed: held nodes released, those in flight rolled back.
    Done(Box<Ended>),
    /// Closing itself failed.
    Failed(anyhow::Error),
    /// A second signal: klm left without cleaning up.
    Abandoned(Signal),
}

/// A run that was started, however it ended.
#[derive(Debug)]
pub struct Outcome {
    /// The run.
    pub run_id: String,
    /// How its work ended.
    pub ending: Ending,
    /// How closing it went.
    pub closing: Closing,
    /// The command that ends the run later (printed when klm left without
    /// closing it).
    pub close_with: String,
}

impl Outcome {
    /// The command to run next, if any: after a failure or an interrupt the
    /// same upgrade again (`rerun`; the nodes this run completed are
    /// skipped), when klm left without closing the run or closing failed,
    /// the command that closes it.
    pub fn next_command(&self, rerun: &str) -> Option<String> {
        match (&self.closing, &self.ending) {
            (Closing::Abandoned(_) | Closing::Failed(_), _) => Some(self.close_with.clone()),
            (Closing::Done(ended), _) if ended.outcome().is_err() => Some(format!(
                "klm status --run-id {} (closing the run left nodes to see to)",
                self.run_id
            )),
            (Closing::Done(_), Ending::Completed(finished)) if !finished.failed.is_empty() => {
                Some(format!(
                    "fix the cause of the failures, then {rerun} (it retries the failed nodes)"
                ))
            }
            (Closing::Done(_), Ending::Completed(_)) => None,
            (Closing::Done(_), Ending::WaveFailed(_)) => {
                Some(format!("fix the cause of the failure, then {rerun}"))
            }
            (Closing::Done(_), _) => Some(rerun.to_string()),
        }
    }

    /// Ok when the run completed and closed cleanly; otherwise the error
    /// that says what happened and what to do.
    pub fn result(self) -> anyhow::Result<()> {
        let run_id = self.run_id;
        match self.closing {
            Closing::Abandoned(signal) => {
                return Err(UserError::failed(format!(
                    "left without cleaning up after a second {}: run {run_id} may still hold nodes cordoned",
                    signal.name()
                ))
                .hint(format!(
                    "end the run with `{}` (it rolls back what was in flight, verifies it again and releases the rest)",
                    self.close_with
                ))
                .into());
            }
            Closing::Failed(err) => {
                return Err(err.context(format!(
                    "closing run {run_id} (after it {})",
                    ending_name(&self.ending)
                )));
            }
            Closing::Done(ended) => ended.outcome()?,
        }
        match self.ending {
            Ending::Completed(_) => Ok(()),
            Ending::WaveFailed(err) => Err(err.into()),
            Ending::Failed(err) => Err(err),
            Ending::Interrupted(signal) => Err(UserError::failed(format!(
                "run {run_id} was interrupted by {}: it is closed as failed, what was in flight is rolled back and its nodes are released",
                signal.name()
            ))
            .hint("start the upgrade again when ready: nodes this run completed are skipped")
            .into()),
        }
    }
}

fn ending_name(ending: &Ending) -> &'static str {
    match ending {
        Ending::Completed(_) => "completed",
        Ending::WaveFailed(_) => "failed a wave",
        Ending::Interrupted(_) => "was interrupted",
        Ending::Failed(_) => "failed",
    }
}

/// Runs the whole upgrade (see the module's documentation). An error is
/// returned only when the run could not start (it changed nothing); once
/// it started, however it ends is in the [`Outcome`].
pub async fn run(
    cluster: Cluster<'_>,
    settings: &Settings,
    interrupts: &Interrupts,
    observer: &mut dyn Observer,
) -> anyhow::Result<Outcome> {
    let Cluster { client, helm, .. } = cluster;
    let start = check_prerequisites::StartRequest {
        release: &settings.release,
        run_id: settings.run_id.clone(),
        target: &settings.target,
        mode: settings.mode,
        chart_values: settings.chart_values.clone(),
        pool_label: settings.pool_label.as_deref(),
        pods: &settings.verification,
        rehearsal: check_prerequisites::Rehearsal {
            chart: &settings.chart,
            chart_values: &settings.chart_values,
            helm_timeout: settings.helm_timeout,
        },
        allow_downgrade: settings.allow_downgrade,
        driver: Some(pause::DRIVER),
    };
    // What the plan refuses (a selection without the release's nodes, a
    // policy that cannot be planned) is refused before the run is recorded:
    // bad input changes nothing.
    crate::steps::select_nodes::plan_run(client, helm, &sequence::plan_request(settings, None))
        .await?;
    let started = check_prerequisites::start_run(client, helm, &start).await?;
    let record = &started.record;
    let mut reporter = Reporter {
        run_id: record.run_id.clone(),
        observer,
        interrupt_announced: false,
    };
    let how = if started.resumed {
        "resumed"
    } else {
        "recorded"
    };
    let mut event = reporter.run(Phase::Started).saying(format!(
        "{} from {} to {} in {} mode ({how})",
        settings.release.name, record.before.chart_version, record.target_version, record.mode
    ));
    event.from = Some(record.before.chart_version.clone());
    event.to = Some(record.target_version.to_string());
    event.mode = Some(record.mode.to_string());
    reporter.send(event);
    // What a person should know (a downgrade asked for) is an event of its
    // own, not only a log line.
    for warning in &started.warnings {
        let event = reporter.run(Phase::Warning).saying(warning.clone());
        reporter.send(event);
    }

    // `klm abort` reaches the run as a signal does: the step under way is
    // cut short (or finishes, if it must) and the run ends as the exit
    // handler ends it.
    let abort_watch = {
        let (client, release, run_id) = (
            client.clone(),
            settings.release.clone(),
            record.run_id.clone(),
        );
        let interrupts = interrupts.clone();
        tokio::spawn(async move {
            let aborted = crate::run_record::watch_run(
                &client,
                &release.namespace,
                &release.name,
                &run_id,
                format!("an abort of run {run_id}"),
                |r| r.aborted.clone().map_or(Check::Pending, Check::Done),
            )
            .await;
            if aborted.is_ok() {
                interrupts.receive(Signal::Abort);
            }
        })
    };
    let _stop_watching = AbortOnDrop(abort_watch);
    let mode = record.mode;
    let ending = match waves(cluster, settings, mode, interrupts, &mut reporter).await {
        Ok(finished) => Ending::Completed(finished),
        Err(Stop::Interrupted(signal)) => Ending::Interrupted(signal),
        Err(Stop::WaveFailed(err)) => Ending::WaveFailed(err),
        Err(Stop::Failed(err)) => Ending::Failed(err),
        Err(Stop::Abandoned(signal)) => {
            return Ok(abandoned(
                reporter,
                settings,
                signal,
                Ending::Interrupted(signal),
            ));
        }
    };
    if let Ending::Interrupted(signal) = &ending {
        reporter.interrupted(*signal);
    }
    let closed = match close(cluster, settings, interrupts, &mut reporter, &ending).await {
        Ok(closed) => closed,
        Err(Abandoned(signal)) => return Ok(abandoned(reporter, settings, signal, ending)),
    };
    let (phase, message) = last_words(&ending, &closed, &settings.target);
    let event = reporter.run(phase).saying(message);
    reporter.send(event);
    Ok(Outcome {
        close_with: settings.close_command(&reporter.run_id),
        run_id: reporter.run_id,
        ending,
        closing: match closed {
            Ok(ended) => Closing::Done(Box::new(ended)),
            Err(err) => Closing::Failed(err),
        },
    })
}

/// Ends a task when dropped (the run's watch of its record).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The run's last event: completed, or failed and why.
fn last_words(
    ending: &Ending,
    closed: &anyhow::Result<Ended>,
    target: &Version,
) -> (Phase, String) {
    let closed = match closed {
        Ok(ended) => ended.outcome().map_err(|e| e.message),
        Err(err) => Err(format!("closing the run failed: {err:#}")),
    };
    match (ending, closed) {
        (Ending::Completed(finished), Ok(())) => {
            let mut words = match finished.failed.as_slice() {
                [] => format!("every planned node is at {target}"),
                failed => format!(
                    "completed with failures: {} failed within the budget and went back to the version before the run (see wave-failed-within-budget); the other planned nodes are at {target}",
                    event::shortened(failed, 10)
                ),
            };
            if let Some(left) = &finished.left {
                words.push_str(&format!("; {left}"));
            }
            (Phase::RunCompleted, words)
        }
        (Ending::Completed(_), Err(why)) => (Phase::RunFailed, why),
        // The wave's failure was its own event: said once.
        (Ending::WaveFailed(_), _) => (
            Phase::RunFailed,
            "a wave failed (see wave-failed): no further wave started".into(),
        ),
        (Ending::Failed(err), _) => (Phase::RunFailed, format!("{err:#}")),
        (Ending::Interrupted(signal), _) => (
            Phase::RunFailed,
            format!("interrupted by {}", signal.name()),
        ),
    }
}

fn abandoned(
    mut reporter: Reporter<'_>,
    settings: &Settings,
    signal: Signal,
    ending: Ending,
) -> Outcome {
    let event = reporter.run(Phase::Abandoned).saying(format!(
        "a second {}: leaving without cleaning up",
        signal.name()
    ));
    reporter.send(event);
    Outcome {
        close_with: settings.close_command(&reporter.run_id),
        run_id: reporter.run_id,
        ending,
        closing: Closing::Abandoned(signal),
    }
}
