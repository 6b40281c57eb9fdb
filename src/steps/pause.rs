//! `klm pause`, `klm resume` and `klm abort`: a person acting on a run of
//! `klm upgrade` while it runs. Each is recorded in the run record (who,
//! when), which the run watches: a paused run starts no new wave until it is
//! resumed; an aborted one ends as the workflow's exit handler ends a run
//! (what is in flight is rolled back, held nodes released, the run closed).
//! A workflow's run is paused, resumed and stopped with Argo, which klm
//! names.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;

use crate::error::UserError;
use crate::release::ReleaseRef;
use crate::run_record::{self, Intervention, Records, RunRecord};
use crate::wait::{self, Check};

/// The driver `klm upgrade` records: the runs these commands act on.
pub const DRIVER: &str = "klm upgrade";

/// What a person does to a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// No new wave starts until it is resumed.
    Pause,
    /// A paused run goes on.
    Resume,
    /// The run ends as the exit handler ends it.
    Abort,
}

impl Action {
    fn word(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Abort => "abort",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Action::Pause => "paused",
            Action::Resume => "resumed",
            Action::Abort => "aborted",
        }
    }

    /// What Argo does for a workflow's run.
    fn argo(self, run_id: &str) -> String {
        let verb = match self {
            Action::Pause => "suspend",
            Action::Resume => "resume",
            Action::Abort => "stop",
        };
        format!("argo {verb} {run_id} -n <the workflow's namespace>")
    }
}

/// Records `action` on the run (the release's latest, or `run_id`) by `by`,
/// and says what it did. Refused (a precondition, nothing changed) for a
/// closed run or a workflow's; done already, it says so and changes nothing.
pub async fn act(
    client: &Client,
    release: &ReleaseRef,
    run_id: Option<&str>,
    action: Action,
    by: &str,
) -> anyhow::Result<String> {
    let records = Records::new(client, &release.namespace);
    let record = records.resolve(&release.name, run_id).await?;
    if record.state.is_closed() {
        return Err(UserError::precondition(format!(
            "run {} is {}: there is nothing to {}",
            record.run_id,
            format!("{:?}", record.state).to_lowercase(),
            action.word()
        ))
        .hint(format!("see `klm status --run-id {}`", record.run_id))
        .into());
    }
    if record.driver.as_deref() != Some(DRIVER) {
        return Err(UserError::precondition(format!(
            "run {} is driven by its workflow, which Argo pauses, resumes and stops",
            record.run_id
        ))
        .hint(format!(
            "run: {} (stopping runs the exit handler, which ends the run as klm abort would)",
            action.argo(&record.run_id)
        ))
        .into());
    }
    let done_already = match action {
        Action::Pause => record
            .paused
            .as_ref()
            .map(|p| format!("already paused {p}")),
        Action::Resume if record.paused.is_none() => Some("not paused".to_string()),
        Action::Resume => None,
        Action::Abort => record
            .aborted
            .as_ref()
            .map(|a| format!("already aborted {a}")),
    };
    if let Some(already) = done_already {
        return Ok(format!("run {}: {already}", record.run_id));
    }
    let intervention = Intervention {
        by: by.to_string(),
        at: run_record::now(),
    };
    records
        .update(&record.release, &record.run_id, |r| match action {
            Action::Pause => r.paused = Some(intervention.clone()),
            Action::Resume => r.paused = None,
            Action::Abort => r.aborted = Some(intervention.clone()),
        })
        .await?;
    let then = match action {
        Action::Pause => format!(
            ": no new wave starts until `klm resume --run-id {}`",
            record.run_id
        ),
        Action::Resume => String::new(),
        Action::Abort => ": it ends as the exit handler ends a run (what is in flight is rolled back, held nodes released)".into(),
    };
    Ok(format!(
        "run {} {} {intervention}{then}",
        record.run_id,
        action.verb()
    ))
}

/// Why a run must not go on, as its record says: aborted, or paused.
pub fn stopped_by(record: &RunRecord) -> Option<(Action, &Intervention)> {
    if let Some(aborted) = &record.aborted {
        return Some((Action::Abort, aborted));
    }
    record.paused.as_ref().map(|p| (Action::Pause, p))
}

/// Waits, by watching the run record, until `check` says done; a person
/// may take days.
pub async fn watch_record<T: Send + 'static>(
    client: &Client,
    release: &ReleaseRef,
    run_id: &str,
    what: String,
    check: impl Fn(&RunRecord) -> Option<T> + Send + 'static,
) -> anyhow::Result<T> {
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), &release.namespace);
    let name = run_record::name_for(&release.name);
    let run_id = run_id.to_string();
    let patience = Duration::from_secs(365 * 24 * 3600);
    Ok(
        wait::watch_until(api, wait::by_name(&name), patience, what, move |found| {
            let record = found
                .first()
                .and_then(|cm| cm.data.as_ref()?.get(run_record::DATA_KEY).cloned())
                .and_then(|raw| serde_json::from_str::<RunRecord>(&raw).ok());
            match record {
                Some(r) if r.run_id != run_id => {
                    Check::Failed(format!("run {} replaced run {run_id}", r.run_id))
                }
                Some(r) => check(&r).map_or(Check::Pending, Check::Done),
                None => Check::Pending,
            }
        })
        .await?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_abort_outranks_a_pause() {
        let mut record = run_record::example();
        assert!(stopped_by(&record).is_none());
        let who = Intervention {
            by: "ops".into(),
            at: "2026-12-07T10:00:00Z".into(),
        };
        record.paused = Some(who.clone());
        assert_eq!(stopped_by(&record).map(|(a, _)| a), Some(Action::Pause));
        record.aborted = Some(who.clone());
        assert_eq!(stopped_by(&record).map(|(a, _)| a), Some(Action::Abort));
        assert_eq!(who.to_string(), "by ops at 2026-12-07T10:00:00Z");
        assert_eq!(
            Action::Pause.argo("upgrade-x"),
            "argo suspend upgrade-x -n <the workflow's namespace>"
        );
    }
}
