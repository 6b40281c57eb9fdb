//! The kata-deploy Helm release: its state, chart version, values, and the
//! objects it created (found from its manifest, so names are never
//! hard-coded and `env.multiInstallSuffix` works).

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Classify, ExitStatus};
use crate::helm::{Helm, HelmError};
use crate::versions::DeploymentMode;

/// Why the release cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// No such release.
    #[error("Helm release {name} was not found in namespace {namespace}")]
    NotFound {
        /// Release name.
        name: String,
        /// Its namespace.
        namespace: String,
    },
    /// A helm operation did not finish.
    #[error("Helm release {name} is stuck in {status} (revision {revision})")]
    StuckPending {
        /// Release name.
        name: String,
        /// Its namespace.
        namespace: String,
        /// pending-install, pending-upgrade or pending-rollback.
        status: String,
        /// The pending revision.
        revision: u32,
    },
    /// The release is failed or superseded rather than deployed.
    #[error("Helm release {name} is {status} (revision {revision}), not deployed")]
    NotDeployed {
        /// Release name.
        name: String,
        /// Its namespace.
        namespace: String,
        /// Its status.
        status: String,
        /// Its revision.
        revision: u32,
    },
    /// Reading the release through helm failed.
    #[error("reading Helm release {name}")]
    Helm {
        /// Release name.
        name: String,
        /// The helm failure.
        #[source]
        source: HelmError,
    },
    /// `helm upgrade` of the release failed.
    #[error("upgrading Helm release {name} to {version}")]
    Upgrade {
        /// Release name.
        name: String,
        /// The chart version it was upgraded to.
        version: String,
        /// The helm failure.
        #[source]
        source: HelmError,
    },
    /// helm refused the upgrade a run would run, rendered with
    /// `--dry-run=server` before anything changed.
    #[error("helm would refuse to upgrade {name} to {version}")]
    Refused {
        /// Release name.
        name: String,
        /// Its namespace.
        namespace: String,
        /// The chart version.
        version: String,
        /// What helm said.
        #[source]
        source: Box<HelmError>,
    },
    /// The release's manifest has no kata-deploy DaemonSet where one is needed.
    #[error(
        "Helm release {name} has no kata-deploy DaemonSet (container kube-kata) in its manifest (is it in job mode?)"
    )]
    NoDaemonSet {
        /// Release name.
        name: String,
    },
    /// The release's manifest or values could not be read.
    #[error("Helm release {name}: {reason}")]
    Malformed {
        /// Release name.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

impl Classify for ReleaseError {
    fn status(&self) -> ExitStatus {
        match self {
            ReleaseError::Helm { source, .. } | ReleaseError::Upgrade { source, .. } => {
                source.status()
            }
            ReleaseError::Malformed { .. } => ExitStatus::Failed,
            ReleaseError::Refused { source, .. } => refusal(source).0,
            _ => ExitStatus::Precondition,
        }
    }

    fn hints(&self) -> Vec<String> {
        match self {
            ReleaseError::NotFound { name, namespace } => vec![
                format!(
                    "check --helm-release and --helm-namespace (`helm list -A` shows releases); looked for {name} in {namespace}"
                ),
                "kata-deploy must be installed with Helm before it can be upgraded".into(),
            ],
            ReleaseError::StuckPending {
                name,
                namespace,
                revision,
                ..
            } => vec![
                "another helm operation is running on this release, or one was killed half-way"
                    .into(),
                format!(
                    "if none is running, return it to its last deployed revision: helm rollback {name} -n {namespace} (see `helm history {name} -n {namespace}`), then retry"
                ),
                format!("the stuck revision is {revision}"),
            ],
            ReleaseError::NotDeployed {
                name, namespace, ..
            } => vec![format!(
                "inspect `helm history {name} -n {namespace}` and bring the release back to a deployed revision (helm rollback) before upgrading"
            )],
            ReleaseError::NoDaemonSet { .. } => {
                vec!["use --deployment-mode job for a release in job mode".into()]
            }
            ReleaseError::Helm { source, .. } | ReleaseError::Upgrade { source, .. } => {
                source.hints()
            }
            ReleaseError::Malformed { .. } => Vec::new(),
            ReleaseError::Refused {
                name,
                namespace,
                version,
                source,
            } => {
                let mut hints = refusal(source).1;
                hints.push(format!(
                    "nothing was changed; see the same answer with: helm upgrade {name} <chart> --version {version} -n {namespace} --reset-then-reuse-values --dry-run=server"
                ));
                hints
            }
        }
    }
}

/// What a refused rehearsal means, from helm's words: the exit status and
/// what to do about it.
fn refusal(source: &HelmError) -> (ExitStatus, Vec<String>) {
    let HelmError::Failed { stderr, .. } = source else {
        return (source.status(), source.hints());
    };
    let said = |words: &[&str]| words.iter().any(|w| stderr.contains(w));
    if said(&["forbidden"]) {
        return (ExitStatus::Precondition, vec![
            "the identity klm runs as may not read or write something the kata-deploy chart needs (its templates `lookup` objects cluster-wide): install the kata-lifecycle-manager chart's RBAC for this release (README, RBAC), or grant what helm names above".into(),
        ]);
    }
    if said(&[
        "failed parsing --set",
        "parsing --set",
        "key map",
        "unable to parse key",
    ]) {
        return (ExitStatus::BadInput, vec![
            "a --set / --helm-set-values item is not valid helm syntax: quote lists as {a,b}, escape commas in values with \\, and dots in keys with \\.".into(),
        ]);
    }
    if said(&[
        "job.nodeSelector",
        "job.nodeSelectorExpressions",
        "job.nodeAffinity",
    ]) {
        return (ExitStatus::Precondition, vec![
            "kata-deploy 4.1 removed job.nodeSelector, job.nodeSelectorExpressions and job.nodeAffinity (in both modes): select nodes with the top-level nodeSelector or affinity instead, for example --helm-set-values 'job.nodeSelector=null,nodeSelector.<key>=<value>'".into(),
        ]);
    }
    if said(&[
        "deploymentMode is immutable",
        "multiInstallSuffix is immutable",
    ]) {
        return (ExitStatus::Precondition, vec![
            "kata-deploy keeps a release in the mode and suffix it was installed with: remove deploymentMode and env.multiInstallSuffix from --set / --helm-set-values".into(),
        ]);
    }
    if said(&[
        "not found",
        "failed to download",
        "no chart version found",
        "no such file",
        "manifest unknown",
    ]) {
        return (ExitStatus::Precondition, vec![
            "the target chart could not be fetched: check --target-version (is that kata-deploy version published?) and --chart (or KLM_CHART) for a mirror".into(),
        ]);
    }
    (ExitStatus::Precondition, vec![
        "helm's words above say what the kata-deploy chart refuses; change the values or version it names and run again".into(),
    ])
}

/// The shell command that puts the user's values (those of revision
/// `revision`, before a run) back on a release at `version`: what klm tells
/// a person when it cannot do it itself.
pub fn restore_command(
    reference: &ReleaseRef,
    chart: &str,
    version: &str,
    revision: u32,
    mode: DeploymentMode,
    no_hooks: bool,
) -> String {
    let (name, namespace) = (&reference.name, &reference.namespace);
    let chart = if chart.contains("{version}") {
        chart.replace("{version}", version)
    } else {
        format!("{chart} --version {version}")
    };
    let pin = pin_mode(version, mode)
        .map(|pin| format!(" --set {pin}"))
        .unwrap_or_default();
    let hooks = if no_hooks { " --no-hooks" } else { "" };
    format!(
        "helm get values {name} -n {namespace} --revision {revision} -o yaml > {name}-values.yaml && helm upgrade {name} {chart} -n {namespace} --reset-values -f {name}-values.yaml{pin}{hooks}"
    )
}

/// A release's name and namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRef {
    /// Release name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
}

