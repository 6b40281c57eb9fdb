//! Upgrading the kata-deploy release for a run: what `klm helm-upgrade`
//! does. The release moves to the run's target with the values the run
//! sets for its own mechanics ([`crate::run_values`]) on top of the user's.

use std::time::Duration;

use kube::Client;
use semver::Version;

use crate::error::UserError;
use crate::helm::Helm;
use crate::output::Report;
use crate::release::{Release, ReleaseRef, Upgrade, Values};
use crate::run::Run;
use crate::run_record::NodeProgress;
use crate::run_values;
use crate::versions::{self, DeploymentMode, ModeChoice};

/// When in a run the release is upgraded. The workflow names the stage and
/// klm decides, from the run's mode, what the stage does: the template knows
/// nothing of modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Once, before any wave: daemonset mode upgrades the release with
    /// `updateStrategy.type=OnDelete` (nothing restarts); job mode has
    /// nothing to do yet.
    BeforeWaves,
    /// For one wave: job mode upgrades the release with the installer scoped
    /// to the wave's nodes; daemonset mode has nothing to do (the release
    /// moved before the waves; restart-kata-pod moves each node).
    Wave,
}

impl Stage {
    /// The stage a mode upgrades at.
    pub fn of(mode: DeploymentMode) -> Stage {
        match mode {
            DeploymentMode::Daemonset => Stage::BeforeWaves,
            DeploymentMode::Job => Stage::Wave,
        }
    }
}

/// What to upgrade, for which run.
#[derive(Debug, Clone)]
pub struct Request {
    /// The release.
    pub release: ReleaseRef,
    /// The run (None: the release's latest run).
    pub run_id: Option<String>,
    /// The chart version named by the caller, if any: it must be the run's
    /// target (None: the run's target).
    pub target: Option<Version>,
    /// The deployment mode asked for: it must be the run's.
    pub mode: ModeChoice,
    /// The stage of the run (None: the stage of the run's mode).
    pub stage: Option<Stage>,
    /// job mode: the wave's nodes.
    pub nodes: Option<Vec<String>>,
    /// job mode, instead of `nodes`: wave K (from 1) of the run's recorded plan.
    pub wave: Option<u32>,
    /// Chart values for this step only, as helm's `--set` items, after the
    /// ones the run recorded.
    pub set: Vec<String>,
    /// The kata-deploy chart reference.
    pub chart: String,
    /// How long the helm upgrade may take.
    pub helm_timeout: Duration,
}

/// How helm-upgrade ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The release moved to the target.
    Upgraded,
    /// The run had already done this upgrade (a retried step): nothing changed.
    AlreadyDone,
    /// The run's plan (from select-nodes) has no node: nothing changed.
    NothingSelected,
    /// The run's mode upgrades at another stage: nothing changed.
    OtherStage,
}

/// What helm-upgrade did.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Upgraded {
    /// The release.
    pub release: String,
    /// The mode.
    pub mode: DeploymentMode,
    /// The stage asked for.
    pub stage: Stage,
    /// How it ended.
    pub outcome: Outcome,
    /// The chart version before this step.
    pub from_version: String,
    /// The chart version now.
    pub to_version: String,
    /// job mode: the wave's nodes.
    pub nodes: Vec<String>,
    /// The values this step set for the run's mechanics.
    pub mechanics: Vec<String>,
    /// job mode: when this wave's helm upgrade started (RFC 3339), as the
    /// run records it: install Jobs older than this belong to an earlier wave.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wave_started_at: Option<String>,
    /// daemonset mode: the nodes labelled so that they keep taking Kata pods
    /// under the target's RuntimeClasses until their turn
    /// ([`crate::nodes::marks`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub marked: Vec<String>,
}

