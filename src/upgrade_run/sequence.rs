//! The run's steps in the workflow's order: [`waves`] (plan, the release's
//! upgrade, each wave's upgrade and settle, the run's finish) and [`close`]
//! (the exit handler), each a composition of the steps' library calls.

use super::event::PlannedGate;
use super::guard::{Abandoned, Reporter, Stop, cancellable, shielded, unless_interrupted};
use super::{Cluster, Ending, Finished, Interrupts, Phase, Settings};
use crate::drain;
use crate::nodes::selection::Criteria;
use crate::output::Report;
use crate::steps::close_run::{self, Ended};
use crate::steps::complete;
use crate::steps::cordon;
use crate::steps::gate;
use crate::steps::helm_upgrade::{self, Outcome as UpgradeOutcome, Stage};
use crate::steps::restart_kata_pod;
use crate::steps::rollback::RolledBack;
use crate::steps::select_nodes;
use crate::steps::settle::{self, Settled};
use crate::steps::verify as verification;
use crate::versions::{DeploymentMode, ModeChoice};
use crate::wait::Check;

/// Steps 1 to 3: plan, upgrade the release, the waves, finish, for a run
/// in `mode` (as recorded). Returns what the finished run left on the
/// release for the nodes outside it (a partial run), if anything.
pub(super) async fn waves(
    cluster: Cluster<'_>,
    settings: &Settings,
    mode: DeploymentMode,
    interrupts: &Interrupts,
    reporter: &mut Reporter<'_>,
) -> Result<Finished, Stop> {
    let Cluster { client, helm, .. } = cluster;
    let run_id = reporter.run_id.clone();
    let plan = plan_request(settings, Some(&run_id));
    let selection = shielded(
        interrupts,
        reporter,
        select_nodes::plan_run(client, helm, &plan),
    )
    .await?
    .map_err(Stop::Failed)?;
    let mut event = reporter.run(Phase::Planned);
    event.waves = Some(selection.waves.len());
    event.nodes = selection
        .waves
        .iter()
        .flat_map(|w| w.nodes.iter().cloned())
        .collect();
    event.skipped = selection.skipped.clone();
    event.gates = selection
        .gates
        .iter()
        .map(|g| PlannedGate {
            before_wave: g.before_wave,
            soak_seconds: g.soak_seconds.unwrap_or(0),
            approval: g.approval,
        })
        .collect();
    let mut message = format!(
        "{} node(s) selected ({})",
        selection.count, selection.criteria
    );
    if !selection.skipped.is_empty() {
        message.push_str(&format!(
            "; skipped, completed at the target already: {}",
            super::event::shortened(&selection.skipped, 10)
        ));
    }
    for note in [selection.unavailable_note(), selection.left_out_note()]
        .into_iter()
        .flatten()
    {
        message.push_str(&format!("; {note}"));
    }
    reporter.send(event.saying(message));
    unless_interrupted(interrupts)?;

    let before_waves = upgrade_request(settings, &run_id, Stage::BeforeWaves, None);
    let upgraded = shielded(
        interrupts,
        reporter,
        helm_upgrade::upgrade(client, helm, &before_waves),
    )
    .await?
    .map_err(Stop::Failed)?;
    if upgraded.outcome == UpgradeOutcome::Upgraded {
        let event = reporter.run(Phase::ReleaseUpgraded).saying(upgraded.text());
        reporter.send(event);
    }
    unless_interrupted(interrupts)?;

    let mut failed = Vec::new();
    for wave in &selection.waves {
        let held = selection.window.is_some()
            || selection.gates.iter().any(|g| g.before_wave == wave.index);
        if held {
            hold_wave(cluster, settings, interrupts, reporter, wave.index).await?;
        }
        // Last before the wave: a pause made while it was held counts too.
        unless_paused(cluster, settings, interrupts, reporter, wave.index).await?;
        let mut event = reporter.run(Phase::WaveStarted).in_wave(wave.index);
        event.nodes = wave.nodes.clone();
        reporter.send(event);
        let failure = match upgrade_wave(
            cluster,
            settings,
            mode,
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
        let failed_within_budget = settle_wave(
            cluster,
            settings,
            interrupts,
            reporter,
            wave.index,
            &wave.nodes,
            failure,
        )
        .await?;
        failed.extend(failed_within_budget);
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
    Ok(Finished {
        left: finished.left_note(),
        failed,
    })
}

/// What the run plans (and records in the run named, if any).
pub(super) fn plan_request<'a>(
    settings: &'a Settings,
    run_id: Option<&'a str>,
) -> select_nodes::PlanRequest<'a> {
    select_nodes::PlanRequest {
        release: &settings.release,
        criteria: &settings.criteria,
        pool_label: settings.pool_label.as_deref(),
        policy: &settings.policy,
        schedule: &settings.schedule,
        skip_completed: Some(&settings.target),
        // One process carries any number of waves (a workflow's status does not).
        max_waves: 0,
        run_id,
        prometheus: &settings.prometheus,
    }
}