/// What klm needs to know of a release.
#[derive(Debug, Clone)]
pub struct Release {
    /// Which release.
    pub reference: ReleaseRef,
    /// Its current revision.
    pub revision: u32,
    /// deployed, failed, pending-upgrade, ...
    pub status: String,
    /// Chart name (kata-deploy).
    pub chart_name: String,
    /// Chart version (what --target-version is compared with).
    pub chart_version: String,
    /// The chart's appVersion.
    pub app_version: String,
    /// The values the user supplied (not the chart's defaults).
    pub user_values: Value,
    /// The rendered manifest.
    pub manifest: String,
}

/// `helm get metadata -o json` (helm 4's `status` no longer shows the chart).
#[derive(Deserialize)]
struct MetadataJson {
    chart: String,
    version: String,
    #[serde(default, rename = "appVersion")]
    app_version: String,
    revision: u32,
    status: String,
}

/// The chart and version arguments of `helm upgrade`: a reference with
/// `{version}` gets the version written into it (a directory of packaged
/// charts), any other reference gets `--version`.
pub fn chart_arguments(chart: &str, version: &str) -> Vec<std::ffi::OsString> {
    if chart.contains("{version}") {
        vec![chart.replace("{version}", version).into()]
    } else {
        vec![chart.into(), "--version".into(), version.into()]
    }
}

