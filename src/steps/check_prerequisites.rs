//! The checks before a run starts, shared by `check-prerequisites`, `plan`
//! and `upgrade`: every check that changes nothing (the release is deployed,
//! the mode is the release's, the target suits the mode, the verification pod
//! would be admitted), the step deadline a run's timeouts must fit in, and
//! the start of a run ([`start_run`]: checked, then recorded).

use std::time::Duration;

use kube::Client;
use semver::Version;

use crate::args::DEFAULT_CHART;
use crate::error::UserError;
use crate::helm::Helm;
use crate::release::{self, Release, ReleaseRef};
use crate::run_record::{Before, Begun, Records, RunRecord};
use crate::verification::Pods;
use crate::versions::{self, DeploymentMode, ModeChoice};

/// Time a step needs beyond klm's own timeouts: the pod starting, the API
/// calls and helm reads around the waits.
pub const STEP_MARGIN: Duration = Duration::from_secs(120);

/// The longest a step can take with these timeouts: a wave's upgrade, one
/// pod, drains, runs a helm upgrade (job mode), waits for kata-deploy to come
/// back and verifies; a rollback (a wave's settle step, the exit handler)
/// does all of that but the drain.
pub fn longest_step(
    helm: Duration,
    restart: Duration,
    verification: Duration,
    drain: Duration,
) -> Duration {
    drain + helm + restart + verification + STEP_MARGIN
}

/// Refuses timeouts that a step deadline would cut short: Argo kills such a
/// step mid-way (a rollback left half done), and does not retry it.
pub fn check_step_deadline(
    deadline: Duration,
    helm: Duration,
    restart: Duration,
    verification: Duration,
    drain: Duration,
) -> Result<(), UserError> {
    let needed = longest_step(helm, restart, verification, drain);
    if deadline >= needed {
        return Ok(());
    }
    Err(UserError::bad_input(format!(
        "the step deadline ({}s) is shorter than the longest step can take: {}s (a wave's upgrade: drain-timeout {}s + helm-timeout {}s + restart-timeout {}s + verification-timeout {}s, plus {}s to start)",
        deadline.as_secs(),
        needed.as_secs(),
        drain.as_secs(),
        helm.as_secs(),
        restart.as_secs(),
        verification.as_secs(),
        STEP_MARGIN.as_secs()
    ))
    .hint(format!(
        "install the chart with workflow.stepDeadlineSeconds={} or more, or submit with shorter timeouts",
        needed.as_secs()
    )))
}

/// What the read-only checks established.
pub struct Checked {
    /// The release as it is.
    pub release: Release,
    /// The mode the run will use.
    pub mode: DeploymentMode,
    /// The chart version of the previous deployed revision.
    pub previous_version: Option<String>,
    /// Things a person should know.
    pub warnings: Vec<String>,
}

impl Checked {
    /// The record of a new run to `target` from the release as checked
    /// (the rollback target), running, with nothing done yet.
    pub fn record(
        &self,
        run_id: String,
        reference: &ReleaseRef,
        target: &Version,
        chart_values: Vec<String>,
    ) -> RunRecord {
        let mut record = RunRecord::start(
            run_id,
            reference,
            self.mode,
            target.clone(),
            Before {
                revision: self.release.revision,
                chart_version: self.release.chart_version.clone(),
                app_version: self.release.app_version.clone(),
                user_values: self.release.user_values.clone(),
            },
        );
        record.chart_values = chart_values;
        record
    }
}

/// How a run upgrades the release: what the preflight renders.
#[derive(Debug, Clone, Copy)]
pub struct Rehearsal<'a> {
    /// The kata-deploy chart reference (`{version}` replaced, else `--version`).
    pub chart: &'a str,
    /// The run's extra chart values (`--set` items).
    pub chart_values: &'a [String],
    /// The helm timeout the run uses.
    pub helm_timeout: Duration,
}

