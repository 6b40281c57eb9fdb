//! The test rig: a real Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler) on loopback, kwok simulating the
//! nodes and their pods, a kata-deploy simulator playing what kata-deploy does
//! on a host, and a real `helm`, all built from Go modules by
//! `tests/rig/build.sh`.
//!
//! Tests share one rig per test binary ([`Rig::shared`]) and isolate
//! themselves by namespace and node names.
//!
//! The Argo tier ([`argo`], [`Rig::shared_with_argo`]) adds a real node
//! (containerd, runc and a kubelet, [`real_node`]) and Argo's
//! workflow-controller, with the image under test imported ([`image`]).

pub mod argo;
pub mod argo_crds;
pub mod audit;
pub mod charts;
pub mod control_plane;
pub mod image;
pub mod image_cli;
pub mod kubeconfig;
pub mod metrics;
pub mod nodes;
pub mod oci;
pub mod oci_check;
pub mod pki;
pub mod process;
pub mod publish;
pub mod real_node;
pub mod registry;
pub mod rig;
pub mod simulator;
pub mod token_server;
pub mod verdicts;
pub mod verification_pod;

pub use audit::AuditRequest;
pub use nodes::NodeSpec;
pub use rig::Rig;
