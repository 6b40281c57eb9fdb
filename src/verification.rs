//! PLACEHOLDER
/// Placeholder.
#[derive(Debug, thiserror::Error)]
#[error("verification")]
pub struct VerificationError;
impl crate::error::Classify for VerificationError {
    fn status(&self) -> crate::error::ExitStatus {
        crate::error::ExitStatus::Failed
    }
}
