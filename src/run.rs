//! A step's run: [`Run`], the run record as the step found it, the one door
//! through which the step changes it, and the rules the run sets for the
//! step: which run a mutating step may act in, and the flags that must
//! agree with the run it belongs to (its mode, its target, its waves).
//! Refusals are bad input or a precondition, before anything changes.

use kube::Client;
use semver::Version;

use crate::error::UserError;
use crate::nodes::hold::Holder;
use crate::release::ReleaseRef;
use crate::run_record::{RecordError, Records, RunRecord, RunState, named_run};
use crate::versions::{DeploymentMode, ModeChoice};

/// A step's run: its record as read, and the records of its release's
/// namespace to change it through. Steps take it by reference; the record
/// reads through [`std::ops::Deref`].
pub struct Run {
    records: Records,
    record: RunRecord,
    release_id: String,
    /// The resourceVersion the record was read at, for the step's first
    /// change (taken by it: a later change reads the record again).
    read_at: std::sync::Mutex<Option<String>>,
}

impl Run {
    /// The named run (`--run-id`) or the release's latest, in whatever
    /// state it is: for steps that finish, report or undo a run.
    pub async fn recorded(
        client: &Client,
        release: &ReleaseRef,
        run_id: Option<&str>,
    ) -> Result<Run, RecordError> {
        let records = Records::new(client, &release.namespace);
        let (record, read_at) = records.resolve_versioned(&release.name, run_id).await?;
        Ok(Run::of(records, record, Some(read_at)))
    }

    /// The run a mutating step belongs to ([`Run::recorded`]); refuses (a
    /// precondition) to start work for a run that has already failed or was
    /// interrupted.
    pub async fn active(
        client: &Client,
        release: &ReleaseRef,
        run_id: Option<&str>,
    ) -> anyhow::Result<Run> {
        let run = Run::recorded(client, release, run_id).await?;
        run.ensure_active()?;
        Ok(run)
    }

    /// Refuses (a precondition) to start work for this run when it has
    /// already failed or was interrupted: [`Run::active`] for a run read
    /// by [`Run::recorded`].
    pub fn ensure_active(&self) -> Result<(), UserError> {
        refuse_stopped(&self.record)
    }

    /// The run of a step that may also run by hand: the release's record
    /// when it is the run named by `run_id`; None without a run id, without
    /// a record, or when the record is another run's (a check by hand).
    pub async fn optional(
        client: &Client,
        release: &ReleaseRef,
        run_id: Option<&str>,
    ) -> Result<Option<Run>, RecordError> {
        if run_id.is_none() {
            return Ok(None);
        }
        let records = Records::new(client, &release.namespace);
        let latest = records.load(&release.name).await?;
        Ok(Run::named(records, latest, run_id))
    }

    /// The run named by `run_id` when `latest`, the release's record as
    /// loaded from `records` (with the resourceVersion it was read at), is
    /// that run's ([`named_run`]); None for a step by hand.
    pub fn named(
        records: Records,
        latest: Option<(RunRecord, String)>,
        run_id: Option<&str>,
    ) -> Option<Run> {
        let named = named_run(latest.as_ref().map(|(record, _)| record), run_id).is_some();
        latest
            .filter(|_| named)
            .map(|(record, read_at)| Run::of(records, record, Some(read_at)))
    }

    fn of(records: Records, record: RunRecord, read_at: Option<String>) -> Run {
        let release_id = record.release_id();
        Run {
            records,
            record,
            release_id,
            read_at: std::sync::Mutex::new(read_at),
        }
    }

    /// The records of the run's namespace.
    pub fn records(&self) -> &Records {
        &self.records
    }

    /// The run's release, `namespace/name`.
    pub fn release_id(&self) -> &str {
        &self.release_id
    }

