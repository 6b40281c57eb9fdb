//! Chart tests: lint, deterministic rendering, golden files, template wiring, Argo validation.
//!
//! They render `chart/kata-lifecycle-manager` with the rig's helm
//! (`target/rig/bin/helm`, built by `make rig-bins`), then check the result
//! four ways: helm's own lint and the values schema (`lint`), the rendered
//! manifests against reviewed golden files (`golden`), the WorkflowTemplate's
//! wiring against klm's real command line (`wiring`), Argo's own validator
//! (`argo_lint`), and a real kube-apiserver with Argo's full CRDs
//! (`apiserver`); and the chart's RBAC, as the chart's ServiceAccount running
//! helm on the fixture kata-deploy (`rbac`).

mod apiserver;
mod argo_lint;
mod docs;
mod golden;
mod lint;
mod rbac;
mod render;
mod wiring;
