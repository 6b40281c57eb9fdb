//! The verification pod template: read from a file, stdin or base64, and
//! validated before anything changes. `${NODE}` and `${TEST_POD}` are
//! substituted per node.

use std::io::Read;
use std::path::Path;

use base64::Engine;
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use crate::annotations;
use crate::args::VerificationArgs;
use crate::error::UserError;

/// The placeholder for the node's name.
pub const NODE: &str = "${NODE}";
/// The placeholder for the pod's name.
pub const TEST_POD: &str = "${TEST_POD}";
/// The taint `kubectl cordon` puts on a node; the pod must tolerate it.
const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
const EXAMPLE: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: ${TEST_POD}\nspec:\n  runtimeClassName: kata-qemu\n  restartPolicy: Never\n  nodeSelector:\n    kubernetes.io/hostname: ${NODE}\n  tolerations:\n    - key: node.kubernetes.io/unschedulable\n      operator: Exists\n      effect: NoSchedule\n  containers:\n    - name: verify\n      image: <your image>\n      command: [<your check>]";

/// A validated verification pod template.
#[derive(Debug, Clone)]
pub struct VerificationPod {
    raw: String,
    namespace: String,
}

impl VerificationPod {
    /// The template named by the flags, validated; `None` when no pod was given.
    pub fn from_args(args: &VerificationArgs) -> Result<Option<Self>, UserError> {
        let raw = if let Some(path) = &args.verification_pod {
            read_source(path)?
        } else if let Some(encoded) = &args.verification_pod_base64 {
            decode_base64("--verification-pod-base64", encoded)?
        } else {
            return Ok(None);
        };
        Self::parse(&raw, &args.verification_namespace).map(Some)
    }

    /// Validates a template for pods in `namespace`.
    pub fn parse(raw: &str, namespace: &str) -> Result<Self, UserError> {
        let documents: Vec<Value> = serde_saphyr::from_multiple(raw).map_err(|e| {
            bad(format!("the verification pod is not valid YAML: {e}"))
                .hint(format!("a verification pod looks like:\n{EXAMPLE}"))
        })?;
        let documents: Vec<&Value> = documents.iter().filter(|d| !d.is_null()).collect();
        let pod = match documents.as_slice() {
            [one] => *one,
            [] => {
                return Err(bad("the verification pod is empty")
                    .hint(format!("a verification pod looks like:\n{EXAMPLE}")));
            }
            many => {
                return Err(bad(format!(
                    "the verification pod has {} YAML documents; give exactly one Pod",
                    many.len()
                ))
                .hint("remove the other documents (lines after `---`)"));
            }
        };
        validate(pod, namespace)?;
        Ok(Self {
            raw: raw.to_string(),
            namespace: namespace.to_string(),
        })
    }

    /// The namespace the pods run in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The pod for one node: placeholders substituted, our name, namespace
    /// and labels (naming the run and the node) set.
    pub fn for_node(&self, node: &str, run_id: &str) -> Result<Pod, UserError> {
        let name = pod_name(node, run_id);
        let text = self.raw.replace(NODE, node).replace(TEST_POD, &name);
        let mut pod: Pod = serde_saphyr::from_str(&text).map_err(|e| {
            bad(format!(
                "the verification pod for node {node} does not parse as a Pod: {e}"
            ))
        })?;
        pod.metadata.name = Some(name);
        pod.metadata.namespace = Some(self.namespace.clone());
        pod.metadata.generate_name = None;
        let labels = pod.metadata.labels.get_or_insert_with(Default::default);
        labels.insert(annotations::POD_RUN_LABEL.into(), label_value(run_id));
        labels.insert(annotations::POD_NODE_LABEL.into(), label_value(node));
        Ok(pod)
    }
}

/// The pod's name on a node: `klm-verify-<node>`, with a hash of the node and
/// run when that is too long for a name.
pub fn pod_name(node: &str, run_id: &str) -> String {
    let hash = fnv(&format!("{node}/{run_id}"));
    let name = format!("klm-verify-{node}-{:06x}", hash & 0xff_ffff);
    if name.len() <= 63 && !node.contains('.') {
        return name;
    }
    let short: String = node.replace('.', "-").chars().take(40).collect();
    format!(
        "klm-verify-{}-{:06x}",
        short.trim_end_matches('-'),
        hash & 0xff_ffff
    )
}

/// A label value (at most 63 characters of [A-Za-z0-9._-], alphanumeric at the ends).
pub(crate) fn label_value(raw: &str) -> String {
    let cleaned: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut value: String = cleaned.chars().take(63).collect();
    while value.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        value.pop();
    }
    value
        .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn bad(message: impl Into<String>) -> UserError {
    UserError::bad_input(message)
}

fn read_source(path: &Path) -> Result<String, UserError> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| bad(format!("reading the verification pod from stdin: {e}")))?;
        return Ok(text);
    }
    std::fs::read_to_string(path).map_err(|e| {
        bad(format!(
            "cannot read the verification pod {}: {e}",
            path.display()
        ))
        .hint("pass --verification-pod with the path of a Pod YAML file")
    })
}

