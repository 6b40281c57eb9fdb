//! PLACEHOLDER
/// The official kata-deploy chart.
pub const DEFAULT_CHART: &str = "oci://ghcr.io/kata-containers/kata-deploy-charts/kata-deploy";
/// Placeholder.
#[derive(Debug, thiserror::Error)]
#[error("release")]
pub struct ReleaseError;
impl crate::error::Classify for ReleaseError {
    fn status(&self) -> crate::error::ExitStatus {
        crate::error::ExitStatus::Failed
    }
}
