//! PLACEHOLDER
/// Placeholder.
#[derive(Debug, thiserror::Error)]
#[error("helm")]
pub struct HelmError;
impl crate::error::Classify for HelmError {
    fn status(&self) -> crate::error::ExitStatus {
        crate::error::ExitStatus::Failed
    }
}
