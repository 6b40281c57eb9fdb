//! The real-chart tier: klm against the real kata-deploy chart, packaged
//! unchanged at the versions that matter, in the directory named by
//! `KLM_KATA_DEPLOY_CHARTS` (`helm pull
//! oci://ghcr.io/kata-containers/kata-deploy-charts/kata-deploy --version V`
//! saves them as it needs them). Each test installs a real package as an
//! admin on its own namespace and kwok nodes of the rig (the simulator plays
//! the real pods, dispatcher and Jobs), then runs klm as the
//! kata-lifecycle-manager chart's ServiceAccount and asserts the end state.
//! Unset, every test prints one line and passes.
//!
//! The tests assert what klm must do; where klm does not yet, they fail.

#[allow(dead_code)]
#[path = "../integration/support.rs"]
mod support;

mod agreement;
mod daemonset;
mod hooks;
mod job;
mod real;

#[test]
fn the_fixture_agrees_with_the_real_chart_on_what_klm_reads() {
    let charts = real_charts!();
    agreement::check(charts);
}

#[test]
fn the_real_dispatcher_hooks_are_known_and_their_copies_never_prune() {
    let charts = real_charts!();
    hooks::check(charts);
}