    /// The run as the nodes it holds name it.
    pub fn holder(&self) -> Holder<'_> {
        Holder {
            run_id: &self.record.run_id,
            release: &self.release_id,
        }
    }

    /// Changes the run's record with `change` (retried on concurrent
    /// writes; refused when another run replaced it) and returns it as
    /// written.
    pub async fn update(
        &self,
        change: impl FnMut(&mut RunRecord),
    ) -> Result<RunRecord, RecordError> {
        // The first change starts from the record as the step read it.
        let read_at = self.read_at.lock().expect("never poisoned").take();
        let loaded = read_at.map(|version| (self.record.clone(), version));
        self.records
            .update_from(loaded, &self.record.release, &self.record.run_id, change)
            .await
    }

    /// The mode of this step: the run's; an explicit `--deployment-mode` must
    /// agree with it (bad input otherwise).
    pub fn mode(&self, choice: ModeChoice) -> Result<DeploymentMode, UserError> {
        mode_of_run(choice, &self.record)
    }

    /// Wave `index` of the run's recorded plan (a precondition without a plan,
    /// bad input beyond it).
    pub fn wave(&self, index: u32) -> Result<&[String], UserError> {
        wave_of(&self.record, index)
    }

    /// The version the step acts at: the run's target; a `--target-version`
    /// given anyway must be that one.
    pub fn target(&self, given: Option<&Version>) -> Result<Version, UserError> {
        run_target(&self.record, given)
    }
}

/// The nodes a step acts on: named (`--nodes`), or a wave of its run's
/// recorded plan (`--wave`), resolved from the record the step reads anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// These nodes.
    Named(Vec<String>),
    /// Wave K (from 1) of the run's plan.
    Wave(u32),
}

impl From<Vec<String>> for Targets {
    fn from(nodes: Vec<String>) -> Targets {
        Targets::Named(nodes)
    }
}

impl Targets {
    /// The node names: the named ones, or the wave as `run` (the step's
    /// run, as it read it) planned it; a step without a run of its own (by
    /// hand) reads the run `run_id` names, else the release's latest.
    pub async fn resolve(
        &self,
        run: Option<&RunRecord>,
        client: &Client,
        release: &ReleaseRef,
        run_id: Option<&str>,
    ) -> anyhow::Result<Vec<String>> {
        let loaded;
        let record = match (self, run) {
            (Targets::Named(nodes), _) => return Ok(nodes.clone()),
            (Targets::Wave(_), Some(record)) => record,
            (Targets::Wave(_), None) => {
                loaded = Run::recorded(client, release, run_id).await?;
                &*loaded
            }
        };
        Ok(self.in_run(record)?)
    }

    /// The node names, a wave as `record` (the step's run) planned it.
    pub fn in_run(&self, record: &RunRecord) -> Result<Vec<String>, UserError> {
        match self {
            Targets::Named(nodes) => Ok(nodes.clone()),
            Targets::Wave(index) => Ok(wave_of(record, *index)?.to_vec()),
        }
    }
}

impl std::ops::Deref for Run {
    type Target = RunRecord;

    fn deref(&self) -> &RunRecord {
        &self.record
    }
}

/// The mode of this step: the run's; an explicit `--deployment-mode` must
/// agree with it (bad input otherwise).
fn mode_of_run(choice: ModeChoice, record: &RunRecord) -> Result<DeploymentMode, UserError> {
    match choice.explicit() {
        Some(mode) if mode != record.mode => Err(UserError::bad_input(format!(
            "--deployment-mode {mode} differs from run {}'s mode {}",
            record.run_id, record.mode
        ))
        .hint("omit --deployment-mode (auto follows the run) or pass the run's mode")),
        _ => Ok(record.mode),
    }
}

/// Refuses (a precondition) to start work for a run that has already
/// failed or was interrupted.
fn refuse_stopped(record: &RunRecord) -> Result<(), UserError> {
    if matches!(record.state, RunState::Failed | RunState::Interrupted) {
        let how = if record.state == RunState::Failed {
            "failed"
        } else {
            "was interrupted"
        };
        return Err(UserError::precondition(format!(
            "run {} {how} ({}); no further wave may start",
            record.run_id,
            record.failure.as_deref().unwrap_or("see its rollback")
        ))
        .hint("inspect `klm status`, fix the cause, then start a new run"));
    }
    Ok(())
}

