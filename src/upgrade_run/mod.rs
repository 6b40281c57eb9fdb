//! `klm upgrade`: the whole upgrade in one process, for clusters without
//! Argo. It is the WorkflowTemplate's steps composed, in the same order,
//! through the same library calls, with the same guarantees:
//!
//! 1. start the run ([`preflight::start_run`]: checked, recorded, the
//!    release's run lock taken), plan it ([`planning::plan_run`]: nodes
//!    completed at the target are skipped), upgrade the release before the
//!    waves ([`upgrade::upgrade`] at [`Stage::BeforeWaves`]);
//! 2. per wave: cordon, drain (when asked), upgrade at [`Stage::Wave`] (job
//!    mode), restart kata-deploy, verify; then settle ([`settle::settle`]):
//!    complete the wave, or roll it back and stop;
//! 3. finish the run ([`complete::complete`] with `finish_run`);
//! 4. on any exit, end the run as the exit handler does
//!    ([`close_run::end_run`]): what was in flight is rolled back, held
//!    nodes are released, the record is closed unless the run completed.
//!
//! Ctrl-C or SIGTERM ([`interrupt`]) cancels the step under way, except a
//! helm upgrade, a settle or the close, which finish first; the run then
//! ends as in 4. A second signal leaves at once, without cleaning up.
//! Everything that happens is reported as an [`Event`] to an [`Observer`].

pub mod event;
pub mod interrupt;
pub mod progress;
pub mod view;

use std::future::Future;
use std::time::Duration;

use kube::Client;
use semver::Version;

use crate::close_run::{self, Ended, RollbackSettings};
use crate::complete;
use crate::cordon;
use crate::drain;
use crate::error::UserError;
use crate::helm::Helm;
use crate::nodes::planning;
use crate::nodes::selection::Criteria;
use crate::output::Report;
use crate::preflight;
use crate::release::ReleaseRef;
use crate::restart;
use crate::rollback::{Reverify, RolledBack};
use crate::settle::{self, Settled};
use crate::upgrade::{self, Outcome as UpgradeOutcome, Stage};
use crate::verification::VerificationPod;
use crate::verification::step as verification;
use crate::versions::ModeChoice;

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
    /// Nodes per wave.
    pub batch_size: usize,
    /// Order nodes by this label first (pool order).
    pub pool_label: Option<String>,
    /// The verification pod.
    pub verification_pod: VerificationPod,
    /// How long one node's verification may take.
    pub verification_timeout: Duration,
    /// Keep failed verification pods for inspection.
    pub keep_failed: bool,
    /// Drain each wave's nodes, with this timeout (None: no drain).
    pub drain_timeout: Option<Duration>,
    /// The kata-deploy chart reference.
    pub chart: String,
    /// How long one helm upgrade or rollback may take.
    pub helm_timeout: Duration,
    /// How long a node's kata-deploy may take to come back Ready.
    pub restart_timeout: Duration,
}

impl Settings {
    fn reverify(&self) -> Option<Reverify> {
        Some(Reverify {
            pod: self.verification_pod.clone(),
            timeout: self.verification_timeout,
            keep_failed: self.keep_failed,
        })
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
    /// Every wave completed and the run finished.
    Completed,
    /// A wave failed and was rolled back; no further wave started.
    WaveFailed(UserError),
    /// Ctrl-C or SIGTERM.
    Interrupted(Signal),
    /// A step outside a wave failed (or a wave could not be settled).
    Failed(anyhow::Error),
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
}

impl Outcome {
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
                    "end the run with `klm close-run --run-id {run_id} --verification-pod <file>` (it rolls back what was in flight and releases the rest)"
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
            Ending::Completed => Ok(()),
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
        Ending::Completed => "completed",
        Ending::WaveFailed(_) => "failed a wave",
        Ending::Interrupted(_) => "was interrupted",
        Ending::Failed(_) => "failed",
    }
}

/// A second signal: leave at once.
struct Abandoned(Signal);

impl From<Abandoned> for Stop {
    fn from(Abandoned(signal): Abandoned) -> Self {
        Stop::Abandoned(signal)
    }
}

/// Why the run's work stopped early.
enum Stop {
    Interrupted(Signal),
    Abandoned(Signal),
    WaveFailed(UserError),
    Failed(anyhow::Error),
}

