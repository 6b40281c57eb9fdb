//! Ending one wave: what `klm settle` does (the workflow's last step of every
//! wave) and what `klm upgrade` does after each wave. A wave whose upgrade
//! succeeded is completed ([`crate::steps::complete`]); any other wave has the nodes
//! the run touched rolled back ([`crate::steps::rollback`]) and fails, so no later
//! wave starts.

use kube::Client;

use crate::error::UserError;
use crate::helm::Helm;
use crate::nodes;
use crate::release::ReleaseRef;
use crate::run_record::Records;
use crate::run_rules;
use crate::steps::complete::{self, Completed};
use crate::steps::rollback::{self, RolledBack};

/// Which wave of which run ended, and how.
#[derive(Debug, Clone)]
pub struct Request {
    /// The release.
    pub release: ReleaseRef,
    /// The run (None: the release's latest).
    pub run_id: Option<String>,
    /// The wave (from 1) of the run's recorded plan.
    pub wave: u32,
    /// How the wave's upgrade ended: None when it succeeded, else what ended it
    /// (Argo's step status, or klm upgrade's failed step).
    pub failure: Option<String>,
    /// How the wave's nodes are rolled back; its chart and helm timeout also
    /// serve their completion.
    pub rollback: rollback::Settings,
}

/// How a wave was settled.
#[derive(Debug)]
pub enum Settled {
    /// Its nodes are completed at the run's target.
    Completed(Completed),
    /// It failed before it changed any node: nothing was rolled back.
    Untouched {
        /// What the wave's failure was.
        failure: String,
        /// The run.
        run_id: String,
    },
    /// It failed; the nodes the run touched were rolled back.
    RolledBack {
        /// The rollback.
        report: RolledBack,
        /// What the wave's failure was.
        failure: String,
        /// The nodes rolled back.
        touched: Vec<String>,
    },
}

/// How a settled wave ended, in nodes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Nodes completed at the target.
    pub completed: usize,
    /// Nodes rolled back.
    pub rolled_back: usize,
    /// Nodes whose rollback failed (left cordoned).
    pub failed: usize,
}

impl Settled {
    /// The wave's nodes by how they ended.
    pub fn counts(&self) -> Counts {
        match self {
            Settled::Completed(report) => Counts {
                completed: report.nodes.len(),
                ..Counts::default()
            },
            Settled::Untouched { .. } => Counts::default(),
            Settled::RolledBack { report, .. } => Counts {
                completed: 0,
                rolled_back: report.nodes.len(),
                failed: report.failed.len(),
            },
        }
    }

    /// Ok when the wave completed; the wave's failure (or its rollback's) otherwise.
    pub fn outcome(&self) -> Result<(), UserError> {
        match self {
            Settled::Completed(_) => Ok(()),
            Settled::Untouched { failure, run_id } => Err(UserError::failed(format!(
                "{failure}; it changed no node, so nothing was rolled back"
            ))
            .hint(format!(
                "see the wave's first failed step and `klm status --run-id {run_id}`"
            ))),
            Settled::RolledBack {
                report,
                failure,
                touched,
            } => {
                report.outcome()?;
                Err(UserError::failed(format!(
                    "{failure}; rolled back {}: no further wave starts",
                    touched.join(", ")
                ))
                .hint(format!(
                    "fix the cause (see the failed step's log), then start a new run: nodes completed by run {} are skipped",
                    report.run_id
                )))
            }
        }
    }
}

/// Settles the request's wave: completes its nodes, or rolls back those the
/// run touched (a wave refused at its first step changed nothing).
pub async fn settle(client: &Client, helm: &Helm, request: &Request) -> anyhow::Result<Settled> {
    let records = Records::new(client, &request.release.namespace);
    let record = records
        .resolve(&request.release.name, request.run_id.as_deref())
        .await?;
    let nodes = run_rules::wave_of(&record, request.wave)?.to_vec();
    let Some(ended) = &request.failure else {
        let report = complete::complete(
            client,
            helm,
            &complete::Request {
                release: request.release.clone(),
                run_id: Some(record.run_id.clone()),
                target: None,
                nodes: Some(nodes),
                finish_run: false,
                chart: request.rollback.chart.clone(),
                helm_timeout: request.rollback.helm_timeout,
            },
        )
        .await?;
        return Ok(Settled::Completed(report));
    };
    let touched: Vec<String> = nodes
        .iter()
        .filter(|n| record.nodes.contains_key(*n))
        .cloned()
        .collect();
    let failure = format!(
        "wave {} ({}) {ended} (run {})",
        request.wave,
        nodes.join(","),
        record.run_id
    );
    if touched.is_empty() {
        return Ok(Settled::Untouched {
            failure,
            run_id: record.run_id,
        });
    }
    let report = rollback::roll_back(
        client,
        helm,
        &rollback::Request {
            nodes: nodes::unique(touched.clone()),
            reason: Some(failure.clone()),
            release: request.release.clone(),
            run_id: Some(record.run_id.clone()),
            settings: request.rollback.clone(),
        },
    )
    .await?;
    Ok(Settled::RolledBack {
        report,
        failure,
        touched,
    })
}