impl Report for Upgraded {
    fn text(&self) -> String {
        match self.outcome {
            Outcome::NothingSelected => format!(
                "the run selected no node: {} stays at {}; nothing to do",
                self.release, self.from_version
            ),
            Outcome::AlreadyDone => format!(
                "{} is already at {} for this run; nothing to do",
                self.release, self.to_version
            ),
            Outcome::OtherStage => match self.mode {
                DeploymentMode::Daemonset => format!(
                    "daemonset mode: {} moved to {} before the waves; nothing to do in a wave",
                    self.release, self.to_version
                ),
                DeploymentMode::Job => format!(
                    "job mode: {} is upgraded wave by wave, for each wave's nodes; nothing to do before the waves",
                    self.release
                ),
            },
            Outcome::Upgraded
                if self.mode == DeploymentMode::Job && self.stage == Stage::BeforeWaves =>
            {
                format!(
                    "moved {} from {} to {} without hooks: no installer ran on any node; each wave's nodes follow",
                    self.release, self.from_version, self.to_version
                )
            }
            Outcome::Upgraded => {
                let scope = match self.mode {
                    DeploymentMode::Daemonset => {
                        "no pod restarts until each node's turn (updateStrategy OnDelete)"
                            .to_string()
                    }
                    DeploymentMode::Job => format!("installed on {}", self.nodes.join(", ")),
                };
                let marked = if self.marked.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; labelled {} for {}'s RuntimeClasses, so they take Kata pods until their turn",
                        self.marked.join(", "),
                        self.to_version
                    )
                };
                format!(
                    "upgraded {} from {} to {} in {} mode: {scope}{marked}",
                    self.release, self.from_version, self.to_version, self.mode
                )
            }
        }
    }
}

/// Upgrades the release to its run's target at the request's stage: in
/// daemonset mode once, before the waves, with `updateStrategy.type=OnDelete`
/// (nothing restarts; nothing at all when the run's plan has no node); in
/// job mode for one wave, with the installer scoped to the wave's nodes.
/// A stage that is not the mode's changes nothing. The user's values are the
/// run's recorded ones, then the request's. Records the values it set for the
/// run's mechanics and the nodes it upgraded; a step the run already did is
/// reported done, changing nothing.
pub async fn upgrade(client: &Client, helm: &Helm, request: &Request) -> anyhow::Result<Upgraded> {
    let run = Run::active(client, &request.release, request.run_id.as_deref()).await?;
    let target = run.target(request.target.as_ref())?;
    let mode = run.mode(request.mode)?;
    let stage = request.stage.unwrap_or(Stage::of(mode));
    let wave: Vec<String> = match request.wave {
        Some(index) => run.wave(index)?.to_vec(),
        None => request.nodes.clone().unwrap_or_default(),
    };
    check_scope(mode, stage, &wave)?;
    let reference = &request.release;
    let release = reference.load(helm).await?;
    release.ensure_deployed()?;
    let mut report = Upgraded {
        release: reference.name.clone(),
        mode,
        stage,
        outcome: Outcome::Upgraded,
        from_version: release.chart_version.clone(),
        to_version: target.to_string(),
        nodes: wave.clone(),
        mechanics: Vec::new(),
        wave_started_at: None,
        marked: Vec::new(),
    };
    if stage == Stage::BeforeWaves {
        observe_planned_nodes(client, helm, &run, reference, &release).await?;
    }
    let own_dispatcher = mode == DeploymentMode::Job
        && versions::runs_own_dispatcher(&versions::parse(&run.before.chart_version)?, &target);
    if own_dispatcher {
        return match stage {
            Stage::BeforeWaves => {
                move_without_hooks(client, helm, &run, request, &release, report).await
            }
            Stage::Wave => dispatch_wave(client, helm, &run, request, &wave, report).await,
        };
    }
    if stage != Stage::of(mode) {
        report.outcome = Outcome::OtherStage;
        return Ok(report);
    }
    let mechanics = match mode {
        DeploymentMode::Daemonset => {
            daemonset_mechanics(client, &run, &release, &target, &mut report).await?
        }
        DeploymentMode::Job => {
            job_mechanics(
                client,
                helm,
                &run,
                reference,
                &release,
                &target,
                &mut report,
            )
            .await?
        }
    };
    let Some(mechanics) = mechanics else {
        return Ok(report);
    };
    let (set, set_json) = run_values::as_set_flags(&mechanics);
    let upgrade = Upgrade {
        chart: request.chart.clone(),
        version: target.to_string(),
        values: Values::ResetThenReuse,
        set: run
            .chart_values
            .iter()
            .chain(&request.set)
            .cloned()
            .chain(set)
            .collect(),
        set_json,
        timeout: request.helm_timeout,
        mode,
        no_hooks: false,
        description: None,
    };
    release.upgrade(helm, &upgrade).await?;
    report.mechanics = mechanics.iter().map(|(k, _)| k.clone()).collect();
    let mut daemonset = None;
    if mode == DeploymentMode::Daemonset {
        let upgraded = reference.load(helm).await?;
        report.marked =
            crate::nodes::marks::keep_schedulable(client, run.records(), &run, &upgraded).await?;
        // A release without one fails at the waves' restart, as before.
        daemonset = upgraded.daemonset().ok();
    }
    run.update(|r| {
        if daemonset.is_some() {
            r.kata_daemonset = daemonset.clone();
        }
        for (key, value) in &mechanics {
            r.mechanics.insert(key.clone(), value.clone());
        }
        for node in &wave {
            r.nodes.insert(node.clone(), NodeProgress::Upgraded);
        }
    })
    .await?;
    Ok(report)
}