/// The run's events, sent to the observer.
struct Reporter<'o> {
    run_id: String,
    observer: &'o mut dyn Observer,
    interrupt_announced: bool,
}

impl Reporter<'_> {
    fn send(&mut self, event: Event) {
        self.observer.event(&event);
    }

    fn run(&self, phase: Phase) -> Event {
        Event::new(&self.run_id, phase)
    }

    fn each(&mut self, phase: Phase, wave: usize, nodes: &[String]) {
        for node in nodes {
            let event = self.run(phase).in_wave(wave).on(node);
            self.send(event);
        }
    }

    /// Tells, once, that a signal arrived and what happens now.
    fn interrupted(&mut self, signal: Signal) {
        if std::mem::replace(&mut self.interrupt_announced, true) {
            return;
        }
        let event = self.run(Phase::Interrupted).saying(format!(
            "{}: ending the run as the workflow's exit handler would (what is in flight is rolled back, held nodes are released); a second signal leaves at once, without cleaning up",
            signal.name()
        ));
        self.send(event);
    }
}

/// Runs a step that is safe to cut short (as a killed workflow pod would
/// be): the first signal cancels it.
async fn cancellable<T>(
    interrupts: &Interrupts,
    step: impl Future<Output = anyhow::Result<T>>,
) -> Result<anyhow::Result<T>, Stop> {
    tokio::select! {
        biased;
        signal = interrupts.reached(1) => Err(Stop::Interrupted(signal)),
        done = step => Ok(done),
    }
}

/// Runs a step that must not be cut short (a helm upgrade, a settle, the
/// close): the first signal is announced and the step finishes; a second
/// one leaves at once.
async fn shielded<T>(
    interrupts: &Interrupts,
    reporter: &mut Reporter<'_>,
    step: impl Future<Output = T>,
) -> Result<T, Abandoned> {
    tokio::pin!(step);
    loop {
        let seen = interrupts.count();
        tokio::select! {
            biased;
            signal = interrupts.reached(2) => return Err(Abandoned(signal)),
            done = &mut step => return Ok(done),
            signal = interrupts.reached(seen + 1) => reporter.interrupted(signal),
        }
    }
}

/// Stops after a shielded step if a signal arrived meanwhile.
fn unless_interrupted(interrupts: &Interrupts) -> Result<(), Stop> {
    match interrupts.last() {
        None => Ok(()),
        Some(signal) => Err(Stop::Interrupted(signal)),
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
    let start = preflight::StartRequest {
        release: &settings.release,
        run_id: settings.run_id.clone(),
        target: &settings.target,
        mode: settings.mode,
        chart_values: settings.chart_values.clone(),
        verification_pod: Some(&settings.verification_pod),
    };
    let started = preflight::start_run(client, helm, &start).await?;
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
    let event = reporter.run(Phase::Started).saying(format!(
        "{} from {} to {} in {} mode ({how})",
        settings.release.name, record.before.chart_version, record.target_version, record.mode
    ));
    reporter.send(event);
    for warning in &started.warnings {
        tracing::warn!("{warning}");
    }

    let ending = match waves(cluster, settings, interrupts, &mut reporter).await {
        Ok(()) => Ending::Completed,
        Err(Stop::Interrupted(signal)) => Ending::Interrupted(signal),
        Err(Stop::WaveFailed(err)) => Ending::WaveFailed(err),
        Err(Stop::Failed(err)) => Ending::Failed(err),
        Err(Stop::Abandoned(signal)) => {
            return Ok(abandoned(reporter, signal, Ending::Interrupted(signal)));
        }
    };
    if let Ending::Interrupted(signal) = &ending {
        reporter.interrupted(*signal);
    }
    let closed = match close(cluster, settings, interrupts, &mut reporter, &ending).await {
        Ok(closed) => closed,
        Err(Abandoned(signal)) => return Ok(abandoned(reporter, signal, ending)),
    };
    let (phase, message) = last_words(&ending, &closed, &settings.target);
    let event = reporter.run(phase).saying(message);
    reporter.send(event);
    Ok(Outcome {
        run_id: reporter.run_id,
        ending,
        closing: match closed {
            Ok(ended) => Closing::Done(Box::new(ended)),
            Err(err) => Closing::Failed(err),
        },
    })
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
        (Ending::Completed, Ok(())) => (
            Phase::RunCompleted,
            format!("every planned node is at {target}"),
        ),
        (Ending::Completed, Err(why)) => (Phase::RunFailed, why),
        (Ending::WaveFailed(err), _) => (Phase::RunFailed, err.message.clone()),
        (Ending::Failed(err), _) => (Phase::RunFailed, format!("{err:#}")),
        (Ending::Interrupted(signal), _) => (
            Phase::RunFailed,
            format!("interrupted by {}", signal.name()),
        ),
    }
}

