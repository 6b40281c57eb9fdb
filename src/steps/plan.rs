//! What an upgrade would do, changing nothing: `klm plan`, and
//! `klm upgrade --dry-run`.

use kube::Client;
use semver::Version;

use crate::drain::{self, DrainScope};
use crate::helm::Helm;
use crate::nodes::selection::Criteria;
use crate::nodes::waves::Policy;
use crate::output::Report;
use crate::release::ReleaseRef;
use crate::schedule::Schedule;
use crate::steps::check_prerequisites::{self, Checked};
use crate::steps::select_nodes::{self, Selection};
use crate::verification::Pods;
use crate::versions::{DeploymentMode, ModeChoice};

/// What an upgrade would do.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The release.
    pub release: String,
    /// The mode.
    pub mode: DeploymentMode,
    /// From which chart version.
    pub current_version: String,
    /// To which.
    pub target_version: String,
    /// Whether a default verification pod was validated.
    pub verification_pod: bool,
    /// The pools verified with their own pod (the others: the default pod).
    pub pool_pods: Vec<String>,
    /// The nodes and waves.
    pub selection: Selection,
    /// With a drain asked for: its scope, and per wave what draining its
    /// nodes would evict and which budgets would block it now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainPlan>,
    /// With recycling asked for: how many old sandboxes each completed node
    /// has evicted at most.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recycle_old_sandboxes: Option<usize>,
    /// Things a person should know.
    pub warnings: Vec<String>,
}

/// What the run's drains would do, wave by wave.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainPlan {
    /// Which pods go.
    pub scope: DrainScope,
    /// Per wave (from 1), its nodes' previews.
    pub waves: Vec<(usize, Vec<drain::Preview>)>,
}

impl DrainPlan {
    fn text(&self) -> Vec<String> {
        let mut lines = vec![format!("drain ({} pods):", self.scope.as_str())];
        for (wave, previews) in &self.waves {
            for preview in previews {
                let evicts = if preview.evicts.is_empty() {
                    "nothing".to_string()
                } else {
                    preview.evicts.join(", ")
                };
                let mut line = format!("  wave {wave} {}: would evict {evicts}", preview.node);
                if !preview.blocked_by.is_empty() {
                    line.push_str(&format!(
                        "; blocked now by PodDisruptionBudget {}",
                        preview.blocked_by.join(", ")
                    ));
                }
                lines.push(line);
            }
        }
        lines
    }
}

impl Report for Plan {
    fn text(&self) -> String {
        let mut lines = vec![format!(
            "Upgrade {} from {} to {} in {} mode.",
            self.release, self.current_version, self.target_version, self.mode
        )];
        lines.push(match self.mode {
            DeploymentMode::Daemonset => {
                "1. helm upgrade once with updateStrategy OnDelete (nothing restarts)".into()
            }
            DeploymentMode::Job => {
                "1. per wave: helm upgrade scoped to the wave's nodes (job.nodes)".into()
            }
        });
        lines.push(
            "2. per wave: cordon, restart kata-deploy, verify; complete, or roll back and stop"
                .into(),
        );
        lines.push(String::new());
        lines.push(self.selection.text());
        if !self.pool_pods.is_empty() {
            let own: Vec<String> = self
                .pool_pods
                .iter()
                .map(|p| format!("pool {p} with its own pod"))
                .collect();
            lines.push(format!(
                "verified: {}; every other node with the default pod",
                own.join(", ")
            ));
        }
        if let Some(drain) = &self.drain {
            lines.extend(drain.text());
        }
        if let Some(n) = self.recycle_old_sandboxes {
            lines.push(format!(
                "old sandboxes: once a node is completed, up to {n} of its Kata pods that started before its verification are evicted (oldest first, honouring PodDisruptionBudgets)"
            ));
        }
        if !self.verification_pod {
            lines.push("warning: no verification pod given; the workflow requires one".into());
        }
        lines.extend(self.warnings.iter().map(|w| format!("warning: {w}")));
        lines.push("Nothing was changed.".into());
        lines.join("\n")
    }
}

/// What to plan.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The release.
    pub release: &'a ReleaseRef,
    /// The version to upgrade to.
    pub target: &'a Version,
    /// The mode asked for.
    pub mode: ModeChoice,
    /// Which nodes.
    pub criteria: &'a Criteria,
    /// Order nodes by this label first.
    pub pool_label: Option<&'a str>,
    /// How the waves are cut.
    pub policy: &'a Policy,
    /// When the waves may start.
    pub schedule: &'a Schedule,
    /// Skip nodes already completed at this version.
    pub skip_completed: Option<&'a Version>,
    /// The verification pods to validate.
    pub pods: &'a Pods,
    /// How the run would upgrade the release (rendered by the preflight).
    pub rehearsal: check_prerequisites::Rehearsal<'a>,
    /// A target older than the release's version was asked for explicitly.
    pub allow_downgrade: bool,
    /// The run's drain, if it drains: which pods go.
    pub drain: Option<DrainScope>,
    /// The run's recycling of old sandboxes, if any.
    pub recycle: Option<crate::sandboxes::Recycle>,
    /// How to reach the Prometheus of a metric gate.
    pub prometheus: &'a crate::prometheus::Credentials,
}

/// Runs every read-only check of a run's start and plans its waves.
pub async fn plan(client: &Client, helm: &Helm, request: &Request<'_>) -> anyhow::Result<Plan> {
    request.pods.check_pool_label(request.pool_label)?;
    let Checked {
        release,
        mode,
        warnings,
        ..
    } = check_prerequisites::check(
        client,
        helm,
        request.release,
        request.target,
        request.mode,
        request.pods,
        &request.rehearsal,
    )
    .await?;
    check_prerequisites::check_downgrade(
        &release.chart_version,
        request.target,
        request.allow_downgrade,
    )?;
    let planning = select_nodes::PlanRequest {
        release: request.release,
        criteria: request.criteria,
        pool_label: request.pool_label,
        policy: request.policy,
        schedule: request.schedule,
        skip_completed: request.skip_completed,
        max_waves: 0,
        // Recorded nowhere: a plan changes nothing.
        run_id: None,
        prometheus: request.prometheus,
    };
    let selection = select_nodes::plan_run(client, helm, &planning).await?;
    let drain = match request.drain {
        None => None,
        Some(scope) => {
            let resolved = drain::Scope::resolve(scope, helm, request.release).await?;
            let mut waves = Vec::new();
            for wave in &selection.waves {
                waves.push((
                    wave.index,
                    drain::preview(client, &wave.nodes, &resolved).await?,
                ));
            }
            Some(DrainPlan { scope, waves })
        }
    };
    Ok(Plan {
        drain,
        recycle_old_sandboxes: request.recycle.map(|r| r.per_node),
        release: request.release.name.clone(),
        mode,
        current_version: release.chart_version,
        target_version: request.target.to_string(),
        verification_pod: request.pods.default_pod().is_some(),
        pool_pods: request.pods.pools().map(String::from).collect(),
        selection,
        warnings,
    })
}