/// The text a base64 flag (`flag`, for the message) carries.
pub(super) fn decode_base64(flag: &str, encoded: &str) -> Result<String, UserError> {
    let compact: String = encoded.split_whitespace().collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| {
            bad(format!("{flag} is not valid base64: {e}"))
                .hint("encode the file with `base64 -w0 pod.yaml`")
        })?;
    String::from_utf8(bytes).map_err(|_| bad(format!("{flag} does not decode to UTF-8 text")))
}

/// Every rule a template must meet, each violation naming the field.
fn validate(pod: &Value, namespace: &str) -> Result<(), UserError> {
    let hint = |e: UserError| e.hint(format!("a verification pod looks like:\n{EXAMPLE}"));
    let kind = pod.get("kind").and_then(Value::as_str);
    if kind != Some("Pod") {
        return Err(hint(bad(format!(
            "the verification pod's kind is {}; it must be Pod",
            kind.map_or("missing".to_string(), |k| format!("{k:?}"))
        ))));
    }
    let api_version = pod.get("apiVersion").and_then(Value::as_str);
    if api_version != Some("v1") {
        return Err(hint(bad(format!(
            "the verification pod's apiVersion is {}; it must be v1",
            api_version.map_or("missing".to_string(), |v| format!("{v:?}"))
        ))));
    }
    let metadata = pod.get("metadata");
    if let Some(name) = metadata.and_then(|m| m.get("name")).and_then(Value::as_str)
        && name != TEST_POD
    {
        return Err(bad(format!(
            "metadata.name is {name:?}; write ${{TEST_POD}} (or leave it out): klm names one pod per node and run"
        )));
    }
    if let Some(ns) = metadata
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        && ns != namespace
    {
        return Err(bad(format!(
            "metadata.namespace is {ns:?} but --verification-namespace is {namespace:?}"
        ))
        .hint("remove metadata.namespace or pass the same --verification-namespace"));
    }
    let Some(spec) = pod.get("spec").filter(|s| s.is_object()) else {
        return Err(hint(bad("the verification pod has no spec")));
    };
    if spec
        .get("containers")
        .and_then(Value::as_array)
        .is_none_or(|c| c.is_empty())
    {
        return Err(hint(bad(
            "spec.containers is empty: the pod must run your check",
        )));
    }
    if spec.get("restartPolicy").and_then(Value::as_str) == Some("Always") {
        return Err(bad(
            "spec.restartPolicy is Always: the pod would never finish; use Never (or OnFailure)",
        ));
    }
    if !pinned_to_node(spec) {
        return Err(hint(bad(
            "the verification pod is not pinned to ${NODE}: set spec.nodeSelector.\"kubernetes.io/hostname\": ${NODE} (or spec.nodeName: ${NODE}, or a required node affinity on ${NODE})",
        )));
    }
    if !tolerates_cordon(spec) {
        return Err(hint(bad(
            "spec.tolerations does not tolerate node.kubernetes.io/unschedulable: the node is cordoned while it is verified, so the pod would never be scheduled",
        )));
    }
    Ok(())
}