fn abandoned(mut reporter: Reporter<'_>, signal: Signal, ending: Ending) -> Outcome {
    let event = reporter.run(Phase::Abandoned).saying(format!(
        "a second {}: leaving without cleaning up",
        signal.name()
    ));
    reporter.send(event);
    Outcome {
        run_id: reporter.run_id,
        ending,
        closing: Closing::Abandoned(signal),
    }
}

/// Steps 1 to 3: plan, upgrade the release, the waves, finish.
async fn waves(
    cluster: Cluster<'_>,
    settings: &Settings,
    interrupts: &Interrupts,
    reporter: &mut Reporter<'_>,
) -> Result<(), Stop> {
    let Cluster { client, helm, .. } = cluster;
    let run_id = reporter.run_id.clone();
    let plan = planning::PlanRequest {
        release: &settings.release,
        criteria: &settings.criteria,
        pool_label: settings.pool_label.as_deref(),
        batch_size: settings.batch_size,
        skip_completed: Some(&settings.target),
        // One process carries any number of waves (a workflow's status does not).
        max_waves: 0,
        run_id: Some(&run_id),
    };
    let selection = shielded(
        interrupts,
        reporter,
        planning::plan_run(client, helm, &plan),
    )
    .await?
    .map_err(Stop::Failed)?;
    let mut event = reporter.run(Phase::Planned);
    event.waves = Some(selection.waves.len());
    let mut message = format!(
        "{} node(s) selected ({})",
        selection.count, selection.criteria
    );
    if !selection.skipped.is_empty() {
        message.push_str(&format!(
            "; skipped, completed at the target already: {}",
            selection.skipped.join(", ")
        ));
    }
    reporter.send(event.saying(message));
    unless_interrupted(interrupts)?;

    let before_waves = upgrade_request(settings, &run_id, Stage::BeforeWaves, None);
    let upgraded = shielded(
        interrupts,
        reporter,
        upgrade::upgrade(client, helm, &before_waves),
    )
    .await?
    .map_err(Stop::Failed)?;
    if upgraded.outcome == UpgradeOutcome::Upgraded {
        let event = reporter.run(Phase::ReleaseUpgraded).saying(upgraded.text());
        reporter.send(event);
    }
    unless_interrupted(interrupts)?;

    for wave in &selection.waves {
        let mut event = reporter.run(Phase::WaveStarted).in_wave(wave.index);
        event.nodes = wave.nodes.clone();
        reporter.send(event);
        let failure = match upgrade_wave(
            cluster,
            settings,
            interrupts,
            reporter,
            wave.index,
            &wave.nodes,
        )
        .await
        {
            Ok(()) => None,
            Err(WaveStop::Failed(why)) => Some(why),
            Err(WaveStop::Stop(stop)) => return Err(stop),
        };
        settle_wave(
            cluster,
            settings,
            interrupts,
            reporter,
            wave.index,
            &wave.nodes,
            failure,
        )
        .await?;
        unless_interrupted(interrupts)?;
    }

    let finish = complete::Request {
        release: settings.release.clone(),
        run_id: Some(run_id),
        target: None,
        nodes: None,
        finish_run: true,
        chart: settings.chart.clone(),
        helm_timeout: settings.helm_timeout,
    };
    let finished = shielded(
        interrupts,
        reporter,
        complete::complete(client, helm, &finish),
    )
    .await?
    .map_err(Stop::Failed)?;
    finished.outcome().map_err(|e| Stop::Failed(e.into()))?;
    Ok(())
}

