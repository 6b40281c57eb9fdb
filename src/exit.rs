//! How an error becomes klm's exit code and message; only `main.rs` uses it.
//!
//! [`classify`] walks an error chain for the outermost error that knows its
//! exit status (any [`Classify`] type of the crate, listed once in
//! `classified`); [`render`] prints the chain and its hints for stderr.

use crate::error::{Classify, ExitStatus, KubeError, UserError, describe};

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
        crate::dispatch::DispatchError,
    );
    None
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