impl ReleaseRef {
    /// Reads the release's current state through helm: its metadata,
    /// manifest and user-supplied values (three reads, run concurrently).
    pub async fn load(&self, helm: &Helm) -> Result<Release, ReleaseError> {
        let (name, namespace) = (self.name.as_str(), self.namespace.as_str());
        let metadata = helm.json::<MetadataJson, _, _>([
            "get",
            "metadata",
            name,
            "--namespace",
            namespace,
            "--output",
            "json",
        ]);
        let manifest = helm.run(["get", "manifest", name, "--namespace", namespace]);
        let values = helm.json::<Value, _, _>([
            "get",
            "values",
            name,
            "--namespace",
            namespace,
            "--output",
            "json",
        ]);
        let (metadata, manifest, values) = tokio::join!(metadata, manifest, values);
        let metadata = metadata.map_err(|source| self.helm_error(source))?;
        let manifest = manifest.map_err(|source| self.helm_error(source))?;
        let values = values.map_err(|source| self.helm_error(source))?;
        Ok(Release {
            reference: self.clone(),
            revision: metadata.revision,
            status: metadata.status,
            chart_name: metadata.chart,
            chart_version: metadata.version,
            app_version: metadata.app_version,
            user_values: match values {
                Value::Null => Value::Object(Default::default()),
                other => other,
            },
            manifest,
        })
    }

    /// The release's values coalesced with the chart's defaults.
    pub async fn coalesced_values(&self, helm: &Helm) -> Result<Value, ReleaseError> {
        helm.json([
            "get",
            "values",
            self.name.as_str(),
            "--namespace",
            self.namespace.as_str(),
            "--all",
            "--output",
            "json",
        ])
        .await
        .map_err(|source| self.helm_error(source))
    }

    /// The values the user supplied at one revision.
    pub async fn values_at(&self, helm: &Helm, revision: u32) -> Result<Value, ReleaseError> {
        let revision = revision.to_string();
        let values: Value = helm
            .json([
                "get",
                "values",
                self.name.as_str(),
                "--namespace",
                self.namespace.as_str(),
                "--revision",
                revision.as_str(),
                "--output",
                "json",
            ])
            .await
            .map_err(|source| self.helm_error(source))?;
        Ok(match values {
            Value::Null => Value::Object(Default::default()),
            other => other,
        })
    }

    /// The hooks a revision recorded, as `helm get hooks` prints them (YAML
    /// documents), split into documents.
    pub async fn hooks(&self, helm: &Helm, revision: u32) -> Result<Vec<String>, ReleaseError> {
        let revision = revision.to_string();
        let text = helm
            .run([
                "get",
                "hooks",
                self.name.as_str(),
                "--namespace",
                self.namespace.as_str(),
                "--revision",
                revision.as_str(),
            ])
            .await
            .map_err(|source| self.helm_error(source))?;
        Ok(manifest_documents(&text)
            .into_iter()
            .map(String::from)
            .collect())
    }

    /// The history of the release (oldest first).
    pub async fn history(&self, helm: &Helm) -> Result<Vec<HistoryEntry>, ReleaseError> {
        helm.json([
            "history",
            self.name.as_str(),
            "--namespace",
            self.namespace.as_str(),
            "--max",
            "256",
            "--output",
            "json",
        ])
        .await
        .map_err(|source| self.helm_error(source))
    }

    fn helm_error(&self, source: HelmError) -> ReleaseError {
        if source.is_not_found() {
            ReleaseError::NotFound {
                name: self.name.clone(),
                namespace: self.namespace.clone(),
            }
        } else {
            ReleaseError::Helm {
                name: self.name.clone(),
                source,
            }
        }
    }
}