/// Every check that changes nothing: the release is deployed, the mode is
/// the release's, the target suits the mode, job mode is not refused, the
/// verification pod's namespace exists, and helm would run the run's first
/// upgrade as the identity klm runs as ([`rehearse`]).
pub async fn check(
    client: &Client,
    helm: &Helm,
    reference: &ReleaseRef,
    target: &Version,
    choice: ModeChoice,
    pods: &Pods,
    rehearsal: &Rehearsal<'_>,
) -> anyhow::Result<Checked> {
    let release = reference.load(helm).await?;
    release.ensure_deployed()?;
    let coalesced = reference.coalesced_values(helm).await?;
    let detected = release::detect_mode(&coalesced)
        .map_err(|why| UserError::precondition(format!("release {}: {why}", reference.name)))?;
    let current = versions::parse(&release.chart_version)?;
    if let Some(asked) = choice.explicit()
        && asked != detected
    {
        return Err(mode_mismatch(reference, asked, detected, &current).into());
    }
    let mode = detected;
    versions::check_minimum(target, mode)?;
    let own_dispatcher =
        mode == DeploymentMode::Job && versions::runs_own_dispatcher(&current, target);
    for pod in pods.all() {
        crate::verification::run::dry_run(client, pod).await?;
    }
    if let Some(item) = rehearsal.chart_values.iter().find(|item| {
        item.split_once('=')
            .is_some_and(|(key, _)| key.trim() == release::MODE_KEY)
    }) {
        return Err(UserError::bad_input(format!(
            "{item:?}: a run never changes the release's mode; every upgrade it runs keeps {mode} ({}={mode})",
            release::MODE_KEY
        ))
        .hint("drop deploymentMode from --set / --helm-set-values; switching modes is a separate helm upgrade of every node at once (see --deployment-mode)")
        .into());
    }
    let rehearsed = rehearse(
        helm,
        &release,
        &coalesced,
        mode,
        own_dispatcher,
        target,
        rehearsal,
    )
    .await?;
    if own_dispatcher {
        check_dispatchers(helm, &release, &rehearsed).await?;
    }
    let mut warnings = Vec::new();
    if let Some(warning) = new_runtime_class_labels(&release, &rehearsed, target) {
        warnings.push(warning);
    }
    if !versions::is_dev(target) && !versions::is_dev(&current) && target < &current {
        warnings.push(format!(
            "{target} is older than the deployed {current}: this run downgrades"
        ));
    }
    let previous_version = reference
        .history(helm)
        .await?
        .into_iter()
        .filter(|h| h.revision < release.revision)
        .max_by_key(|h| h.revision)
        .map(|h| {
            h.chart
                .rsplit_once('-')
                .map(|(_, v)| v.to_string())
                .unwrap_or(h.chart)
        });
    Ok(Checked {
        release,
        mode,
        previous_version,
        warnings,
    })
}

/// Renders the run's first `helm upgrade` exactly as the run will run it
/// (its values: the user's, the run's `--set` items, the mechanics of the
/// mode, the mode pinned) with `--dry-run=server`, as the identity klm runs
/// as: what helm would refuse (a `lookup` the identity may not make, a
/// chart version that does not exist, a `--set` that does not parse, a
/// value the target chart removed) is refused here, before the run is
/// recorded, with helm's words. Job mode renders one wave's upgrade, scoped
/// to a placeholder node (the hooks do not run in a dry run).
pub async fn rehearse(
    helm: &Helm,
    release: &Release,
    coalesced: &serde_json::Value,
    mode: DeploymentMode,
    own_dispatcher: bool,
    target: &Version,
    rehearsal: &Rehearsal<'_>,
) -> Result<serde_json::Value, crate::release::ReleaseError> {
    let mechanics = match mode {
        DeploymentMode::Daemonset => crate::run_values::daemonset(),
        // From 4.1 the release moves with the user's values alone.
        DeploymentMode::Job if own_dispatcher => Vec::new(),
        DeploymentMode::Job => {
            crate::run_values::job_wave(&["klm-preflight-placeholder".into()], coalesced)
        }
    };
    let (set, set_json) = crate::run_values::as_set_flags(&mechanics);
    let upgrade = crate::release::Upgrade {
        chart: rehearsal.chart.to_string(),
        version: target.to_string(),
        values: crate::release::Values::ResetThenReuse,
        set: rehearsal.chart_values.iter().cloned().chain(set).collect(),
        set_json,
        timeout: rehearsal.helm_timeout,
        mode,
        no_hooks: false,
        description: None,
    };
    release.rehearse(helm, &upgrade).await
}

