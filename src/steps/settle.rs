//! Ending one wave: what `klm settle` does (the workflow's last step of every
//! wave) and what `klm upgrade` does after each wave. A wave whose upgrade
//! succeeded is completed ([`crate::steps::complete`]); any other wave has the nodes
//! the run touched rolled back ([`crate::steps::rollback`]) and fails, so no later
//! wave starts. Under a failure budget (`--max-failed-nodes`) a failed wave whose
//! failures still fit it fails only its failed nodes: the verified ones are
//! completed, the others rolled back, the release made ready for the next wave
//! again, and the run goes on.

use std::collections::BTreeSet;

use kube::Client;

use crate::error::UserError;
use crate::events::{NodeEvent, NodeEvents};
use crate::helm::Helm;
use crate::nodes;
use crate::release::ReleaseRef;
use crate::run::Run;
use crate::run_record::{NodeProgress, RunRecord};
use crate::steps::complete::{self, Completed};
use crate::steps::helm_upgrade::{self, Stage};
use crate::steps::rollback::{self, RolledBack};
use crate::versions::ModeChoice;

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
    /// It failed within the run's failure budget: its verified nodes were
    /// completed, its failed ones rolled back (those the run touched); the
    /// run goes on.
    WithinBudget {
        /// What the wave's failure was.
        failure: String,
        /// The wave's failed nodes.
        failed: Vec<String>,
        /// The completion of its verified nodes, if any.
        completed: Option<Completed>,
        /// The rollback of its failed nodes the run touched, if any.
        rolled_back: Option<RolledBack>,
        /// The run's failed nodes so far, these included.
        used: usize,
        /// How many the budget allows.
        allowed: usize,
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
            Settled::WithinBudget {
                completed,
                rolled_back,
                ..
            } => Counts {
                completed: completed.as_ref().map_or(0, |c| c.nodes.len()),
                rolled_back: rolled_back.as_ref().map_or(0, |r| r.nodes.len()),
                failed: rolled_back.as_ref().map_or(0, |r| r.failed.len()),
            },
        }
    }

    /// The nodes the wave completed.
    pub fn completed_nodes(&self) -> Vec<String> {
        let completed = match self {
            Settled::Completed(report) => Some(report),
            Settled::WithinBudget { completed, .. } => completed.as_ref(),
            _ => None,
        };
        completed
            .map(|c| c.nodes.iter().map(|r| r.node.clone()).collect())
            .unwrap_or_default()
    }

    /// The run, when the wave completed nodes (None otherwise).
    pub fn run_id(&self) -> Option<&str> {
        match self {
            Settled::Completed(report) => Some(&report.run_id),
            Settled::WithinBudget {
                completed: Some(report),
                ..
            } => Some(&report.run_id),
            _ => None,
        }
    }

    /// The wave's failure, in a sentence, when it failed within the run's
    /// failure budget (None otherwise).
    pub fn within_budget(&self) -> Option<String> {
        let Settled::WithinBudget {
            failure,
            failed,
            used,
            allowed,
            ..
        } = self
        else {
            return None;
        };
        Some(format!(
            "{failure}; {} rolled back, {used} of the {allowed} failed node(s) the run allows: the run goes on",
            failed.join(", ")
        ))
    }

    /// Ok when the wave completed; the wave's failure (or its rollback's) otherwise.
    pub fn outcome(&self) -> Result<(), UserError> {
        match self {
            Settled::Completed(_) | Settled::WithinBudget { .. } => Ok(()),
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
    let run = Run::recorded(client, &request.release, request.run_id.as_deref()).await?;
    let nodes = run.wave(request.wave)?.to_vec();
    let Some(ended) = &request.failure else {
        let report = complete_nodes(client, helm, request, &run, nodes).await?;
        return Ok(Settled::Completed(report));
    };
    let failure = format!(
        "wave {} ({}) {ended} (run {})",
        request.wave,
        nodes.join(","),
        run.run_id
    );
    if let Some(budget) = Budget::of(&run, &nodes) {
        return settle_within_budget(client, helm, request, &run, budget, failure).await;
    }
    let touched: Vec<String> = nodes
        .iter()
        .filter(|n| run.nodes.contains_key(*n))
        .cloned()
        .collect();
    if touched.is_empty() {
        return Ok(Settled::Untouched {
            failure,
            run_id: run.run_id.clone(),
        });
    }
    let report = roll_back_nodes(client, helm, request, &run, &touched, &failure, true).await?;
    Ok(Settled::RolledBack {
        report,
        failure,
        touched,
    })
}

/// How a failed wave's nodes divide under the run's failure budget.
#[derive(Debug, PartialEq, Eq)]
struct Budget {
    /// The wave's nodes verified at the target: completed.
    verified: Vec<String>,
    /// The wave's other nodes: failed.
    failed: Vec<String>,
    /// The failed nodes the run touched and has not rolled back yet.
    to_roll_back: Vec<String>,
    /// The run's failed nodes with these.
    used: usize,
    /// How many the budget allows.
    allowed: usize,
}

impl Budget {
    /// The division of the failed `wave`, when the run has a failure budget
    /// that its failures, with the run's earlier ones, still fit (None: the
    /// wave fails the run). A retried settle counts each node once.
    fn of(record: &RunRecord, wave: &[String]) -> Option<Budget> {
        let allowed = record.plan.max_failed_nodes?;
        let (verified, failed): (Vec<String>, Vec<String>) = wave.iter().cloned().partition(|n| {
            matches!(
                record.nodes.get(n),
                Some(NodeProgress::Verified | NodeProgress::Completed)
            )
        });
        let used = record
            .failed_nodes
            .keys()
            .chain(&failed)
            .collect::<BTreeSet<_>>()
            .len();
        if used > allowed {
            return None;
        }
        let to_roll_back = failed
            .iter()
            .filter(|n| {
                matches!(
                    record.nodes.get(*n),
                    Some(NodeProgress::Held | NodeProgress::Upgraded)
                )
            })
            .cloned()
            .collect();
        Some(Budget {
            verified,
            failed,
            to_roll_back,
            used,
            allowed,
        })
    }
}

/// Settles a failed wave within the run's failure budget: records its
/// failed nodes (first, so that a retry counts them), completes its
/// verified ones, rolls back the failed ones the run touched without
/// failing the run, then makes the release ready for the next wave again
/// (the rollback returned it to the version before the run).
async fn settle_within_budget(
    client: &Client,
    helm: &Helm,
    request: &Request,
    run: &Run,
    budget: Budget,
    failure: String,
) -> anyhow::Result<Settled> {
    run.update(|r| {
        for node in &budget.failed {
            r.failed_nodes.insert(node.clone(), failure.clone());
        }
    })
    .await?;
    NodeEvents::new(client, &run.run_id, run.release_id())
        .record_each(budget.failed.iter().map(|n| {
            let event = NodeEvent::FailedWithinBudget {
                reason: failure.clone(),
                failed: budget.used,
                allowed: budget.allowed,
            };
            (n.clone(), event)
        }))
        .await;
    let completed = match budget.verified.is_empty() {
        true => None,
        false => Some(complete_nodes(client, helm, request, run, budget.verified.clone()).await?),
    };
    let rolled_back = match budget.to_roll_back.is_empty() {
        true => None,
        false => Some(
            roll_back_nodes(
                client,
                helm,
                request,
                run,
                &budget.to_roll_back,
                &failure,
                false,
            )
            .await?,
        ),
    };
    // The rollback moved the release back to the version before the run;
    // the next wave (and the run's finish) expect it at the target, as
    // before the waves (a no-op where the mode upgrades wave by wave).
    helm_upgrade::upgrade(
        client,
        helm,
        &helm_upgrade::Request {
            release: request.release.clone(),
            run_id: Some(run.run_id.clone()),
            target: None,
            mode: ModeChoice::Auto,
            stage: Some(Stage::BeforeWaves),
            nodes: None,
            wave: None,
            set: Vec::new(),
            chart: request.rollback.chart.clone(),
            helm_timeout: request.rollback.helm_timeout,
        },
    )
    .await?;
    Ok(Settled::WithinBudget {
        failure,
        failed: budget.failed,
        completed,
        rolled_back,
        used: budget.used,
        allowed: budget.allowed,
    })
}

/// Completes `nodes` of the request's run at its target (verified nodes
/// only: complete refuses the others).
async fn complete_nodes(
    client: &Client,
    helm: &Helm,
    request: &Request,
    run: &Run,
    nodes: Vec<String>,
) -> anyhow::Result<Completed> {
    let completing = complete::Request {
        release: request.release.clone(),
        run_id: Some(run.run_id.clone()),
        target: None,
        nodes: Some(nodes),
        finish_run: false,
        chart: request.rollback.chart.clone(),
        helm_timeout: request.rollback.helm_timeout,
    };
    complete::complete_in(client, helm, run, &completing).await
}

/// Rolls `nodes` back for the wave's `failure`; `fails_run` says whether
/// the run fails with them (not within the failure budget).
async fn roll_back_nodes(
    client: &Client,
    helm: &Helm,
    request: &Request,
    record: &RunRecord,
    nodes: &[String],
    failure: &str,
    fails_run: bool,
) -> anyhow::Result<RolledBack> {
    let rolling_back = rollback::Request {
        nodes: nodes::unique(nodes.to_vec()).into(),
        reason: Some(failure.to_string()),
        release: request.release.clone(),
        run_id: Some(record.run_id.clone()),
        settings: request.rollback.clone(),
        fails_run,
    };
    rollback::roll_back(client, helm, &rolling_back).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wave_of_three(progress: [Option<NodeProgress>; 3]) -> (RunRecord, Vec<String>) {
        let mut record = crate::run_record::example();
        let wave: Vec<String> = ["kata-1", "kata-2", "kata-3"].map(String::from).to_vec();
        for (node, progress) in wave.iter().zip(progress) {
            if let Some(progress) = progress {
                record.nodes.insert(node.clone(), progress);
            }
        }
        (record, wave)
    }

    #[test]
    fn without_a_budget_a_failed_wave_fails_the_run() {
        let (record, wave) = wave_of_three([Some(NodeProgress::Upgraded), None, None]);
        assert_eq!(Budget::of(&record, &wave), None);
    }

    #[test]
    fn verified_nodes_complete_and_the_others_fail_within_the_budget() {
        let (mut record, wave) = wave_of_three([
            Some(NodeProgress::Verified),
            Some(NodeProgress::Upgraded),
            None,
        ]);
        record.plan.max_failed_nodes = Some(2);
        let budget = Budget::of(&record, &wave).unwrap();
        assert_eq!(budget.verified, ["kata-1"]);
        assert_eq!(budget.failed, ["kata-2", "kata-3"]);
        // kata-3 was never touched (its cordon failed): nothing to undo.
        assert_eq!(budget.to_roll_back, ["kata-2"]);
        assert_eq!((budget.used, budget.allowed), (2, 2));
    }

    #[test]
    fn earlier_failures_count_and_one_too_many_fails_the_run() {
        let (mut record, wave) = wave_of_three([
            Some(NodeProgress::Verified),
            Some(NodeProgress::Verified),
            Some(NodeProgress::Upgraded),
        ]);
        record.plan.max_failed_nodes = Some(1);
        record
            .failed_nodes
            .insert("kata-0".into(), "wave 1 failed".into());
        assert_eq!(Budget::of(&record, &wave), None);
        record.plan.max_failed_nodes = Some(2);
        assert_eq!(Budget::of(&record, &wave).unwrap().used, 2);
    }

    #[test]
    fn a_retried_settle_counts_each_node_once_and_rolls_back_nothing_twice() {
        let (mut record, wave) = wave_of_three([
            Some(NodeProgress::Completed),
            Some(NodeProgress::RolledBack),
            Some(NodeProgress::Completed),
        ]);
        record.plan.max_failed_nodes = Some(1);
        record
            .failed_nodes
            .insert("kata-2".into(), "wave 1 failed".into());
        let budget = Budget::of(&record, &wave).unwrap();
        assert_eq!(budget.used, 1);
        assert_eq!(budget.failed, ["kata-2"]);
        assert!(budget.to_roll_back.is_empty());
    }
}
