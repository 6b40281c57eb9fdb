//! What a subcommand resolves from its flags: the release, helm, the
//! selection, the rollback settings, the step's nodes. These turn the shared
//! flags of [`crate::args`] into the library's types (bad input refused,
//! nothing changed); no step below `commands` sees a flag.

use crate::args::{GlobalArgs, ReleaseArgs, RollbackArgs, SelectionArgs};
use crate::error::UserError;
use crate::helm::Helm;
use crate::nodes::selection::Criteria;
use crate::release::ReleaseRef;
use crate::steps::rollback::{self, Reverify};
use crate::verification::Pods;

/// The release named by the flags (`--helm-release`, `--helm-namespace`).
pub fn release_ref(args: &ReleaseArgs) -> ReleaseRef {
    ReleaseRef {
        name: args.helm_release.clone(),
        namespace: args.helm_namespace.clone(),
    }
}

/// helm (`--helm`), pointed at the cluster klm uses, as the same identity
/// (the global connection flags).
pub fn helm(args: &ReleaseArgs, global: &GlobalArgs) -> Result<Helm, UserError> {
    let connection = crate::cluster::helm_connection(&global.client)?;
    Ok(Helm::new(args.helm.clone(), connection))
}

/// The selection criteria of the flags (`--node-selector`,
/// `--node-taint-key`, `--node-taint-value`), validated.
pub fn criteria(args: &SelectionArgs) -> Result<Criteria, UserError> {
    Criteria::new(
        args.node_selector.as_deref(),
        args.node_taint_key.as_deref(),
        args.node_taint_value.as_deref(),
    )
}

/// How a step rolls nodes back: from the flags' chart and helm timeout,
/// waiting `timeout` per node, and verifying them again with the
/// verification pods given (each node its pool's, else the default; none
/// given: no verification) at the flags' timeout.
pub fn rollback_settings(args: &RollbackArgs) -> Result<rollback::Settings, UserError> {
    let verification = &args.verification;
    let pods = Pods::from_args(verification)?;
    Ok(rollback::Settings {
        chart: args.chart.chart.clone(),
        helm_timeout: args.chart.helm_timeout,
        timeout: args.timeout,
        reverify: (!pods.is_empty()).then_some(Reverify {
            pods,
            timeout: verification.verification_timeout,
            keep_failed: verification.keep_failed,
        }),
    })
}
