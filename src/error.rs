//! How failures become exit codes and messages.
//!
//! Every module has its own `thiserror` enum describing its failures; each
//! implements [`Classify`] so the binary's edge can map any of them to one of
//! the documented exit codes and print the hints that say what to do.

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
        match &self.source {
            kube::Error::Api(status) => Some(status.code),
            _ => None,
        }
    }
}

impl Classify for KubeError {
    fn status(&self) -> ExitStatus {
        match self.code() {
            Some(403) => ExitStatus::Precondition,
            _ => ExitStatus::Failed,
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

/// Finds the classification of an error chain: the outermost error that
/// knows its exit status wins; anything unclassified is a failure (exit 1).
pub fn classify(err: &anyhow::Error) -> (ExitStatus, Vec<String>) {
    for cause in err.chain() {
        if let Some(found) = classified(cause) {
            return (found.status(), found.hints());
        }
    }
    (ExitStatus::Failed, Vec::new())
}

/// The registry of classified error types: every `Classify` type of the
/// crate is listed here once, so `classify` can find it in an error chain.
fn classified<'a>(cause: &'a (dyn std::error::Error + 'static)) -> Option<&'a dyn Classify> {
    macro_rules! try_types {
        ($($ty:ty),* $(,)?) => {
            $(if let Some(e) = cause.downcast_ref::<$ty>() { return Some(e); })*
        };
    }
    try_types!(
        UserError,
        KubeError,
        crate::helm::HelmError,
        crate::release::ReleaseError,
        crate::verification::VerificationError,
        crate::wait::WaitError,
        crate::run_record::RecordError,
        crate::nodes::hold::HoldError,
        crate::kata_deploy::KataDeployError,
        crate::drain::DrainError,
    );
    None
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

/// Renders an error for stderr: `klm: error: <what>: <why>` then `hint:` lines.
pub fn render(err: &anyhow::Error, hints: &[String]) -> String {
    let mut out = format!("klm: error: {}", describe(err));
    for hint in hints {
        out.push_str("\nhint: ");
        out.push_str(hint);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn classification_finds_the_typed_error_under_context() {
        let err = Err::<(), _>(
            UserError::bad_input("batch size must be at least 1")
                .hint("pass --batch-size 1 or more"),
        )
        .context("while planning waves")
        .unwrap_err();
        let (status, hints) = classify(&err);
        assert_eq!(status, ExitStatus::BadInput);
        assert_eq!(status.code(), 2);
        assert_eq!(hints, vec!["pass --batch-size 1 or more".to_string()]);
        assert_eq!(
            render(&err, &hints),
            "klm: error: while planning waves: batch size must be at least 1\nhint: pass --batch-size 1 or more"
        );
    }

    #[test]
    fn api_errors_read_as_the_apiservers_message() {
        let status = kube::core::Status::failure(
            "nodes is forbidden: User \"x\" cannot list resource \"nodes\"",
            "Forbidden",
        )
        .with_code(403);
        let err = anyhow::Error::new(KubeError::new(
            "listing nodes",
            kube::Error::Api(Box::new(status)),
        ));
        assert_eq!(classify(&err).0, ExitStatus::Precondition);
        assert_eq!(
            describe(&err),
            "listing nodes: nodes is forbidden: User \"x\" cannot list resource \"nodes\""
        );
    }

    #[test]
    fn unclassified_errors_are_failures() {
        let err = anyhow::anyhow!("boom");
        assert_eq!(classify(&err).0, ExitStatus::Failed);
    }
}