fn upgrade_request(
    settings: &Settings,
    run_id: &str,
    stage: Stage,
    wave: Option<usize>,
) -> upgrade::Request {
    upgrade::Request {
        release: settings.release.clone(),
        run_id: Some(run_id.to_string()),
        target: None,
        mode: ModeChoice::Auto,
        stage: Some(stage),
        nodes: None,
        wave: wave.map(|w| w as u32),
        set: Vec::new(),
        chart: settings.chart.clone(),
        helm_timeout: settings.helm_timeout,
    }
}

/// Why a wave's upgrade stopped.
enum WaveStop {
    /// A step failed: settle rolls the wave back.
    Failed(String),
    /// The run stops at once (a signal).
    Stop(Stop),
}

impl From<Abandoned> for WaveStop {
    fn from(abandoned: Abandoned) -> Self {
        WaveStop::Stop(abandoned.into())
    }
}

impl From<Stop> for WaveStop {
    fn from(stop: Stop) -> Self {
        WaveStop::Stop(stop)
    }
}

fn failed(step: &str) -> impl FnOnce(anyhow::Error) -> WaveStop + '_ {
    move |err| WaveStop::Failed(format!("{step} failed: {err:#}"))
}

/// The workflow's `upgrade` template: cordon, drain?, restart, verify.
async fn upgrade_wave(
    cluster: Cluster<'_>,
    settings: &Settings,
    interrupts: &Interrupts,
    reporter: &mut Reporter<'_>,
    index: usize,
    nodes: &[String],
) -> Result<(), WaveStop> {
    let Cluster {
        client,
        evicting,
        helm,
    } = cluster;
    let run_id = reporter.run_id.clone();
    let cordon = cordon::Request {
        nodes: nodes.to_vec(),
        release: settings.release.clone(),
        run_id: Some(run_id.clone()),
        selection: Criteria {
            label_selector: None,
            ..settings.criteria.clone()
        },
    };
    cancellable(interrupts, cordon::cordon(client, helm, &cordon))
        .await?
        .map_err(failed("cordon"))?;
    reporter.each(Phase::Cordoned, index, nodes);

    if let Some(timeout) = settings.drain_timeout {
        reporter.each(Phase::Draining, index, nodes);
        let drain = drain::Request {
            nodes: nodes.to_vec(),
            release: settings.release.clone(),
            run_id: Some(run_id.clone()),
            timeout,
        };
        cancellable(interrupts, drain::drain_nodes(client, evicting, &drain))
            .await?
            .map_err(failed("drain"))?;
    }

    reporter.each(Phase::Restarting, index, nodes);
    // job mode: the release scoped to the wave (daemonset mode: nothing).
    let scoped = upgrade_request(settings, &run_id, Stage::Wave, Some(index));
    shielded(
        interrupts,
        reporter,
        upgrade::upgrade(client, helm, &scoped),
    )
    .await?
    .map_err(failed("helm-upgrade"))?;
    let restart = restart::Request {
        nodes: nodes.to_vec(),
        release: settings.release.clone(),
        run_id: Some(run_id.clone()),
        mode: ModeChoice::Auto,
        timeout: settings.restart_timeout,
        chart: settings.chart.clone(),
        helm_timeout: settings.helm_timeout,
    };
    let restarted = cancellable(interrupts, restart::restart(client, helm, &restart))
        .await?
        .map_err(failed("restart-kata-pod"))?;
    for failure in &restarted.failed {
        let event = reporter
            .run(Phase::RestartFailed)
            .in_wave(index)
            .on(&failure.node)
            .saying(failure.reason.clone());
        reporter.send(event);
    }
    restarted
        .outcome()
        .map_err(|e| WaveStop::Failed(e.message))?;

    reporter.each(Phase::Verifying, index, nodes);
    let verify = verification::Request {
        nodes: nodes.to_vec(),
        pod: settings.verification_pod.clone(),
        release: settings.release.clone(),
        run_id: Some(run_id),
        timeout: settings.verification_timeout,
        keep_failed: settings.keep_failed,
    };
    let verified = cancellable(interrupts, verification::verify(client, &verify))
        .await?
        .map_err(failed("verify"))?;
    for verdict in &verified.nodes {
        let mut event = reporter.run(if verdict.passed {
            Phase::Verified
        } else {
            Phase::VerificationFailed
        });
        event = event.in_wave(index).on(&verdict.node);
        if let Some(reason) = &verdict.reason {
            event = event.saying(reason.clone());
        }
        reporter.send(event);
    }
    if !verified.all_passed() {
        return Err(WaveStop::Failed(format!(
            "failed verification on {}",
            verified.failed.join(", ")
        )));
    }
    Ok(())
}

