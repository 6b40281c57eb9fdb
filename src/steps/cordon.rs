//! Holding a wave's nodes for a run: what `klm cordon` does, the first step
//! of every wave. It refuses a run that has failed (so no wave starts after
//! a failed one), records what each node runs before the run touches it
//! (its rollback target), and cordons it.

use futures::future::try_join_all;
use kube::{Client, ResourceExt};

use crate::error::UserError;

use crate::events::{NodeEvent, NodeEvents};
use crate::helm::Helm;
use crate::nodes::hold::{self, Held};
use crate::nodes::selection::Criteria;
use crate::output::Report;
use crate::release::ReleaseRef;
use crate::run::Run;
use crate::run_record::NodeProgress;

/// Which nodes to hold, for which run.
#[derive(Debug, Clone)]
pub struct Request {
    /// The nodes.
    pub nodes: crate::run::Targets,
    /// The release.
    pub release: ReleaseRef,
    /// The run (None: the release's latest run).
    pub run_id: Option<String>,
    /// The selection taint to record (complete removes it, rollback restores it).
    pub selection: Criteria,
}

/// What cordon did.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cordoned {
    /// The run holding the nodes.
    pub run_id: String,
    /// Per node.
    pub nodes: Vec<Held>,
}

impl Report for Cordoned {
    fn text(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let before = if n.was_unschedulable {
                    " (it was already unschedulable and will stay so)"
                } else {
                    ""
                };
                let again = if n.newly_held {
                    ""
                } else {
                    " (already held by this run)"
                };
                format!("cordoned {} for run {}{before}{again}", n.node, self.run_id)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Refuses (a precondition, nothing changed) a wave that would make more of
/// the run's planned nodes unschedulable at once than its budget allows,
/// counting the planned nodes out of service now (NotReady, or cordoned by
/// anyone) outside the wave.
async fn within_budget(
    client: &Client,
    record: &crate::run_record::RunRecord,
    wave: &[String],
    budget: usize,
) -> anyhow::Result<()> {
    let planned: std::collections::BTreeSet<&String> = record.planned_nodes().collect();
    // The slim listing selection uses: names, unschedulable, the Ready condition.
    let out: Vec<String> = crate::nodes::listing::list_for_selection(client, None)
        .await?
        .into_iter()
        .filter(|n| planned.contains(&n.name_any()) && !wave.contains(&n.name_any()))
        .filter(crate::nodes::selection::is_out)
        .map(|n| n.name_any())
        .collect();
    if out.len() + wave.len() <= budget {
        return Ok(());
    }
    Err(UserError::precondition(format!(
        "cordoning {} would make {} of run {}'s nodes unschedulable at once; its budget (--max-unavailable) is {budget}: out of service now: {}",
        wave.join(", "),
        out.len() + wave.len(),
        record.run_id,
        out.join(", ")
    ))
    .hint("bring those nodes back into service, then submit a new run (completed nodes are skipped)")
    .into())
}

/// Holds and cordons the request's nodes for its run (which must be active),
/// recording each node's version before the run; a node the run holds
/// already keeps what its first hold recorded.
pub async fn cordon(client: &Client, helm: &Helm, request: &Request) -> anyhow::Result<Cordoned> {
    let run = Run::active(client, &request.release, request.run_id.as_deref()).await?;
    let names = request.nodes.in_run(&run)?;
    // Every node must exist before any is changed.
    let read = hold::get_all(client, &names).await?;
    let events = NodeEvents::new(client, &run.run_id, run.release_id()).knowing(&read);
    if let Some(budget) = run.plan.max_unavailable {
        within_budget(client, &run, &names, budget).await?;
    }
    // What each node runs before this run touches it (its rollback target),
    // where the before-waves upgrade did not observe it already.
    let unrecorded: Vec<String> = names
        .iter()
        .filter(|n| !run.version_before_known(n))
        .cloned()
        .collect();
    let versions = if unrecorded.is_empty() {
        Default::default()
    } else {
        let release = request.release.load(helm).await?;
        crate::nodes::installed::observe(
            client,
            helm,
            &request.release,
            &release,
            run.mode,
            &unrecorded,
        )
        .await?
    };
    let release_id = run.release_id();
    let target = run.target_version.to_string();
    let held = try_join_all(read.into_iter().map(|node| {
        hold::hold_for_release(
            client,
            node,
            &run.run_id,
            Some(release_id),
            &request.selection,
            &target,
        )
    }))
    .await?;
    run.update(|r| {
        for node in &names {
            r.nodes.entry(node.clone()).or_insert(NodeProgress::Held);
        }
        for (node, version) in &versions {
            r.node_versions
                .entry(node.clone())
                .or_insert_with(|| version.clone());
        }
    })
    .await?;
    events
        .record_each(
            held.iter()
                .filter(|h| h.newly_held)
                .map(|h| (h.node.clone(), NodeEvent::Cordoned)),
        )
        .await;
    Ok(Cordoned {
        run_id: run.run_id.clone(),
        nodes: held,
    })
}