/// daemonset mode, before the waves: the values that keep every kata-deploy
/// pod where it is (OnDelete); None when there is nothing to upgrade (the
/// report says why).
async fn daemonset_mechanics(
    client: &Client,
    run: &Run,
    release: &Release,
    target: &Version,
    report: &mut Upgraded,
) -> anyhow::Result<Option<Vec<(String, serde_json::Value)>>> {
    // A run whose plan has no node changes nothing: an upgraded template
    // would reach any node whose kata-deploy pod restarts, unverified.
    if planned_nothing(run) {
        report.outcome = Outcome::NothingSelected;
        return Ok(None);
    }
    if release.chart_version == target.to_string()
        && run_values::is_on_delete(&release.user_values)
        && release.revision > run.before.revision
    {
        // A retried step still labels what it did not get to, and records
        // the DaemonSet.
        report.marked =
            crate::nodes::marks::keep_schedulable(client, run.records(), run, release).await?;
        record_daemonset(run, release).await?;
        report.outcome = Outcome::AlreadyDone;
        return Ok(None);
    }
    Ok(Some(run_values::daemonset()))
}

/// job mode before 4.1, for a wave: the values that scope the installer to
/// the wave's nodes (`report.nodes`); None when the wave was upgraded
/// already (a retry).
async fn job_mechanics(
    client: &Client,
    helm: &Helm,
    run: &Run,
    reference: &ReleaseRef,
    release: &Release,
    target: &Version,
    report: &mut Upgraded,
) -> anyhow::Result<Option<Vec<(String, serde_json::Value)>>> {
    let wave = &report.nodes;
    let coalesced = reference.coalesced_values(helm).await?;
    if wave_upgraded(run, wave)
        && release.chart_version == target.to_string()
        && run_values::is_scoped_to(&coalesced, wave)
    {
        report.outcome = Outcome::AlreadyDone;
        report.wave_started_at = run.wave_started_at.clone();
        return Ok(None);
    }
    crate::kata_deploy::clear_finished_install_jobs(client, reference, wave).await?;
    let started = crate::run_record::now();
    run.update(|r| r.wave_started_at = Some(started.clone()))
        .await?;
    report.wave_started_at = Some(started);
    Ok(Some(run_values::job_wave(wave, &coalesced)))
}

/// Before the waves, once a run: what every planned node runs before the
/// release moves (its rollback target), so that no wave's cordon reads the
/// release, its history and the nodes' kata-deploy pods again. The record
/// keeps only the nodes that run another version than the release's.
async fn observe_planned_nodes(
    client: &Client,
    helm: &Helm,
    run: &Run,
    reference: &ReleaseRef,
    release: &Release,
) -> anyhow::Result<()> {
    if run.planned_versions_observed {
        return Ok(());
    }
    let unknown: Vec<String> = run
        .planned_nodes()
        .filter(|n| !run.version_before_known(n))
        .cloned()
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let versions =
        crate::nodes::installed::observe(client, helm, reference, release, run.mode, &unknown)
            .await?;
    let before = &run.before.chart_version;
    run.update(|r| {
        for (node, version) in versions.iter().filter(|(_, v)| *v != before) {
            r.node_versions
                .entry(node.clone())
                .or_insert_with(|| version.clone());
        }
        r.planned_versions_observed = true;
    })
    .await?;
    Ok(())
}