/// One revision in `helm history`.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct HistoryEntry {
    /// Revision number.
    pub revision: u32,
    /// Its status.
    pub status: String,
    /// `<chart>-<version>`.
    pub chart: String,
    /// The chart's appVersion.
    #[serde(default)]
    pub app_version: String,
    /// What helm (or klm, with `--description`) said of the revision.
    #[serde(default)]
    pub description: String,
}

/// The description klm gives a revision that only puts the user's values
/// back, without running hooks (job mode: the installer did not run).
pub const VALUES_ONLY_DESCRIPTION: &str =
    "kata-lifecycle-manager: the user's values restored; hooks not run";

impl HistoryEntry {
    /// The chart version of the revision (`chart` without the chart's name).
    pub fn chart_version(&self, chart_name: &str) -> String {
        self.chart
            .strip_prefix(&format!("{chart_name}-"))
            .map(String::from)
            .unwrap_or_else(|| {
                self.chart
                    .rsplit_once('-')
                    .map(|(_, v)| v.to_string())
                    .unwrap_or_else(|| self.chart.clone())
            })
    }

    /// Whether the revision was deployed at some point (its hooks ran,
    /// unless klm restored values only).
    pub fn was_deployed(&self) -> bool {
        matches!(self.status.as_str(), "deployed" | "superseded")
    }

    /// Whether klm wrote this revision to restore values only (no hooks ran).
    pub fn values_only(&self) -> bool {
        self.description == VALUES_ONLY_DESCRIPTION
    }

    /// Whether klm wrote this revision without running hooks to dispatch the
    /// nodes itself (job mode from 4.1): the nodes it installed are not in
    /// the history, only in what klm verified on each.
    pub fn dispatched_by_klm(&self) -> bool {
        self.description.starts_with("kata-lifecycle-manager:")
            && self.description.ends_with(HOOKS_NOT_RUN)
    }
}

/// How the description of a revision klm wrote with `--no-hooks` ends.
pub const HOOKS_NOT_RUN: &str = "(hooks not run)";

/// A namespaced object in the release's manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManifestObject {
    /// Its kind.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its namespace (the release's when the manifest does not say).
    pub namespace: String,
}

/// Where an upgrade's values come from.
#[derive(Debug, Clone)]
pub enum Values {
    /// The chart's defaults, then the release's last values (`--reset-then-reuse-values`).
    ResetThenReuse,
    /// The chart's defaults, then exactly these values (`--reset-values --values FILE`).
    Exactly(Value),
}

/// A `helm upgrade` of the release.
#[derive(Debug, Clone)]
pub struct Upgrade {
    /// The chart reference; `{version}` in it is replaced by the version
    /// (a directory of packaged charts), otherwise `--version` is passed.
    pub chart: String,
    /// The chart version.
    pub version: String,
    /// Base values.
    pub values: Values,
    /// `--set` items.
    pub set: Vec<String>,
    /// `--set-json` items.
    pub set_json: Vec<String>,
    /// How long helm may take (hooks included).
    pub timeout: std::time::Duration,
    /// The release's mode, pinned on every upgrade to a chart that has the
    /// key ([`pin_mode`]).
    pub mode: DeploymentMode,
    /// Run no hook (job mode from 4.1: the release moves, no installer
    /// runs; klm dispatches each wave itself).
    pub no_hooks: bool,
    /// The revision's description in `helm history` (None: helm's own).
    pub description: Option<String>,
}

/// The value that keeps a release in its mode: every helm upgrade klm runs
/// to a chart that knows `deploymentMode` (3.32.0 on) sets it, so a chart
/// whose default mode changed (job on kata-deploy's main) never switches a
/// release rendered with `--reset-then-reuse-values` or `--reset-values`.
/// The pin stays in the release's values after the run: it says what the
/// release is, and a later plain `helm upgrade` keeps it too.
pub fn pin_mode(version: &str, mode: DeploymentMode) -> Option<String> {
    let version = crate::versions::parse(version).ok()?;
    crate::versions::at_least(&version, &crate::versions::MIN_JOB)
        .then(|| format!("{MODE_KEY}={mode}"))
}

/// kata-deploy's value that selects its mode (3.32.0 on).
pub const MODE_KEY: &str = "deploymentMode";

