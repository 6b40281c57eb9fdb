//! `klm pause`, `klm resume` and `klm abort`: a person acting on a run of
//! `klm upgrade` while it runs. Each is recorded in the run record (who,
//! when), which the run watches: a paused run starts no new wave until it is
//! resumed; an aborted one ends as the workflow's exit handler ends a run
//! (what is in flight is rolled back, held nodes released, the run closed).
//! A workflow's run is paused, resumed and stopped with Argo, which klm
//! names.

use kube::Client;

use crate::error::UserError;
use crate::release::ReleaseRef;
use crate::run::Run;
use crate::run_record::{self, Intervention};

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
    let run = Run::recorded(client, release, run_id).await?;
    if run.state.is_closed() {
        return Err(UserError::precondition(format!(
            "run {} is {}: there is nothing to {}",
            run.run_id,
            format!("{:?}", run.state).to_lowercase(),
            action.word()
        ))
        .hint(format!("see `klm status --run-id {}`", run.run_id))
        .into());
    }
    if run.driver.as_deref() != Some(DRIVER) {
        return Err(UserError::precondition(format!(
            "run {} is driven by its workflow, which Argo pauses, resumes and stops",
            run.run_id
        ))
        .hint(format!(
            "run: {} (stopping runs the exit handler, which ends the run as klm abort would)",
            action.argo(&run.run_id)
        ))
        .into());
    }
    let done_already = match action {
        Action::Pause => run.paused.as_ref().map(|p| format!("already paused {p}")),
        Action::Resume if run.paused.is_none() => Some("not paused".to_string()),
        Action::Resume => None,
        Action::Abort => run.aborted.as_ref().map(|a| format!("already aborted {a}")),
    };
    if let Some(already) = done_already {
        return Ok(format!("run {}: {already}", run.run_id));
    }
    let intervention = Intervention {
        by: by.to_string(),
        at: run_record::now(),
    };
    run.update(|r| match action {
        Action::Pause => r.paused = Some(intervention.clone()),
        Action::Resume => r.paused = None,
        Action::Abort => r.aborted = Some(intervention.clone()),
    })
    .await?;
    let then = match action {
        Action::Pause => format!(
            ": no new wave starts until `klm resume --run-id {}`",
            run.run_id
        ),
        Action::Resume => String::new(),
        Action::Abort => ": it ends as the exit handler ends a run (what is in flight is rolled back, held nodes released)".into(),
    };
    Ok(format!(
        "run {} {} {intervention}{then}",
        run.run_id,
        action.verb()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_and_when_and_what_argo_does_instead() {
        let who = Intervention {
            by: "ops".into(),
            at: "2026-12-07T10:00:00Z".into(),
        };
        assert_eq!(who.to_string(), "by ops at 2026-12-07T10:00:00Z");
        assert_eq!(
            Action::Pause.argo("upgrade-x"),
            "argo suspend upgrade-x -n <the workflow's namespace>"
        );
    }
}