/// The workflow's `settle`: complete the wave, or roll it back and stop.
async fn settle_wave(
    cluster: Cluster<'_>,
    settings: &Settings,
    interrupts: &Interrupts,
    reporter: &mut Reporter<'_>,
    index: usize,
    nodes: &[String],
    failure: Option<String>,
) -> Result<(), Stop> {
    let Cluster { client, helm, .. } = cluster;
    if failure.is_some() {
        reporter.each(Phase::RollingBack, index, nodes);
    }
    let request = settle::Request {
        release: settings.release.clone(),
        run_id: Some(reporter.run_id.clone()),
        wave: index as u32,
        failure,
        chart: settings.chart.clone(),
        helm_timeout: settings.helm_timeout,
        timeout: settings.restart_timeout,
        reverify: settings.reverify(),
    };
    let settled = shielded(interrupts, reporter, settle::settle(client, helm, &request))
        .await?
        .map_err(Stop::Failed)?;
    match &settled {
        Settled::Completed(report) => {
            let done: Vec<String> = report.nodes.iter().map(|r| r.node.clone()).collect();
            reporter.each(Phase::Completed, index, &done);
        }
        Settled::RolledBack { report, .. } => report_rollback(reporter, Some(index), report),
        Settled::Untouched { .. } => {}
    }
    match settled.outcome() {
        Ok(()) => {
            let event = reporter.run(Phase::WaveCompleted).in_wave(index);
            reporter.send(event);
            Ok(())
        }
        Err(err) => {
            let event = reporter
                .run(Phase::WaveFailed)
                .in_wave(index)
                .saying(err.message.clone());
            reporter.send(event);
            Err(Stop::WaveFailed(err))
        }
    }
}

fn report_rollback(reporter: &mut Reporter<'_>, wave: Option<usize>, report: &RolledBack) {
    for released in &report.nodes {
        let mut event = reporter.run(Phase::RolledBack).on(&released.node);
        event.wave = wave;
        let event = event.saying(format!("back at {}", report.version));
        reporter.send(event);
    }
    for failure in &report.failed {
        let mut event = reporter.run(Phase::RollbackFailed).on(&failure.node);
        event.wave = wave;
        reporter.send(event.saying(failure.reason.clone()));
    }
}

/// Step 4: end the run as the workflow's exit handler does.
async fn close(
    cluster: Cluster<'_>,
    settings: &Settings,
    interrupts: &Interrupts,
    reporter: &mut Reporter<'_>,
    ending: &Ending,
) -> Result<anyhow::Result<Ended>, Abandoned> {
    let Cluster { client, helm, .. } = cluster;
    let (status, reason) = match ending {
        Ending::Completed => ("Succeeded", None),
        Ending::WaveFailed(_) => ("Failed", None),
        Ending::Interrupted(signal) => (
            "Failed",
            Some(format!("klm upgrade was interrupted by {}", signal.name())),
        ),
        Ending::Failed(err) => ("Failed", Some(format!("klm upgrade stopped: {err:#}"))),
    };
    let event = reporter.run(Phase::Closing);
    reporter.send(event);
    let request = close_run::Request {
        release: settings.release.clone(),
        run_id: reporter.run_id.clone(),
        workflow_status: Some(status.to_string()),
        failures: None,
        reason,
    };
    let rollback = RollbackSettings {
        chart: settings.chart.clone(),
        helm_timeout: settings.helm_timeout,
        timeout: settings.restart_timeout,
        reverify: settings.reverify(),
    };
    let ended = match shielded(
        interrupts,
        reporter,
        close_run::end_run(client, helm, &request, &rollback),
    )
    .await?
    {
        Ok(ended) => ended,
        Err(err) => return Ok(Err(err)),
    };
    for released in &ended.closed.released {
        let event = reporter.run(Phase::Released).on(&released.node);
        reporter.send(event);
    }
    if let Some(report) = &ended.rolled_back {
        report_rollback(reporter, None, report);
    }
    Ok(Ok(ended))
}