impl Upgrade {
    /// An upgrade that installs `version` with exactly `values` and nothing
    /// else (a rollback's reinstall of what the release had).
    pub fn exactly(
        chart: &str,
        version: &str,
        values: serde_json::Value,
        mode: DeploymentMode,
        timeout: std::time::Duration,
    ) -> Self {
        Self {
            chart: chart.to_string(),
            version: version.to_string(),
            values: Values::Exactly(values),
            set: Vec::new(),
            set_json: Vec::new(),
            timeout,
            mode,
            no_hooks: false,
            description: None,
        }
    }
}

impl Release {
    /// Refuses a release that is not `deployed`, explaining a stuck one.
    pub fn ensure_deployed(&self) -> Result<(), ReleaseError> {
        let name = self.reference.name.clone();
        let namespace = self.reference.namespace.clone();
        match self.status.as_str() {
            "deployed" => Ok(()),
            s if s.starts_with("pending-") => Err(ReleaseError::StuckPending {
                name,
                namespace,
                status: s.to_string(),
                revision: self.revision,
            }),
            s => Err(ReleaseError::NotDeployed {
                name,
                namespace,
                status: s.to_string(),
                revision: self.revision,
            }),
        }
    }

    /// Runs `helm upgrade` of this release. Arguments go to helm as a list,
    /// never through a shell.
    pub async fn upgrade(&self, helm: &Helm, upgrade: &Upgrade) -> Result<(), ReleaseError> {
        let (args, _values_file) = self.upgrade_arguments(upgrade)?;
        tracing::info!(release = %self.reference.name, version = %upgrade.version, "helm upgrade");
        helm.run(args)
            .await
            .map_err(|source| ReleaseError::Upgrade {
                name: self.reference.name.clone(),
                version: upgrade.version.clone(),
                source,
            })?;
        Ok(())
    }

    /// Renders exactly the `helm upgrade` [`Release::upgrade`] would run,
    /// with `--dry-run=server`: the chart is fetched, the values parsed, the
    /// templates rendered with their `lookup`s answered by the cluster as the
    /// identity klm runs as, and every object checked by the API server, but
    /// nothing is changed. Returns what helm would store as the release
    /// (its manifest and hooks among it).
    pub async fn rehearse(&self, helm: &Helm, upgrade: &Upgrade) -> Result<Value, ReleaseError> {
        let (mut args, _values_file) = self.upgrade_arguments(upgrade)?;
        args.extend(["--dry-run=server".into(), "--output".into(), "json".into()]);
        tracing::debug!(release = %self.reference.name, version = %upgrade.version, "helm upgrade --dry-run=server");
        helm.json(args)
            .await
            .map_err(|source| ReleaseError::Refused {
                name: self.reference.name.clone(),
                namespace: self.reference.namespace.clone(),
                version: upgrade.version.clone(),
                source: Box::new(source),
            })
    }

    /// The arguments of a `helm upgrade` of this release, with the values
    /// file they name (kept alive by the caller while helm runs).
    fn upgrade_arguments(
        &self,
        upgrade: &Upgrade,
    ) -> Result<(Vec<std::ffi::OsString>, Option<crate::helm::ValuesFile>), ReleaseError> {
        let mut args: Vec<std::ffi::OsString> =
            vec!["upgrade".into(), self.reference.name.clone().into()];
        args.extend(chart_arguments(&upgrade.chart, &upgrade.version));
        args.extend([
            "--namespace".into(),
            self.reference.namespace.clone().into(),
        ]);
        let mut values_file = None;
        match &upgrade.values {
            Values::ResetThenReuse => args.push("--reset-then-reuse-values".into()),
            Values::Exactly(values) => {
                let file =
                    crate::helm::ValuesFile::new(values).map_err(|e| ReleaseError::Malformed {
                        name: self.reference.name.clone(),
                        reason: format!("cannot write a values file: {e}"),
                    })?;
                args.extend([
                    "--reset-values".into(),
                    "--values".into(),
                    file.path().as_os_str().to_owned(),
                ]);
                values_file = Some(file);
            }
        }
        for item in &upgrade.set {
            args.extend(["--set".into(), item.into()]);
        }
        for item in &upgrade.set_json {
            args.extend(["--set-json".into(), item.into()]);
        }
        if let Some(pin) = pin_mode(&upgrade.version, upgrade.mode) {
            args.extend(["--set".into(), pin.into()]);
        }
        if upgrade.no_hooks {
            args.push("--no-hooks".into());
        }
        if let Some(description) = &upgrade.description {
            args.extend(["--description".into(), description.into()]);
        }
        args.extend([
            "--timeout".into(),
            format!("{}s", upgrade.timeout.as_secs()).into(),
        ]);
        Ok((args, values_file))
    }