/// Records the release's kata-deploy DaemonSet (daemonset mode, at the
/// target) for the waves' restarts, unless it is recorded already.
async fn record_daemonset(run: &Run, release: &Release) -> anyhow::Result<()> {
    let Ok(daemonset) = release.daemonset() else {
        return Ok(());
    };
    if run.kata_daemonset.as_ref() != Some(&daemonset) {
        run.update(|r| r.kata_daemonset = Some(daemonset.clone()))
            .await?;
    }
    Ok(())
}

/// job mode from 4.1, before the waves: the release moves to the target
/// with the user's values untouched and `--no-hooks`, so no installer runs
/// on any node (and nothing prunes); the release's reconcile CronJobs are
/// suspended for the run. Each wave then dispatches to its own nodes
/// ([`dispatch_wave`]).
async fn move_without_hooks(
    client: &Client,
    helm: &Helm,
    run: &Run,
    request: &Request,
    release: &crate::release::Release,
    mut report: Upgraded,
) -> anyhow::Result<Upgraded> {
    if planned_nothing(run) {
        report.outcome = Outcome::NothingSelected;
        return Ok(report);
    }
    let target = run.target_version.to_string();
    if release.chart_version == target && release.revision > run.before.revision {
        report.outcome = Outcome::AlreadyDone;
    } else {
        let upgrade = Upgrade {
            chart: request.chart.clone(),
            version: target.clone(),
            values: Values::ResetThenReuse,
            set: run
                .chart_values
                .iter()
                .chain(&request.set)
                .cloned()
                .collect(),
            set_json: Vec::new(),
            timeout: request.helm_timeout,
            mode: DeploymentMode::Job,
            no_hooks: true,
            description: Some(format!(
                "kata-lifecycle-manager: run {}: release at {target}; nodes follow wave by wave {}",
                run.run_id,
                crate::release::HOOKS_NOT_RUN
            )),
        };
        release.upgrade(helm, &upgrade).await?;
    }
    let moved = request.release.load(helm).await?;
    crate::dispatch::suspend_reconcilers(client, run.records(), run, &moved).await?;
    Ok(report)
}

/// job mode from 4.1, one wave: runs the release's own install dispatcher,
/// as its current revision recorded it, for the wave's nodes only and
/// without its prune ([`crate::dispatch`]); records the nodes upgraded.
async fn dispatch_wave(
    client: &Client,
    helm: &Helm,
    run: &Run,
    request: &Request,
    wave: &[String],
    mut report: Upgraded,
) -> anyhow::Result<Upgraded> {
    let release = request.release.load(helm).await?;
    let target = run.target_version.to_string();
    if release.chart_version != target {
        return Err(UserError::precondition(format!(
            "release {} is at {}, not the run's {target}: the release moves before the waves",
            release.reference.name, release.chart_version
        ))
        .hint(format!(
            "run `klm helm-upgrade --stage before-waves --run-id {}` first",
            run.run_id
        ))
        .into());
    }
    let done = wave_upgraded(run, wave);
    if done {
        report.outcome = Outcome::AlreadyDone;
        report.wave_started_at = run.wave_started_at.clone();
        return Ok(report);
    }
    let dispatcher = crate::dispatch::Dispatcher::find(
        release
            .reference
            .hooks(helm, release.revision)
            .await?
            .iter()
            .map(String::as_str),
        &release.reference.name,
        release.revision,
    )?;
    let started = crate::run_record::now();
    run.update(|r| r.wave_started_at = Some(started.clone()))
        .await?;
    report.wave_started_at = Some(started);
    let key = match request.wave {
        Some(index) => format!("w{index}"),
        None => crate::dispatch::nodes_key(wave),
    };
    crate::dispatch::dispatch(
        client,
        &request.release,
        &dispatcher,
        &run.run_id,
        &key,
        wave,
        request.helm_timeout,
    )
    .await?;
    run.update(|r| {
        for node in wave {
            r.nodes.insert(node.clone(), NodeProgress::Upgraded);
        }
    })
    .await?;
    Ok(report)
}

