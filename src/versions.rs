//! Versions and deployment models of kata-deploy, and the rules that depend on
//! them (see kata-deploy-facts: updateStrategy from 3.27.0, job mode from
//! 3.32.0, job-mode pruning of unselected nodes from 4.1.0).

use std::fmt;

use clap::ValueEnum;
use semver::Version;

use crate::error::UserError;

/// First chart version whose DaemonSet honours `updateStrategy` (OnDelete).
pub const MIN_DAEMONSET: Version = Version::new(3, 27, 0);
/// First chart version with job mode.
pub const MIN_JOB: Version = Version::new(3, 32, 0);
/// First chart version whose job-mode dispatcher uninstalls Kata from every
/// installed node outside `job.nodes`.
pub const JOB_PRUNES_FROM: Version = Version::new(4, 1, 0);

/// kata-deploy's installation model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeploymentMode {
    /// A resident DaemonSet installs Kata on each node.
    Daemonset,
    /// A dispatcher Job fans out per-node install Jobs.
    Job,
}

impl DeploymentMode {
    /// The value of kata-deploy's `deploymentMode` key.
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentMode::Daemonset => "daemonset",
            DeploymentMode::Job => "job",
        }
    }

    /// The lowest chart version that supports being driven in this mode.
    pub fn minimum(self) -> Version {
        match self {
            DeploymentMode::Daemonset => MIN_DAEMONSET,
            DeploymentMode::Job => MIN_JOB,
        }
    }
}

impl fmt::Display for DeploymentMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The mode a user asks for: a concrete one, or auto (follow the release).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeChoice {
    /// Follow the release's current mode.
    Auto,
    /// The DaemonSet model.
    Daemonset,
    /// The Job model.
    Job,
}

impl ModeChoice {
    /// The concrete mode, if one was asked for.
    pub fn explicit(self) -> Option<DeploymentMode> {
        match self {
            ModeChoice::Auto => None,
            ModeChoice::Daemonset => Some(DeploymentMode::Daemonset),
            ModeChoice::Job => Some(DeploymentMode::Job),
        }
    }
}

/// Parses a chart version (`3.28.0`, `v3.28.0`, `0.0.0-dev`), with a message
/// that says what is expected.
pub fn parse(raw: &str) -> Result<Version, UserError> {
    let trimmed = raw.trim();
    let bare = trimmed.strip_prefix('v').unwrap_or(trimmed);
    Version::parse(bare).map_err(|e| {
        UserError::bad_input(format!("{raw:?} is not a valid version: {e}"))
            .hint("give a kata-deploy chart version in semver form, e.g. --target-version 3.28.0")
    })
}

/// `--target-version` (and every other version flag) as clap parses it:
/// the message of [`parse`] and its hint, so that a bad version exits 2
/// before a step starts.
pub fn parse_flag(raw: &str) -> Result<Version, String> {
    if raw.trim().is_empty() {
        return Err("no version given: give the kata-deploy chart version, e.g. 3.28.0 (in Argo: -p target-version=3.28.0)".into());
    }
    parse(raw).map_err(|e| e.to_string())
}

/// Whether a version is a development build of kata-deploy's main branch
/// (`0.0.0-dev`), which has every feature of the newest release.
pub fn is_dev(version: &Version) -> bool {
    version.major == 0 && version.minor == 0 && version.patch == 0 && !version.pre.is_empty()
}

/// Orders versions with development builds above every release.
pub fn at_least(version: &Version, minimum: &Version) -> bool {
    is_dev(version) || version >= minimum
}

/// Whether job mode at this version uninstalls Kata from installed nodes
/// outside `job.nodes`, which makes wave-scoped upgrades unsafe.
pub fn job_mode_prunes(version: &Version) -> bool {
    at_least(version, &JOB_PRUNES_FROM)
}

/// Whether a job-mode run between these versions dispatches each wave with
/// a copy of the release's own dispatcher ([`crate::dispatch`]) instead of a
/// helm upgrade scoped with `job.nodes`: where either version prunes.
pub fn runs_own_dispatcher(before: &Version, target: &Version) -> bool {
    job_mode_prunes(before) || job_mode_prunes(target)
}

/// Checks a target version against the mode's minimum.
pub fn check_minimum(target: &Version, mode: DeploymentMode) -> Result<(), UserError> {
    let minimum = mode.minimum();
    if at_least(target, &minimum) {
        return Ok(());
    }
    let why = match mode {
        DeploymentMode::Daemonset => {
            "the DaemonSet's updateStrategy (OnDelete), which node-by-node upgrades rely on, exists from 3.27.0"
        }
        DeploymentMode::Job => "kata-deploy's job mode exists from 3.32.0",
    };
    Err(UserError::bad_input(format!(
        "target version {target} is below {minimum}, the minimum for {mode} mode"
    ))
    .hint(format!("{why}; choose --target-version {minimum} or later")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_from_or_to_a_pruning_version_dispatch_their_own_waves() {
        let v = |s: &str| parse(s).unwrap();
        assert!(!runs_own_dispatcher(&v("3.32.0"), &v("4.0.0")));
        assert!(runs_own_dispatcher(&v("4.0.0"), &v("4.1.0")));
        assert!(runs_own_dispatcher(&v("4.1.0"), &v("4.0.9")));
        assert!(runs_own_dispatcher(&v("4.1.0"), &v("0.0.0-dev")));
    }

    #[test]
    fn versions_parse_with_or_without_a_v() {
        assert_eq!(parse("3.28.0").unwrap(), Version::new(3, 28, 0));
        assert_eq!(parse("v3.28.0").unwrap(), Version::new(3, 28, 0));
        assert!(parse("0.0.0-dev").is_ok());
        let err = parse("3.28").unwrap_err();
        assert!(
            err.message.contains("not a valid version"),
            "{}",
            err.message
        );
        assert!(parse("latest").is_err());
    }

    #[test]
    fn minimums_follow_the_mode() {
        assert!(check_minimum(&Version::new(3, 27, 0), DeploymentMode::Daemonset).is_ok());
        assert!(check_minimum(&Version::new(3, 26, 9), DeploymentMode::Daemonset).is_err());
        assert!(check_minimum(&Version::new(3, 31, 0), DeploymentMode::Job).is_err());
        assert!(check_minimum(&Version::new(3, 32, 0), DeploymentMode::Job).is_ok());
        assert!(check_minimum(&parse("0.0.0-dev").unwrap(), DeploymentMode::Job).is_ok());
        let err = check_minimum(&Version::new(3, 20, 0), DeploymentMode::Daemonset).unwrap_err();
        assert!(err.hints[0].contains("3.27.0"));
    }

    #[test]
    fn pruning_starts_at_4_1() {
        assert!(!job_mode_prunes(&Version::new(4, 0, 9)));
        assert!(job_mode_prunes(&Version::new(4, 1, 0)));
        assert!(job_mode_prunes(&parse("0.0.0-dev").unwrap()));
    }
}
