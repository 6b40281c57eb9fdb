//! Upgrading the kata-deploy release for a run: what `klm helm-upgrade`
//! does. The release moves to the run's target with the values the run
//! sets for its own mechanics ([`crate::run_values`]) on top of the user's.

use std::time::Duration;

use kube::Client;
use semver::Version;

use crate::error::UserError;
use crate::helm::Helm;
use crate::output::Report;
use crate::release::{ReleaseRef, Upgrade, Values};
use crate::run_record::{NodeProgress, Records};
use crate::run_values;
use crate::step;
use crate::versions::{self, DeploymentMode, ModeChoice};

/// What to upgrade to, and where.
#[derive(Debug, Clone)]
pub struct Request {
    /// The release.
    pub release: ReleaseRef,
    /// The run (None: the release's latest run).
    pub run_id: Option<String>,
    /// The chart version to upgrade to: it must be the run's target.
    pub target: Version,
    /// The deployment mode asked for: it must be the run's.
    pub mode: ModeChoice,
    /// job mode: the wave's nodes.
    pub nodes: Option<Vec<String>>,
    /// job mode, instead of `nodes`: wave K (from 1) of the run's recorded plan.
    pub wave: Option<u32>,
    /// The user's extra chart values, as helm's `--set` items.
    pub set: Vec<String>,
    /// The kata-deploy chart reference.
    pub chart: String,
    /// How long the helm upgrade may take.
    pub helm_timeout: Duration,
}

/// What helm-upgrade did.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Upgraded {
    /// The release.
    pub release: String,
    /// The mode.
    pub mode: DeploymentMode,
    /// The chart version before this step.
    pub from_version: String,
    /// The chart version now.
    pub to_version: String,
    /// job mode: the wave's nodes.
    pub nodes: Vec<String>,
    /// True when the release was already upgraded by this run (a retried step).
    pub already_done: bool,
    /// The values this step set for the run's mechanics.
    pub mechanics: Vec<String>,
    /// True when the run's plan (from select-nodes) has no node: nothing changed.
    pub nothing_selected: bool,
}

impl Report for Upgraded {
    fn text(&self) -> String {
        if self.nothing_selected {
            return format!(
                "the run selected no node: {} stays at {}; nothing to do",
                self.release, self.from_version
            );
        }
        if self.already_done {
            return format!(
                "{} is already at {} for this run; nothing to do",
                self.release, self.to_version
            );
        }
        let scope = match self.mode {
            DeploymentMode::Daemonset => {
                "no pod restarts until each node's turn (updateStrategy OnDelete)".to_string()
            }
            DeploymentMode::Job => format!("installed on {}", self.nodes.join(", ")),
        };
        format!(
            "upgraded {} from {} to {} in {} mode: {scope}",
            self.release, self.from_version, self.to_version, self.mode
        )
    }
}

