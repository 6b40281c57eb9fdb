//! Verification pods for the rig, built one way for every tier. What the
//! simulated kubelet (kwok) or the rig's verdict task does with such a pod
//! is in its annotations: `rig.klm.test/outcome` (`succeed`, `fail`, `hold`,
//! `pending`, or a hopeless state), per-node overrides, the exit code, or a
//! verdict decided from the version the node's host runs ([`crate::verdicts`]).

use std::path::{Path, PathBuf};

/// A verification pod template (`${NODE}` and `${TEST_POD}` left for klm).
#[derive(Debug, Clone)]
pub struct VerificationPod {
    outcome: String,
    fail_on: Vec<String>,
    exit_code: Option<i32>,
    runtime_class: Option<String>,
    node_labels: Vec<(String, String)>,
    broken_at: Option<(String, Vec<String>)>,
    tolerate_everything: bool,
}

impl VerificationPod {
    /// A pod the rig completes with `outcome`; it tolerates the cordon taint,
    /// as a verification pod on a cordoned node must.
    pub fn new(outcome: &str) -> Self {
        Self {
            outcome: outcome.to_string(),
            fail_on: Vec::new(),
            exit_code: None,
            runtime_class: None,
            node_labels: Vec::new(),
            broken_at: None,
            tolerate_everything: false,
        }
    }

    /// A pod that passes.
    pub fn succeeding() -> Self {
        Self::new("succeed")
    }

    /// ... except on these nodes, where it fails.
    pub fn failing_on(mut self, nodes: &[&str]) -> Self {
        self.fail_on = nodes.iter().map(|n| n.to_string()).collect();
        self
    }

    /// The exit code its container fails with.
    pub fn exit_code(mut self, code: i32) -> Self {
        self.exit_code = Some(code);
        self
    }

    /// Runs with this RuntimeClass (what a real check of Kata does).
    pub fn runtime_class(mut self, name: &str) -> Self {
        self.runtime_class = Some(name.to_string());
        self
    }

    /// Also selects nodes with this label (one no node has: unschedulable).
    pub fn node_label(mut self, key: &str, value: &str) -> Self {
        self.node_labels.push((key.to_string(), value.to_string()));
        self
    }

    /// Fails on `nodes` (every node when empty) while their simulated host
    /// runs `version`, passes otherwise: a broken new version, rolled back.
    pub fn broken_at(mut self, version: &str, nodes: &[&str]) -> Self {
        self.outcome = "pending".into();
        self.broken_at = Some((
            version.to_string(),
            nodes.iter().map(|n| n.to_string()).collect(),
        ));
        self
    }

    /// Tolerates every taint, not only the cordon's.
    pub fn tolerating_everything(mut self) -> Self {
        self.tolerate_everything = true;
        self
    }

    /// The pod as YAML.
    pub fn yaml(&self) -> String {
        let mut metadata = String::from("metadata:\n  name: ${TEST_POD}\n");
        let mut annotations = format!("    rig.klm.test/outcome: {}\n", self.outcome);
        for node in &self.fail_on {
            annotations.push_str(&format!("    node.rig.klm.test/{node}: fail\n"));
        }
        if let Some(code) = self.exit_code {
            annotations.push_str(&format!("    rig.klm.test/exit-code: \"{code}\"\n"));
        }
        if let Some((version, nodes)) = &self.broken_at {
            metadata.push_str(&format!(
                "  labels:\n    {}: by-version\n",
                crate::verdicts::BY_VERSION_LABEL
            ));
            annotations.push_str(&format!(
                "    {}: \"{version}\"\n",
                crate::verdicts::BROKEN_VERSION
            ));
            // No list: broken on every node.
            if !nodes.is_empty() {
                annotations.push_str(&format!(
                    "    {}: \"{}\"\n",
                    crate::verdicts::BROKEN_NODES,
                    nodes.join(",")
                ));
            }
        }
        metadata.push_str("  annotations:\n");
        metadata.push_str(&annotations);
        let mut spec = String::from("spec:\n");
        if let Some(class) = &self.runtime_class {
            spec.push_str(&format!("  runtimeClassName: {class}\n"));
        }
        spec.push_str(
            "  restartPolicy: Never\n  nodeSelector:\n    kubernetes.io/hostname: ${NODE}\n",
        );
        for (key, value) in &self.node_labels {
            spec.push_str(&format!("    {key}: {value}\n"));
        }
        if self.tolerate_everything {
            spec.push_str("  tolerations:\n    - operator: Exists\n");
        } else {
            spec.push_str("  tolerations:\n    - key: node.kubernetes.io/unschedulable\n      operator: Exists\n      effect: NoSchedule\n");
        }
        spec.push_str("  containers:\n    - name: verify\n      image: registry.invalid/kata-verify:1\n      command: [\"true\"]\n");
        format!("apiVersion: v1\nkind: Pod\n{metadata}{spec}")
    }

    /// Writes the YAML to `dir/<name>.yaml` and returns the path.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, self.yaml()).expect("write the verification pod");
        path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_says_its_fate_in_annotations() {
        let yaml = VerificationPod::succeeding()
            .failing_on(&["w2"])
            .exit_code(7)
            .runtime_class("kata-qemu")
            .yaml();
        let pod: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
        let annotations = &pod["metadata"]["annotations"];
        assert_eq!(annotations["rig.klm.test/outcome"], "succeed");
        assert_eq!(annotations["node.rig.klm.test/w2"], "fail");
        assert_eq!(annotations["rig.klm.test/exit-code"], "7");
        assert_eq!(pod["spec"]["runtimeClassName"], "kata-qemu");
        assert_eq!(
            pod["spec"]["nodeSelector"]["kubernetes.io/hostname"],
            "${NODE}"
        );
        assert_eq!(
            pod["spec"]["tolerations"][0]["key"],
            "node.kubernetes.io/unschedulable"
        );

        let broken: serde_json::Value = serde_saphyr::from_str(
            &VerificationPod::succeeding()
                .broken_at("3.28.0", &[])
                .yaml(),
        )
        .unwrap();
        assert_eq!(
            broken["metadata"]["labels"]["rig.klm.test/verdict"],
            "by-version"
        );
        assert_eq!(
            broken["metadata"]["annotations"]["rig.klm.test/outcome"],
            "pending"
        );
        assert_eq!(
            broken["metadata"]["annotations"]["rig.klm.test/broken-version"],
            "3.28.0"
        );
        assert!(
            broken["metadata"]["annotations"]
                .get("rig.klm.test/broken-nodes")
                .is_none(),
            "no node list: broken on every node"
        );
    }
}