/// job mode from 4.1: the install dispatcher the target renders (each wave
/// runs a copy of it) and the one the release recorded now (a rollback runs
/// a copy of it) are of a shape klm knows; otherwise nothing may start.
async fn check_dispatchers(
    helm: &Helm,
    release: &Release,
    rehearsed: &serde_json::Value,
) -> anyhow::Result<()> {
    let hooks: Vec<&str> = rehearsed
        .get("hooks")
        .and_then(serde_json::Value::as_array)
        .map(|hooks| {
            hooks
                .iter()
                .filter_map(|h| h.get("manifest").and_then(serde_json::Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    crate::dispatch::Dispatcher::find(hooks, &release.reference.name, release.revision + 1)?;
    let recorded = release.reference.hooks(helm, release.revision).await?;
    crate::dispatch::Dispatcher::find(
        recorded.iter().map(String::as_str),
        &release.reference.name,
        release.revision,
    )?;
    Ok(())
}

/// What a person should know when the target's RuntimeClasses select nodes
/// by labels the release's do not (kata-deploy 4.1's instance mark): the
/// nodes not upgraded yet lack them, and klm labels them before the waves.
fn new_runtime_class_labels(
    release: &Release,
    rehearsed: &serde_json::Value,
    target: &Version,
) -> Option<String> {
    let current = release::runtime_class_node_labels(&release.manifest).ok()?;
    let manifest = rehearsed
        .get("manifest")
        .and_then(serde_json::Value::as_str)?;
    let wanted = release::runtime_class_node_labels(manifest).ok()?;
    let new = crate::nodes::marks::newly_required(&current, &wanted);
    if new.is_empty() {
        return None;
    }
    let labels: Vec<String> = new.iter().map(|(k, v)| format!("{k}={v}")).collect();
    Some(format!(
        "kata-deploy {target}'s RuntimeClasses also select nodes labelled {}, which only {target}'s installer writes: when the release moves (before the first wave) klm adds the label to the release's nodes that lack it, so nodes not upgraded yet keep taking Kata pods, and takes it off again if the run rolls the release back",
        labels.join(", ")
    ))
}

fn mode_mismatch(
    reference: &ReleaseRef,
    asked: DeploymentMode,
    detected: DeploymentMode,
    current: &Version,
) -> UserError {
    let base = UserError::precondition(format!(
        "release {} runs kata-deploy in {detected} mode, not {asked}: klm never switches modes during an upgrade",
        reference.name
    ));
    if versions::job_mode_prunes(current) {
        return base.hint(format!(
            "kata-deploy {current} makes the mode immutable: uninstall and reinstall it in {asked} mode, or run with --deployment-mode auto"
        ));
    }
    let minimum = asked.minimum();
    let version = if current >= &minimum {
        current.to_string()
    } else {
        minimum.to_string()
    };
    base.hint(format!(
        "switch once, for all nodes at once, with: helm upgrade {} {} -n {} --version {version} --reuse-values --set deploymentMode={asked} (use your mirror's chart reference if you have one)",
        reference.name,
        DEFAULT_CHART,
        reference.namespace
    ))
    .hint("or run with --deployment-mode auto to follow the release's mode")
}

/// Refuses (bad input, nothing changed) a target older than the release's
/// version unless the downgrade is asked for (`--allow-downgrade`): a
/// mistyped version must not take a fleet back. Development builds are
/// never compared.
pub fn check_downgrade(current: &str, target: &Version, allowed: bool) -> Result<(), UserError> {
    let Ok(current) = versions::parse(current) else {
        return Ok(());
    };
    if allowed || versions::is_dev(target) || versions::is_dev(&current) || target >= &current {
        return Ok(());
    }
    Err(UserError::bad_input(format!(
        "--target-version {target} is older than the release's {current}: this run would downgrade every node it upgrades"
    ))
    .hint(format!(
        "to downgrade on purpose, pass --allow-downgrade (the workflow's allow-downgrade=true); to upgrade, pass a version of at least {current}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_downgrade_must_be_asked_for() {
        let v = |s: &str| Version::parse(s).unwrap();
        let refused = check_downgrade("3.28.0", &v("3.27.0"), false).unwrap_err();
        assert_eq!(refused.status, crate::error::ExitStatus::BadInput);
        assert!(
            refused.message.contains("older than the release's 3.28.0"),
            "{}",
            refused.message
        );
        assert!(refused.hints[0].contains("--allow-downgrade"));
        assert!(check_downgrade("3.28.0", &v("3.27.0"), true).is_ok());
        assert!(check_downgrade("3.28.0", &v("3.28.0"), false).is_ok());
        assert!(check_downgrade("3.28.0", &v("3.29.0"), false).is_ok());
        assert!(check_downgrade("0.0.0-dev", &v("3.27.0"), false).is_ok());
    }

    #[test]
    fn the_step_deadline_must_cover_a_whole_wave() {
        let m = |n: u64| Duration::from_secs(n * 60);
        // The chart's defaults: 10m + 10m + 3m + 5m, plus the margin, within 3600s.
        assert_eq!(
            longest_step(m(10), m(10), m(3), m(5)).as_secs(),
            28 * 60 + 120
        );
        assert!(check_step_deadline(Duration::from_secs(3600), m(10), m(10), m(3), m(5)).is_ok());
        let refused =
            check_step_deadline(Duration::from_secs(3600), m(30), m(30), m(3), m(5)).unwrap_err();
        assert!(refused.to_string().contains("4200s"), "{refused}");
        // The drain adds to the rest: one pod drains, upgrades and verifies.
        assert_eq!(
            longest_step(m(1), m(1), m(1), m(90)).as_secs(),
            93 * 60 + 120
        );
    }

    #[test]
    fn a_new_run_records_the_release_as_checked() {
        let reference = ReleaseRef {
            name: "kata-deploy".into(),
            namespace: "kube-system".into(),
        };
        let checked = Checked {
            release: Release {
                reference: reference.clone(),
                revision: 4,
                status: "deployed".into(),
                chart_name: "kata-deploy".into(),
                chart_version: "3.27.0".into(),
                app_version: "3.27.0".into(),
                user_values: serde_json::json!({"debug": true}),
                manifest: String::new(),
            },
            mode: DeploymentMode::Job,
            previous_version: None,
            warnings: Vec::new(),
        };
        let target = versions::parse("v3.28.0").unwrap();
        let record = checked.record("upgrade-1".into(), &reference, &target, Vec::new());
        assert_eq!(record.run_id, "upgrade-1");
        assert_eq!(record.release_id(), "kube-system/kata-deploy");
        assert_eq!(record.mode, DeploymentMode::Job);
        assert_eq!(record.target_version, Version::new(3, 28, 0));
        assert_eq!(record.before.revision, 4);
        assert_eq!(record.before.chart_version, "3.27.0");
        assert_eq!(
            record.before.user_values,
            serde_json::json!({"debug": true})
        );
        assert_eq!(record.state, crate::run_record::RunState::Running);
        assert!(
            record.nodes.is_empty() && record.mechanics.is_empty() && record.plan.waves.is_none()
        );
    }
}

/// A run to start: what check-prerequisites (and `klm upgrade`) are asked.
#[derive(Debug, Clone)]
pub struct StartRequest<'a> {
    /// The release.
    pub release: &'a ReleaseRef,
    /// The run (None: a new id, `klm-<unix seconds>`).
    pub run_id: Option<String>,
    /// The version to upgrade to.
    pub target: &'a Version,
    /// The mode asked for.
    pub mode: ModeChoice,
    /// The run's extra chart values, recorded for every upgrade of the run.
    pub chart_values: Vec<String>,
    /// The label whose values are the pools (recorded: it picks each node's pod).
    pub pool_label: Option<&'a str>,
    /// The verification pods to validate.
    pub pods: &'a Pods,
    /// How the run will upgrade the release (rendered before it starts).
    pub rehearsal: Rehearsal<'a>,
    /// A target older than the release's version was asked for explicitly.
    pub allow_downgrade: bool,
    /// What drives the run when it is not a workflow (`klm upgrade`).
    pub driver: Option<&'a str>,
}

/// A run started (or found already started: a retried step).
#[derive(Debug)]
pub struct Started {
    /// The run's record.
    pub record: RunRecord,
    /// True when the record already existed.
    pub resumed: bool,
    /// The chart version of the deployed revision before this one, if any.
    pub previous_version: Option<String>,
    /// Things a person should know.
    pub warnings: Vec<String>,
}

/// Checks that the run can start ([`check`]) and records it, taking the
/// release's run lock; a run already recorded under this id is resumed,
/// unless it was recorded with another target (bad input).
pub async fn start_run(
    client: &Client,
    helm: &Helm,
    request: &StartRequest<'_>,
) -> anyhow::Result<Started> {
    let target = request.target;
    request.pods.check_pool_label(request.pool_label)?;
    let records = Records::new(client, &request.release.namespace);
    if let Some(run_id) = &request.run_id
        && let Some((recorded, _)) = records.load(&request.release.name).await?
        && recorded.run_id == *run_id
        && recorded.target_version != *target
    {
        return Err(target_mismatch(&recorded, target).into());
    }
    let checked = check(
        client,
        helm,
        request.release,
        target,
        request.mode,
        request.pods,
        &request.rehearsal,
    )
    .await?;
    check_downgrade(
        &checked.release.chart_version,
        target,
        request.allow_downgrade,
    )?;
    let run_id = request
        .run_id
        .clone()
        .unwrap_or_else(crate::run_record::new_run_id);
    let mut record = checked.record(
        run_id,
        request.release,
        target,
        request.chart_values.clone(),
    );
    record.pool_label = request.pool_label.map(String::from);
    record.pool_pods = request.pods.pools().map(String::from).collect();
    record.driver = request.driver.map(String::from);
    let (record, resumed) = match records.begin(record).await? {
        Begun::Created(record) => (record, false),
        Begun::Resumed(record) => (record, true),
    };
    if resumed && record.target_version != *target {
        return Err(target_mismatch(&record, target).into());
    }
    Ok(Started {
        record,
        resumed,
        previous_version: checked.previous_version,
        warnings: checked.warnings,
    })
}

/// A run resumed with another target than it was recorded with.
fn target_mismatch(record: &RunRecord, target: &Version) -> UserError {
    UserError::bad_input(format!(
        "run {} was recorded with target {}, not {target}",
        record.run_id, record.target_version
    ))
    .hint("pass the recorded --target-version, or a new --run-id")
}
