//! The vocabulary of failures: the documented exit codes ([`ExitStatus`]),
//! the [`Classify`] trait every error type implements, the small shared
//! error types ([`UserError`], [`KubeError`]) and [`describe`], which reads
//! an error chain as one line.
//!
//! Every module has its own `thiserror` enum describing its failures; each
//! implements [`Classify`]. This module imports nothing from the crate: the
//! binary's edge (`exit.rs`) maps any of them to an exit code and the
//! hints that say what to do.

use std::fmt;

/// The documented exit codes of every subcommand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExitStatus {
    /// 0: the step did what it was asked.
    Done,
    /// 1: the operation ran and failed (a node failed verification, a timeout).
    Failed,
    /// 2: the input was wrong; nothing was changed.
    BadInput,
    /// 3: a precondition in the cluster is not met; nothing was changed.
    Precondition,
}

impl ExitStatus {
    /// The process exit code for this status.
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Done => 0,
            ExitStatus::Failed => 1,
            ExitStatus::BadInput => 2,
            ExitStatus::Precondition => 3,
        }
    }
}

/// Implemented by every error type of the crate: which exit code it maps to,
/// and what the user can do about it.
pub trait Classify: std::error::Error + Send + Sync + 'static {
    /// The exit status this failure maps to.
    fn status(&self) -> ExitStatus;
    /// Lines telling the user what to do; printed as `hint:` lines.
    fn hints(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A failure that only needs a kind, a message and hints: used where a whole
/// enum would add nothing (argument checks in command modules).
#[derive(Debug)]
pub struct UserError {
    /// Which exit code this maps to.
    pub status: ExitStatus,
    /// What was wrong.
    pub message: String,
    /// What to do about it.
    pub hints: Vec<String>,
}

impl UserError {
    /// Bad input (exit 2): the arguments or files given are wrong.
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self {
            status: ExitStatus::BadInput,
            message: message.into(),
            hints: Vec::new(),
        }
    }

    /// A precondition (exit 3): the cluster is not in a state the step can start from.
    pub fn precondition(message: impl Into<String>) -> Self {
        Self {
            status: ExitStatus::Precondition,
            message: message.into(),
            hints: Vec::new(),
        }
    }

    /// The operation ran and failed (exit 1).
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            status: ExitStatus::Failed,
            message: message.into(),
            hints: Vec::new(),
        }
    }

    /// Adds a line saying what to do.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hints.push(hint.into());
        self
    }
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UserError {}

impl Classify for UserError {
    fn status(&self) -> ExitStatus {
        self.status
    }
    fn hints(&self) -> Vec<String> {
        self.hints.clone()
    }
}

/// Errors from the Kubernetes API, wrapped with what we were doing.
#[derive(Debug, thiserror::Error)]
#[error("{action}")]
pub struct KubeError {
    /// What klm was doing ("patching node worker-1").
    pub action: String,
    /// The API error.
    #[source]
    pub source: kube::Error,
}

impl KubeError {
    /// Wraps a kube error with the action that failed.
    pub fn new(action: impl Into<String>, source: kube::Error) -> Self {
        Self {
            action: action.into(),
            source,
        }
    }

    /// The HTTP status code of the API error, if the apiserver answered.
    pub fn code(&self) -> Option<u16> {
        api_status(&self.source).map(|status| status.code)
    }

    /// Whether the apiserver refused a write made against a stale
    /// resourceVersion (read again and retry).
    pub fn is_conflict(&self) -> bool {
        api_status(&self.source).is_some_and(kube::core::Status::is_conflict)
    }

    /// Whether the identity klm runs as lacks the permission.
    pub fn is_forbidden(&self) -> bool {
        api_status(&self.source).is_some_and(kube::core::Status::is_forbidden)
    }
}

/// The apiserver's answer inside a kube error, when it answered.
pub fn api_status(err: &kube::Error) -> Option<&kube::core::Status> {
    match err {
        kube::Error::Api(status) => Some(status),
        _ => None,
    }
}

/// Whether the apiserver answered that the object does not exist.
pub fn is_not_found(err: &kube::Error) -> bool {
    api_status(err).is_some_and(kube::core::Status::is_not_found)
}

/// Whether the apiserver answered "too many requests": for an eviction, a
/// PodDisruptionBudget that allows none now (kube's Status has no helper
/// for it; the reason is client-go's `StatusReasonTooManyRequests`).
pub fn is_too_many_requests(err: &kube::Error) -> bool {
    api_status(err).is_some_and(|s| s.code == 429 || s.reason == "TooManyRequests")
}

impl Classify for KubeError {
    fn status(&self) -> ExitStatus {
        if self.is_forbidden() {
            ExitStatus::Precondition
        } else {
            ExitStatus::Failed
        }
    }
    fn hints(&self) -> Vec<String> {
        match self.code() {
            Some(401) => vec!["the credentials were refused: check --kubeconfig/--context or the ServiceAccount token".into()],
            Some(403) => vec![
                "the identity klm runs as lacks this permission: install the chart's RBAC (chart/kata-lifecycle-manager/templates/rbac.yaml) or run as the chart's ServiceAccount".into(),
            ],
            None => vec!["the apiserver could not be reached: check the kubeconfig's server address and that the cluster is up".into()],
            _ => Vec::new(),
        }
    }
}

/// Extension to attach an action to a kube result.
pub trait KubeResultExt<T> {
    /// Wraps the error with what was being done.
    fn during(self, action: impl FnOnce() -> String) -> Result<T, KubeError>;
}

impl<T> KubeResultExt<T> for Result<T, kube::Error> {
    fn during(self, action: impl FnOnce() -> String) -> Result<T, KubeError> {
        self.map_err(|source| KubeError::new(action(), source))
    }
}

/// The error chain as one line, `<what>: <why>`, skipping layers that only
/// repeat the one above.
pub fn describe(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        // An API error ends the chain with the apiserver's own message (kube's
        // Display adds a Debug dump of the Status, and its source repeats it).
        if let Some(kube::Error::Api(status)) = cause.downcast_ref::<kube::Error>()
            && !status.message.is_empty()
        {
            if !parts
                .last()
                .is_some_and(|previous| previous.contains(&status.message))
            {
                parts.push(status.message.clone());
            }
            break;
        }
        let text = cause.to_string();
        if text.is_empty()
            || parts
                .last()
                .is_some_and(|previous| previous.contains(&text))
        {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}