fn pinned_to_node(spec: &Value) -> bool {
    let by_name = spec.get("nodeName").and_then(Value::as_str) == Some(NODE);
    let by_selector = spec
        .get("nodeSelector")
        .and_then(|s| s.get(HOSTNAME_LABEL))
        .and_then(Value::as_str)
        == Some(NODE);
    let terms = spec
        .pointer("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array);
    let by_affinity = terms.is_some_and(|terms| {
        !terms.is_empty()
            && terms.iter().all(|term| {
                ["matchExpressions", "matchFields"].iter().any(|kind| {
                    term.get(kind)
                        .and_then(Value::as_array)
                        .is_some_and(|exprs| {
                            exprs.iter().any(|e| {
                                matches!(
                                    e.get("key").and_then(Value::as_str),
                                    Some(HOSTNAME_LABEL | "metadata.name")
                                ) && e.get("operator").and_then(Value::as_str) == Some("In")
                                    && e.get("values").and_then(Value::as_array).is_some_and(|v| {
                                        v.len() == 1 && v[0].as_str() == Some(NODE)
                                    })
                            })
                        })
                })
            })
    });
    by_name || by_selector || by_affinity
}

fn tolerates_cordon(spec: &Value) -> bool {
    // A pod with spec.nodeName bypasses the scheduler and so the cordon.
    if spec.get("nodeName").and_then(Value::as_str).is_some() {
        return true;
    }
    let Some(tolerations) = spec.get("tolerations").and_then(Value::as_array) else {
        return false;
    };
    tolerations.iter().any(|t| {
        let key = t.get("key").and_then(Value::as_str).unwrap_or("");
        let operator = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
        let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
        let effect_ok = effect.is_empty() || effect == "NoSchedule";
        match (key, operator) {
            ("", "Exists") => effect_ok,
            (UNSCHEDULABLE_TAINT, "Exists") => effect_ok,
            (UNSCHEDULABLE_TAINT, "Equal") => {
                effect_ok
                    && t.get("value")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .is_empty()
            }
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: ${TEST_POD}\nspec:\n  restartPolicy: Never\n  nodeSelector:\n    kubernetes.io/hostname: ${NODE}\n  tolerations:\n    - key: node.kubernetes.io/unschedulable\n      operator: Exists\n      effect: NoSchedule\n  containers:\n    - name: verify\n      image: busybox\n      command: [\"sh\", \"-c\", \"echo $NODE_NAME\"]\n";

    fn refused(raw: &str) -> String {
        let err = VerificationPod::parse(raw, "default").expect_err("refused");
        assert_eq!(err.status, crate::error::ExitStatus::BadInput);
        err.to_string()
    }

    #[test]
    fn a_good_template_is_accepted_and_substituted_per_node() {
        let template = VerificationPod::parse(GOOD, "default").unwrap();
        let pod = template.for_node("worker-1", "wf-42").unwrap();
        let name = pod.metadata.name.clone().unwrap();
        assert!(name.starts_with("klm-verify-worker-1-"), "{name}");
        assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
        let spec = pod.spec.unwrap();
        assert_eq!(spec.node_selector.unwrap()[HOSTNAME_LABEL], "worker-1");
        let labels = pod.metadata.labels.unwrap();
        assert_eq!(labels[annotations::POD_RUN_LABEL], "wf-42");
        assert_eq!(labels[annotations::POD_NODE_LABEL], "worker-1");
        // Shell variables that are not our placeholders stay as they are.
        assert!(spec.containers[0].command.as_ref().unwrap()[2].contains("$NODE_NAME"));
    }

    #[test]
    fn names_are_deterministic_valid_and_distinct_per_run() {
        let a = pod_name("worker-1", "run-a");
        assert_eq!(a, pod_name("worker-1", "run-a"));
        assert_ne!(a, pod_name("worker-1", "run-b"));
        let long = pod_name(&"n".repeat(60), "r");
        assert!(long.len() <= 63, "{long}");
        let dotted = pod_name("ip-10-0-0-1.eu-west-1.compute.internal", "r");
        assert!(!dotted.contains('.') && dotted.len() <= 63, "{dotted}");
    }

    #[test]
    fn pinning_by_node_name_or_affinity_is_accepted() {
        let by_name = GOOD.replace(
            "  nodeSelector:\n    kubernetes.io/hostname: ${NODE}\n",
            "  nodeName: ${NODE}\n",
        );
        VerificationPod::parse(&by_name, "default").unwrap();
        let by_affinity = GOOD.replace(
            "  nodeSelector:\n    kubernetes.io/hostname: ${NODE}\n",
            "  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n          - matchExpressions:\n              - {key: kubernetes.io/hostname, operator: In, values: [\"${NODE}\"]}\n",
        );
        VerificationPod::parse(&by_affinity, "default").unwrap();
        let catch_all = GOOD.replace("    - key: node.kubernetes.io/unschedulable\n      operator: Exists\n      effect: NoSchedule\n", "    - operator: Exists\n");
        VerificationPod::parse(&catch_all, "default").unwrap();
    }

    #[test]
    fn every_violation_names_its_field() {
        assert!(refused("").contains("empty"));
        assert!(refused("kind: [Pod\n").contains("not valid YAML"));
        assert!(refused(&format!("{GOOD}---\n{GOOD}")).contains("2 YAML documents"));
        assert!(
            refused(&GOOD.replace("kind: Pod", "kind: Deployment"))
                .contains("kind is \"Deployment\"")
        );
        assert!(
            refused(&GOOD.replace("apiVersion: v1", "apiVersion: apps/v1")).contains("apiVersion")
        );
        assert!(
            refused(&GOOD.replace("name: ${TEST_POD}", "name: my-pod")).contains("metadata.name")
        );
        assert!(
            refused(&GOOD.replace("metadata:\n", "metadata:\n  namespace: other\n"))
                .contains("metadata.namespace")
        );
        assert!(
            refused(&GOOD.replace(
                "kubernetes.io/hostname: ${NODE}",
                "kubernetes.io/hostname: worker-1"
            ))
            .contains("not pinned to ${NODE}")
        );
        assert!(
            refused(&GOOD.replace("node.kubernetes.io/unschedulable", "dedicated"))
                .contains("spec.tolerations")
        );
        assert!(
            refused(&GOOD.replace("restartPolicy: Never", "restartPolicy: Always"))
                .contains("spec.restartPolicy")
        );
        assert!(refused("apiVersion: v1\nkind: Pod\nmetadata: {}\n").contains("no spec"));
    }

    #[test]
    fn base64_input_is_decoded_and_bad_base64_refused() {
        let encoded = base64::engine::general_purpose::STANDARD.encode(GOOD);
        assert_eq!(decode_base64("--flag", &encoded).unwrap(), GOOD);
        let err = decode_base64("--flag", "not base64!").unwrap_err();
        assert!(err.to_string().contains("not valid base64"));
    }
}