    /// Puts exactly `values` back on the release at `version`
    /// (`--reset-values --values FILE`). With `no_hooks`, no hook runs (job
    /// mode: the installer dispatcher does not run again) and the revision is
    /// described as [`VALUES_ONLY_DESCRIPTION`], so it is never taken for an
    /// install.
    #[allow(clippy::too_many_arguments)]
    pub async fn restore_values(
        &self,
        helm: &Helm,
        chart: &str,
        version: &str,
        values: &Value,
        mode: DeploymentMode,
        no_hooks: bool,
        timeout: std::time::Duration,
    ) -> Result<(), ReleaseError> {
        let file = crate::helm::ValuesFile::new(values).map_err(|e| ReleaseError::Malformed {
            name: self.reference.name.clone(),
            reason: format!("cannot write a values file: {e}"),
        })?;
        let mut args: Vec<std::ffi::OsString> =
            vec!["upgrade".into(), self.reference.name.clone().into()];
        args.extend(chart_arguments(chart, version));
        args.extend([
            "--namespace".into(),
            self.reference.namespace.clone().into(),
            "--reset-values".into(),
            "--values".into(),
            file.path().as_os_str().to_owned(),
            "--timeout".into(),
            format!("{}s", timeout.as_secs()).into(),
        ]);
        if let Some(pin) = pin_mode(version, mode) {
            args.extend(["--set".into(), pin.into()]);
        }
        if no_hooks {
            args.extend([
                "--no-hooks".into(),
                "--description".into(),
                VALUES_ONLY_DESCRIPTION.into(),
            ]);
        }
        tracing::info!(release = %self.reference.name, version, no_hooks, "helm upgrade: restoring the user's values");
        helm.run(args)
            .await
            .map_err(|source| ReleaseError::Upgrade {
                name: self.reference.name.clone(),
                version: version.to_string(),
                source,
            })?;
        Ok(())
    }

    /// The objects of a kind in the release's manifest.
    pub fn objects(&self, kind: &str) -> Result<Vec<ManifestObject>, ReleaseError> {
        Ok(self
            .parsed_objects(kind)?
            .into_iter()
            .map(|(object, _)| object)
            .collect())
    }

    /// The names of the RuntimeClasses in the release's manifest.
    pub fn runtime_class_names(&self) -> Result<std::collections::BTreeSet<String>, ReleaseError> {
        Ok(self
            .objects("RuntimeClass")?
            .into_iter()
            .map(|object| object.name)
            .collect())
    }

    /// The objects of a kind in the release's manifest, each with its
    /// document, in the manifest's order.
    fn parsed_objects(&self, kind: &str) -> Result<Vec<(ManifestObject, Value)>, ReleaseError> {
        let mut found = Vec::new();
        for document in manifest_documents(&self.manifest) {
            let value: Value =
                serde_saphyr::from_str(document).map_err(|e| ReleaseError::Malformed {
                    name: self.reference.name.clone(),
                    reason: format!("its manifest does not parse: {e}"),
                })?;
            if value.get("kind").and_then(Value::as_str) != Some(kind) {
                continue;
            }
            let metadata = value.get("metadata");
            let name = metadata
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let namespace = metadata
                .and_then(|m| m.get("namespace"))
                .and_then(Value::as_str)
                .unwrap_or(&self.reference.namespace);
            let object = ManifestObject {
                kind: kind.to_string(),
                name: name.to_string(),
                namespace: namespace.to_string(),
            };
            found.push((object, value));
        }
        Ok(found)
    }

    /// The kata-deploy DaemonSet of the release (daemonset mode): the one
    /// whose pods run kata-deploy's container ([`KATA_DEPLOY_CONTAINER`]).
    /// A release can hold other DaemonSets (node-feature-discovery's worker,
    /// which helm lists first, and kata-monitor), never to be taken for it.
    pub fn daemonset(&self) -> Result<ManifestObject, ReleaseError> {
        self.parsed_objects("DaemonSet")?
            .into_iter()
            .find(|(_, value)| runs_kata_deploy(value))
            .map(|(object, _)| object)
            .ok_or_else(|| ReleaseError::NoDaemonSet {
                name: self.reference.name.clone(),
            })
    }
}