/// Upgrades the release to the request's target for its run: in daemonset
/// mode once, before the waves, with `updateStrategy.type=OnDelete`
/// (nothing restarts; nothing at all when the run's plan has no node); in
/// job mode for one wave, with the installer scoped to the wave's nodes.
/// Records the values it set for the run's mechanics and the nodes it
/// upgraded; a step the run already did is reported done, changing nothing.
pub async fn upgrade(client: &Client, helm: &Helm, request: &Request) -> anyhow::Result<Upgraded> {
    let target = &request.target;
    let records = Records::new(client, &request.release.namespace);
    let record =
        step::active_run(&records, &request.release.name, request.run_id.as_deref()).await?;
    if versions::parse(&record.target_version)? != *target {
        return Err(UserError::bad_input(format!(
            "run {} upgrades to {}, not {target}",
            record.run_id, record.target_version
        ))
        .hint("pass the run's --target-version, or start a new run with check-prerequisites")
        .into());
    }
    let mode = step::mode_of_run(request.mode, &record)?;
    let reference = &request.release;
    let release = reference.load(helm).await?;
    release.ensure_deployed()?;
    let wave: Vec<String> = match request.wave {
        Some(index) => step::wave_of(&record, index)?.to_vec(),
        None => request.nodes.clone().unwrap_or_default(),
    };
    let mut report = Upgraded {
        release: reference.name.clone(),
        mode,
        from_version: release.chart_version.clone(),
        to_version: target.to_string(),
        nodes: wave.clone(),
        already_done: false,
        mechanics: Vec::new(),
        nothing_selected: false,
    };
    let mut upgrade = Upgrade {
        chart: request.chart.clone(),
        version: target.to_string(),
        values: Values::ResetThenReuse,
        set: request.set.clone(),
        set_json: Vec::new(),
        timeout: request.helm_timeout,
    };
    let mechanics = match mode {
        DeploymentMode::Daemonset => {
            if !wave.is_empty() {
                return Err(UserError::bad_input("--nodes scopes job-mode waves; in daemonset mode helm-upgrade runs once, before the waves")
                    .hint("drop --nodes; restart-kata-pod then moves one node at a time")
                    .into());
            }
            // A run whose plan has no node changes nothing: an upgraded
            // template would reach any node whose kata-deploy pod restarts,
            // unverified.
            if record
                .waves
                .as_ref()
                .is_some_and(|waves| waves.iter().all(Vec::is_empty))
            {
                report.nothing_selected = true;
                return Ok(report);
            }
            if release.chart_version == target.to_string()
                && run_values::is_on_delete(&release.user_values)
                && release.revision > record.before.revision
            {
                report.already_done = true;
                return Ok(report);
            }
            run_values::daemonset()
        }
        DeploymentMode::Job => {
            if wave.is_empty() {
                return Err(UserError::bad_input(
                    "job mode upgrades one wave at a time: --nodes is required",
                )
                .hint("pass the wave's nodes, e.g. --nodes worker-1,worker-2")
                .into());
            }
            versions::refuse_pruning_job_mode(&versions::parse(&release.chart_version)?, target)?;
            let coalesced = reference.coalesced_values(helm).await?;
            let done = wave.iter().all(|n| {
                matches!(
                    record.nodes.get(n),
                    Some(NodeProgress::Upgraded | NodeProgress::Verified | NodeProgress::Completed)
                )
            });
            if done
                && release.chart_version == target.to_string()
                && run_values::is_scoped_to(&coalesced, &wave)
            {
                report.already_done = true;
                return Ok(report);
            }
            records
                .update(&record.release, &record.run_id, |r| {
                    r.wave_started_at = Some(crate::run_record::now())
                })
                .await?;
            run_values::job_wave(&wave, &coalesced)
        }
    };
    let (set, set_json) = run_values::as_set_flags(&mechanics);
    upgrade.set.extend(set);
    upgrade.set_json.extend(set_json);
    release.upgrade(helm, &upgrade).await?;
    report.mechanics = mechanics.iter().map(|(k, _)| k.clone()).collect();
    records
        .update(&record.release, &record.run_id, |r| {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_says_what_moved() {
        let mut report = Upgraded {
            release: "kata-deploy".into(),
            mode: DeploymentMode::Job,
            from_version: "3.27.0".into(),
            to_version: "3.28.0".into(),
            nodes: vec!["w1".into(), "w2".into()],
            already_done: false,
            mechanics: Vec::new(),
            nothing_selected: false,
        };
        assert_eq!(
            report.text(),
            "upgraded kata-deploy from 3.27.0 to 3.28.0 in job mode: installed on w1, w2"
        );
        report.already_done = true;
        assert_eq!(
            report.text(),
            "kata-deploy is already at 3.28.0 for this run; nothing to do"
        );
        report.nothing_selected = true;
        assert_eq!(
            report.text(),
            "the run selected no node: kata-deploy stays at 3.27.0; nothing to do"
        );
    }
}
