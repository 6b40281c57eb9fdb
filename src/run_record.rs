//! PLACEHOLDER
/// Placeholder.
#[derive(Debug, thiserror::Error)]
#[error("record")]
pub struct RecordError;
impl crate::error::Classify for RecordError {
    fn status(&self) -> crate::error::ExitStatus {
        crate::error::ExitStatus::Failed
    }
}