/// The node selectors of the RuntimeClasses of a manifest
/// (`scheduling.nodeSelector`), one per RuntimeClass that has one: a node
/// lacking a label of one takes no new pod of that class.
pub fn runtime_class_node_labels(
    manifest: &str,
) -> Result<Vec<std::collections::BTreeMap<String, String>>, String> {
    let mut selectors = Vec::new();
    for document in manifest_documents(manifest) {
        let value: Value = serde_saphyr::from_str(document)
            .map_err(|e| format!("the manifest does not parse: {e}"))?;
        if value.get("kind").and_then(Value::as_str) != Some("RuntimeClass") {
            continue;
        }
        let Some(selector) = value
            .pointer("/scheduling/nodeSelector")
            .and_then(Value::as_object)
        else {
            continue;
        };
        selectors.push(
            selector
                .iter()
                .filter_map(|(key, value)| Some((key.clone(), value.as_str()?.to_string())))
                .collect(),
        );
    }
    Ok(selectors)
}

/// The name of kata-deploy's container in its DaemonSet's pods, the same
/// in every version of the chart: what tells its DaemonSet from the others
/// a release may hold.
pub const KATA_DEPLOY_CONTAINER: &str = "kube-kata";

/// Whether a DaemonSet document's pods run kata-deploy's container.
fn runs_kata_deploy(daemonset: &Value) -> bool {
    daemonset
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .is_some_and(|containers| {
            containers
                .iter()
                .any(|c| c.get("name").and_then(Value::as_str) == Some(KATA_DEPLOY_CONTAINER))
        })
}

/// The mode a release is in, from its coalesced values: no `deploymentMode`
/// key (charts before 3.32.0) means daemonset.
pub fn detect_mode(coalesced: &Value) -> Result<DeploymentMode, String> {
    match coalesced.get("deploymentMode") {
        None | Some(Value::Null) => Ok(DeploymentMode::Daemonset),
        Some(Value::String(s)) if s == "daemonset" => Ok(DeploymentMode::Daemonset),
        Some(Value::String(s)) if s == "job" => Ok(DeploymentMode::Job),
        Some(other) => Err(format!(
            "deploymentMode {other} is neither daemonset nor job"
        )),
    }
}