/// The workflow's `hold` template: pass the wave's gate and window, waiting
/// in between (a soak or a window: a timer; an approval: `klm approve`,
/// watched for), until the wave may start. A signal cuts a wait short; the
/// gate's own work (verifying again, rolling back) finishes first.
async fn hold_wave(
    cluster: Cluster<'_>,
    settings: &Settings,
    interrupts: &Interrupts,
    reporter: &mut Reporter<'_>,
    index: usize,
) -> Result<(), Stop> {
    let Cluster { client, helm, .. } = cluster;
    let mut resumed_from = None;
    loop {
        let request = gate::Request {
            release: settings.release.clone(),
            run_id: reporter.run_id.clone(),
            wave: index as u32,
            resumed_from,
            approver: gate::Approver::Klm,
            rollback: settings.rollback(),
            prometheus: settings.prometheus.clone(),
            now: jiff::Timestamp::now(),
        };
        let passage = shielded(interrupts, reporter, gate::pass(client, helm, &request))
            .await?
            .map_err(Stop::Failed)?;
        for done in &passage.done {
            let event = reporter
                .run(Phase::GatePassed)
                .in_wave(index)
                .saying(done.clone());
            reporter.send(event);
        }
        if let Some(held) = &passage.held {
            let mut event = reporter
                .run(Phase::Held)
                .in_wave(index)
                .saying(held.clone());
            if let Some((waiting, until)) = passage.wait.held_for() {
                event.waiting_for = Some(waiting);
                event.until = until.map(|t| t.to_string());
            }
            reporter.send(event);
        }
        resumed_from = match passage.wait {
            gate::Wait::Nothing => return Ok(()),
            timed @ (gate::Wait::Soak(_) | gate::Wait::Window(_)) => {
                let left = timed.remaining(jiff::Timestamp::now());
                let timer = async {
                    tokio::time::sleep(left).await;
                    anyhow::Ok(())
                };
                cancellable(interrupts, timer)
                    .await?
                    .map_err(Stop::Failed)?;
                None
            }
            gate::Wait::Approval => {
                let approval =
                    gate::await_approval(client, &settings.release, &reporter.run_id, index as u32);
                cancellable(interrupts, approval)
                    .await?
                    .map_err(Stop::Failed)?;
                let event = reporter
                    .run(Phase::GatePassed)
                    .in_wave(index)
                    .saying(format!("wave {index} approved (klm approve)"));
                reporter.send(event);
                None
            }
        };
    }
}

/// Before a wave: while a person has paused the run (`klm pause`), wait,
/// watching the run record, until it is resumed (a signal or `klm abort`
/// cuts the wait short).
async fn unless_paused(
    cluster: Cluster<'_>,
    settings: &Settings,
    interrupts: &Interrupts,
    reporter: &mut Reporter<'_>,
    index: usize,
) -> Result<(), Stop> {
    let record = crate::run_record::Records::new(cluster.client, &settings.release.namespace)
        .resolve(&settings.release.name, Some(&reporter.run_id))
        .await
        .map_err(|e| Stop::Failed(e.into()))?;
    let Some(paused) = record.paused.as_ref() else {
        return Ok(());
    };
    let event = reporter.run(Phase::Paused).in_wave(index).saying(format!(
        "paused {paused}: wave {index} starts after `klm resume --run-id {}`",
        reporter.run_id
    ));
    reporter.send(event);
    let resumed = async {
        crate::run_record::watch_run(
            cluster.client,
            &settings.release.namespace,
            &settings.release.name,
            &reporter.run_id,
            format!("run {} to be resumed", reporter.run_id),
            |r| match r.paused {
                None => Check::Done(()),
                Some(_) => Check::Pending,
            },
        )
        .await
        .map_err(anyhow::Error::from)
    };
    cancellable(interrupts, resumed)
        .await?
        .map_err(Stop::Failed)?;
    let event = reporter.run(Phase::Resumed).in_wave(index);
    reporter.send(event);
    Ok(())
}