/// Whether select-nodes recorded a plan with no node for the run (then a
/// run changes nothing: an upgraded release would reach any node whose
/// installer runs, unverified).
fn planned_nothing(record: &crate::run_record::RunRecord) -> bool {
    record
        .plan
        .waves
        .as_ref()
        .is_some_and(|waves| waves.iter().all(Vec::is_empty))
}

/// Whether the run recorded every node of the wave upgraded (or further).
fn wave_upgraded(record: &crate::run_record::RunRecord, wave: &[String]) -> bool {
    wave.iter().all(|n| {
        matches!(
            record.nodes.get(n),
            Some(NodeProgress::Upgraded | NodeProgress::Verified | NodeProgress::Completed)
        )
    })
}

/// Refuses (bad input, nothing changed) nodes where the stage takes none,
/// and a job-mode wave without nodes.
fn check_scope(mode: DeploymentMode, stage: Stage, wave: &[String]) -> Result<(), UserError> {
    if stage == Stage::BeforeWaves && !wave.is_empty() {
        return Err(UserError::bad_input(
            "before the waves, helm-upgrade moves the whole release once: --nodes and --wave scope job-mode waves (--stage wave)",
        )
        .hint("drop --nodes/--wave; in daemonset mode restart-kata-pod then moves one node at a time"));
    }
    if stage == Stage::Wave && mode == DeploymentMode::Job && wave.is_empty() {
        return Err(UserError::bad_input(
            "job mode upgrades one wave at a time: --nodes or --wave is required",
        )
        .hint("pass the wave's nodes, e.g. --nodes worker-1,worker-2, or --wave K"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ExitStatus;

    #[test]
    fn the_report_says_what_moved() {
        let mut report = Upgraded {
            release: "kata-deploy".into(),
            mode: DeploymentMode::Job,
            stage: Stage::Wave,
            outcome: Outcome::Upgraded,
            from_version: "3.27.0".into(),
            to_version: "3.28.0".into(),
            nodes: vec!["w1".into(), "w2".into()],
            mechanics: Vec::new(),
            wave_started_at: None,
            marked: Vec::new(),
        };
        assert_eq!(
            report.text(),
            "upgraded kata-deploy from 3.27.0 to 3.28.0 in job mode: installed on w1, w2"
        );
        report.outcome = Outcome::AlreadyDone;
        assert_eq!(
            report.text(),
            "kata-deploy is already at 3.28.0 for this run; nothing to do"
        );
        report.outcome = Outcome::NothingSelected;
        assert_eq!(
            report.text(),
            "the run selected no node: kata-deploy stays at 3.27.0; nothing to do"
        );
        report.outcome = Outcome::OtherStage;
        assert!(
            report
                .text()
                .starts_with("job mode: kata-deploy is upgraded wave by wave")
        );
    }

    #[test]
    fn each_mode_upgrades_at_its_own_stage() {
        assert_eq!(Stage::of(DeploymentMode::Daemonset), Stage::BeforeWaves);
        assert_eq!(Stage::of(DeploymentMode::Job), Stage::Wave);
    }

    #[test]
    fn nodes_belong_to_job_mode_waves_only() {
        let nodes = ["w1".to_string()];
        for mode in [DeploymentMode::Daemonset, DeploymentMode::Job] {
            let refused = check_scope(mode, Stage::BeforeWaves, &nodes).unwrap_err();
            assert_eq!(refused.status, ExitStatus::BadInput);
            assert!(check_scope(mode, Stage::BeforeWaves, &[]).is_ok());
            assert!(check_scope(mode, Stage::Wave, &nodes).is_ok());
        }
        // A daemonset-mode wave has nothing to upgrade, with or without nodes.
        assert!(check_scope(DeploymentMode::Daemonset, Stage::Wave, &[]).is_ok());
        let refused = check_scope(DeploymentMode::Job, Stage::Wave, &[]).unwrap_err();
        assert!(refused.message.contains("--nodes or --wave is required"));
    }
}