/// Splits a helm manifest into its YAML documents, dropping empty ones.
fn manifest_documents(manifest: &str) -> Vec<&str> {
    let mut documents = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in manifest.split_inclusive('\n') {
        if line.trim_end() == "---" {
            documents.push(&manifest[start..offset]);
            start = offset + line.len();
        }
        offset += line.len();
    }
    documents.push(&manifest[start..]);
    documents
        .into_iter()
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_upgrade_says_it_was_upgrading_and_keeps_helms_classification() {
        let err = ReleaseError::Upgrade {
            name: "kata-deploy".into(),
            version: "3.28.0".into(),
            source: HelmError::Failed {
                command: "helm upgrade kata-deploy".into(),
                code: 1,
                stderr: "Error: daemonsets.apps \"kata-deploy\" is forbidden".into(),
            },
        };
        assert_eq!(
            err.to_string(),
            "upgrading Helm release kata-deploy to 3.28.0"
        );
        assert_eq!(err.status(), ExitStatus::Precondition);
        assert!(err.hints()[0].contains("RBAC"));
    }
    use serde_json::json;

    fn release(status: &str, manifest: &str) -> Release {
        Release {
            reference: ReleaseRef {
                name: "kata-deploy".into(),
                namespace: "kube-system".into(),
            },
            revision: 4,
            status: status.into(),
            chart_name: "kata-deploy".into(),
            chart_version: "3.27.0".into(),
            app_version: "3.27.0".into(),
            user_values: json!({}),
            manifest: manifest.into(),
        }
    }

    #[test]
    fn stuck_releases_are_explained() {
        assert!(release("deployed", "").ensure_deployed().is_ok());
        let err = release("pending-upgrade", "")
            .ensure_deployed()
            .unwrap_err();
        assert_eq!(err.status(), ExitStatus::Precondition);
        assert!(
            err.to_string()
                .contains("stuck in pending-upgrade (revision 4)")
        );
        assert!(
            err.hints()
                .iter()
                .any(|h| h.contains("helm rollback kata-deploy -n kube-system"))
        );
        assert!(matches!(
            release("failed", "").ensure_deployed(),
            Err(ReleaseError::NotDeployed { .. })
        ));
    }

    #[test]
    fn the_daemonset_is_found_in_the_manifest_with_its_suffix() {
        // As the real chart with node-feature-discovery on lists them:
        // the subchart's worker first, then kata-deploy's, then kata-monitor's.
        let manifest = "---\n# Source: kata-deploy/templates/sa.yaml\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: kata-deploy-sa\n---\n# Source: kata-deploy/charts/node-feature-discovery/templates/worker.yaml\napiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: node-feature-discovery-worker\n  namespace: kata-system\nspec:\n  template:\n    spec:\n      containers:\n      - name: worker\n        image: registry.k8s.io/nfd/node-feature-discovery:v0.19.0\n---\n# Source: kata-deploy/templates/kata-deploy.yaml\napiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: kata-deploy-blue\n  namespace: kata-system\nspec:\n  template:\n    spec:\n      containers:\n      - name: kube-kata\n        image: quay.io/kata-containers/kata-deploy:3.30.0\n---\n# Source: kata-deploy/templates/kata-monitor.yaml\napiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: kata-monitor\nspec:\n  template:\n    spec:\n      containers:\n      - name: kata-monitor\n---\n";
        let ds = release("deployed", manifest).daemonset().unwrap();
        assert_eq!(
            ds,
            ManifestObject {
                kind: "DaemonSet".into(),
                name: "kata-deploy-blue".into(),
                namespace: "kata-system".into()
            }
        );
        assert!(matches!(
            release("deployed", "---\n# only a comment\n").daemonset(),
            Err(ReleaseError::NoDaemonSet { .. })
        ));
        // A release whose only DaemonSet is not kata-deploy's has none.
        let only_nfd = "---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: node-feature-discovery-worker\nspec:\n  template:\n    spec:\n      containers:\n      - name: worker\n";
        assert!(matches!(
            release("deployed", only_nfd).daemonset(),
            Err(ReleaseError::NoDaemonSet { .. })
        ));
    }

    #[test]
    fn runtime_classes_say_which_node_labels_they_select() {
        let manifest = "---\napiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata:\n  name: kata-qemu\nhandler: kata-qemu\nscheduling:\n  nodeSelector:\n    katacontainers.io/kata-runtime: \"true\"\n    kata-deploy.katacontainers.io/default: \"true\"\n---\napiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata:\n  name: kata-clh\nhandler: kata-clh\n---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: kata-deploy\n";
        let selectors = runtime_class_node_labels(manifest).unwrap();
        assert_eq!(selectors.len(), 1, "kata-clh selects no node label");
        assert_eq!(
            selectors[0].clone().into_iter().collect::<Vec<_>>(),
            vec![
                (
                    "kata-deploy.katacontainers.io/default".to_string(),
                    "true".to_string()
                ),
                (
                    "katacontainers.io/kata-runtime".to_string(),
                    "true".to_string()
                ),
            ]
        );
    }

    #[test]
    fn the_mode_is_pinned_only_where_the_chart_has_the_key() {
        assert_eq!(pin_mode("3.30.0", DeploymentMode::Daemonset), None);
        assert_eq!(
            pin_mode("3.32.0", DeploymentMode::Daemonset).as_deref(),
            Some("deploymentMode=daemonset")
        );
        assert_eq!(
            pin_mode("0.0.0-dev", DeploymentMode::Job).as_deref(),
            Some("deploymentMode=job")
        );
    }

    #[test]
    fn mode_is_daemonset_unless_the_release_says_job() {
        assert_eq!(detect_mode(&json!({})), Ok(DeploymentMode::Daemonset));
        assert_eq!(
            detect_mode(&json!({"deploymentMode": "daemonset"})),
            Ok(DeploymentMode::Daemonset)
        );
        assert_eq!(
            detect_mode(&json!({"deploymentMode": "job"})),
            Ok(DeploymentMode::Job)
        );
        assert!(detect_mode(&json!({"deploymentMode": "operator"})).is_err());
    }
}