/// Wave `index` of the run's recorded plan.
fn wave_of(record: &RunRecord, index: u32) -> Result<&[String], UserError> {
    if record.plan.waves.as_ref().is_none_or(|w| w.is_empty()) {
        return Err(UserError::precondition(format!(
            "run {} has no recorded plan, so it has no wave {index}",
            record.run_id
        ))
        .hint(format!(
            "run `klm select-nodes --run-id {}` first (it records the waves), or pass --nodes",
            record.run_id
        )));
    }
    record.wave(index).ok_or_else(|| {
        UserError::bad_input(format!(
            "run {} has {} wave(s), not a wave {index}",
            record.run_id,
            record.plan.waves.as_ref().map_or(0, Vec::len)
        ))
        .hint("pass a wave index from 1 to the number of waves select-nodes planned")
    })
}

/// The version a step of the run acts at: the run's target, as
/// check-prerequisites recorded it. A `--target-version` given anyway must be
/// that one (bad input, nothing changed, otherwise): the one place where a
/// step's flag is compared with its run.
fn run_target(record: &RunRecord, given: Option<&Version>) -> Result<Version, UserError> {
    match given {
        Some(given) if *given != record.target_version => Err(UserError::bad_input(format!(
            "--target-version {given} differs from run {}'s target {}",
            record.run_id, record.target_version
        ))
        .hint(format!(
            "omit --target-version (the step follows its run) or pass {}; a new target needs a new run (check-prerequisites)",
            record.target_version
        ))),
        _ => Ok(record.target_version.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ExitStatus;

    #[test]
    fn an_explicit_mode_must_be_the_runs() {
        let record = crate::run_record::example();
        assert_eq!(
            mode_of_run(ModeChoice::Auto, &record).unwrap(),
            DeploymentMode::Daemonset
        );
        assert_eq!(
            mode_of_run(ModeChoice::Daemonset, &record).unwrap(),
            DeploymentMode::Daemonset
        );
        let refused = mode_of_run(ModeChoice::Job, &record).unwrap_err();
        assert_eq!(refused.status, ExitStatus::BadInput);
        assert!(
            refused.message.contains("differs from run upgrade-1"),
            "{}",
            refused.message
        );
    }

    #[test]
    fn waves_come_from_the_recorded_plan() {
        let mut record = crate::run_record::example();
        let unplanned = wave_of(&record, 1).unwrap_err();
        assert_eq!(unplanned.status, ExitStatus::Precondition);
        record.plan.waves = Some(Vec::new());
        assert_eq!(
            wave_of(&record, 1).unwrap_err().status,
            ExitStatus::Precondition
        );
        record.plan.waves = Some(vec![vec!["a".into()], vec!["b".into(), "c".into()]]);
        assert_eq!(
            wave_of(&record, 2).unwrap(),
            ["b".to_string(), "c".to_string()]
        );
        let beyond = wave_of(&record, 3).unwrap_err();
        assert_eq!(beyond.status, ExitStatus::BadInput);
        assert!(
            beyond.message.contains("has 2 wave(s)"),
            "{}",
            beyond.message
        );
    }

    #[test]
    fn a_step_acts_on_named_nodes_or_a_wave_of_its_run() {
        let mut record = crate::run_record::example();
        record.plan.waves = Some(vec![vec!["a".into()], vec!["b".into(), "c".into()]]);
        let named = Targets::Named(vec!["x".into()]);
        assert_eq!(named.in_run(&record).unwrap(), ["x".to_string()]);
        assert_eq!(
            Targets::Wave(2).in_run(&record).unwrap(),
            ["b".to_string(), "c".to_string()]
        );
        let beyond = Targets::Wave(3).in_run(&record).unwrap_err();
        assert_eq!(beyond.status, ExitStatus::BadInput);
    }

    #[test]
    fn a_step_acts_only_at_its_runs_target() {
        let record = crate::run_record::example();
        let recorded = Version::new(3, 28, 0);
        assert_eq!(run_target(&record, None).unwrap(), recorded);
        let given = crate::versions::parse_flag("v3.28.0").unwrap();
        assert_eq!(run_target(&record, Some(&given)).unwrap(), recorded);
        let refused = run_target(&record, Some(&Version::new(3, 29, 0))).unwrap_err();
        assert_eq!(refused.status, ExitStatus::BadInput);
        assert!(
            refused
                .message
                .contains("differs from run upgrade-1's target 3.28.0")
        );
        assert_eq!(refused.hints.len(), 1);
    }
}
