//! The workflow tier: the chart's WorkflowTemplate run the way users run it,
//! `helm install` then `argo submit --from workflowtemplate/...`, by a real
//! Argo workflow-controller whose step pods run the image under test on a
//! real kubelet node, upgrading kwok nodes of the rig. Every test asserts
//! what happened in the cluster, not only the workflow's phase.

#[path = "../integration/support.rs"]
#[allow(dead_code)]
mod support;

mod capacity;
mod flow;
mod gates;
mod interrupted;
mod submit;
mod upgrade;