fn upgrade_request(
    settings: &Settings,
    run_id: &str,
    stage: Stage,
    wave: Option<usize>,
) -> helm_upgrade::Request {
    helm_upgrade::Request {
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
    mode: DeploymentMode,
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
        nodes: nodes.to_vec().into(),
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

    if let Some((timeout, scope)) = settings.drain {
        reporter.each(Phase::Draining, index, nodes);
        let drain = drain::Request {
            nodes: nodes.to_vec().into(),
            release: settings.release.clone(),
            run_id: Some(run_id.clone()),
            timeout,
            scope,
        };
        cancellable(
            interrupts,
            drain::drain_nodes(client, evicting, helm, &drain),
        )
        .await?
        .map_err(failed("drain"))?;
    }

    reporter.each(Phase::Restarting, index, nodes);
    // job mode: the release scoped to the wave, shielded (restart then finds
    // it done); daemonset mode upgrades before the waves only, so nothing to
    // call (the call would read the release to say so).
    if Stage::of(mode) == Stage::Wave {
        let scoped = upgrade_request(settings, &run_id, Stage::Wave, Some(index));
        shielded(
            interrupts,
            reporter,
            helm_upgrade::upgrade(client, helm, &scoped),
        )
        .await?
        .map_err(failed("helm-upgrade"))?;
    }
    let restart = restart_kata_pod::Request {
        nodes: nodes.to_vec().into(),
        release: settings.release.clone(),
        run_id: Some(run_id.clone()),
        mode: ModeChoice::Auto,
        timeout: settings.restart_timeout,
        chart: settings.chart.clone(),
        helm_timeout: settings.helm_timeout,
    };
    let restarted = match cancellable(
        interrupts,
        restart_kata_pod::restart(client, helm, &restart),
    )
    .await?
    {
        Ok(restarted) => restarted,
        Err(err) => {
            // The restart could not be carried out at all: why is each
            // node's restart-failed event (and a log line), not only the
            // wave's failure.
            let why = format!("restart-kata-pod failed: {err:#}");
            tracing::warn!(wave = index, "{why}");
            for node in nodes {
                let event = reporter
                    .run(Phase::RestartFailed)
                    .in_wave(index)
                    .on(node)
                    .saying(why.clone());
                reporter.send(event);
            }
            return Err(WaveStop::Failed(why));
        }
    };
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
        nodes: nodes.to_vec().into(),
        pods: settings.verification.clone(),
        pool_label: settings.pool_label.clone(),
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

/// The workflow's `settle`: complete the wave, or roll it back and stop
/// (within the run's failure budget: roll back its failed nodes, returned,
/// and go on).
async fn settle_wave(
    cluster: Cluster<'_>,
    settings: &Settings,
    interrupts: &Interrupts,
    reporter: &mut Reporter<'_>,
    index: usize,
    nodes: &[String],
    failure: Option<String>,
) -> Result<Vec<String>, Stop> {
    let Cluster { client, helm, .. } = cluster;
    if failure.is_some() {
        reporter.each(Phase::RollingBack, index, nodes);
    }
    let request = settle::Request {
        release: settings.release.clone(),
        run_id: Some(reporter.run_id.clone()),
        wave: index as u32,
        failure,
        rollback: settings.rollback(),
    };
    let settled = shielded(interrupts, reporter, settle::settle(client, helm, &request))
        .await?
        .map_err(Stop::Failed)?;
    if let Some(how) = &settings.recycle
        && let Some(run_id) = settled.run_id()
    {
        let completed = settled.completed_nodes();
        let recycling = crate::sandboxes::recycle(
            client,
            cluster.evicting,
            helm,
            &settings.release,
            run_id,
            &completed,
            how,
        );
        let recycled = shielded(interrupts, reporter, async { anyhow::Ok(recycling.await) })
            .await?
            .unwrap_or_default();
        for done in recycled {
            let event = reporter
                .run(Phase::SandboxesRecycled)
                .in_wave(index)
                .on(&done.node)
                .saying(done.to_string());
            reporter.send(event);
        }
    }
    match &settled {
        Settled::Completed(report) => {
            let done: Vec<String> = report.nodes.iter().map(|r| r.node.clone()).collect();
            reporter.each(Phase::Completed, index, &done);
        }
        Settled::RolledBack { report, .. } => report_rollback(reporter, Some(index), report),
        Settled::Untouched { .. } => {}
        Settled::WithinBudget {
            completed,
            rolled_back,
            failed,
            ..
        } => {
            if let Some(report) = completed {
                let done: Vec<String> = report.nodes.iter().map(|r| r.node.clone()).collect();
                reporter.each(Phase::Completed, index, &done);
            }
            if let Some(report) = rolled_back {
                report_rollback(reporter, Some(index), report);
            }
            let sentence = settled.within_budget().unwrap_or_default();
            let event = reporter
                .run(Phase::WaveFailedWithinBudget)
                .in_wave(index)
                .saying(sentence);
            reporter.send(event);
            return Ok(failed.clone());
        }
    }
    match settled.outcome() {
        Ok(()) => {
            let event = reporter.run(Phase::WaveCompleted).in_wave(index);
            reporter.send(event);
            Ok(Vec::new())
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
pub(super) async fn close(
    cluster: Cluster<'_>,
    settings: &Settings,
    interrupts: &Interrupts,
    reporter: &mut Reporter<'_>,
    ending: &Ending,
) -> Result<anyhow::Result<Ended>, Abandoned> {
    let Cluster { client, helm, .. } = cluster;
    let (status, reason) = match ending {
        Ending::Completed(_) => ("Succeeded", None),
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
    let rollback = settings.rollback();
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
