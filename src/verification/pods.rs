//! The verification pods of a run: the default pod, and a pod per pool
//! (by the value of the run's pool label) for pools that are verified their
//! own way (a GPU pool, a confidential-computing pool). Each node is
//! verified with its pool's pod, else with the default one.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;

use super::template::VerificationPod;
use crate::args::VerificationArgs;
use crate::error::UserError;

/// The default pod and the pools' pods.
#[derive(Debug, Clone, Default)]
pub struct Pods {
    default: Option<VerificationPod>,
    by_pool: BTreeMap<String, VerificationPod>,
}

impl Pods {
    /// The pods named by the flags, each validated like the default one.
    pub fn from_args(args: &VerificationArgs) -> Result<Pods, UserError> {
        let default = VerificationPod::from_args(args)?;
        let mut raw: BTreeMap<String, String> = BTreeMap::new();
        if let Some(encoded) = &args.pool_verification_pods_base64
            && !encoded.trim().is_empty()
        {
            raw.extend(decode_map(encoded)?);
        }
        for (pool, path) in &args.pool_verification_pods {
            let text = std::fs::read_to_string(path).map_err(|e| {
                UserError::bad_input(format!(
                    "cannot read pool {pool}'s verification pod {}: {e}",
                    path.display()
                ))
            })?;
            raw.insert(pool.clone(), text);
        }
        let mut by_pool = BTreeMap::new();
        for (pool, text) in raw {
            let pod = VerificationPod::parse(&text, &args.verification_namespace).map_err(|e| {
                let mut err =
                    UserError::bad_input(format!("pool {pool}'s verification pod: {}", e.message));
                err.hints = e.hints;
                err
            })?;
            by_pool.insert(pool, pod);
        }
        Ok(Pods { default, by_pool })
    }

    /// The default pod, if one was given.
    pub fn default_pod(&self) -> Option<&VerificationPod> {
        self.default.as_ref()
    }

    /// Whether no pod at all was given.
    pub fn is_empty(&self) -> bool {
        self.default.is_none() && self.by_pool.is_empty()
    }

    /// The pools that have their own pod.
    pub fn pools(&self) -> impl Iterator<Item = &str> {
        self.by_pool.keys().map(String::as_str)
    }

    /// Every pod given, the default first.
    pub fn all(&self) -> impl Iterator<Item = &VerificationPod> {
        self.default.iter().chain(self.by_pool.values())
    }

    /// Refuses pools' pods without a pool label to tell the pools apart.
    pub fn check_pool_label(&self, pool_label: Option<&str>) -> Result<(), UserError> {
        if self.by_pool.is_empty() || pool_label.is_some_and(|l| !l.trim().is_empty()) {
            return Ok(());
        }
        let pools: Vec<&str> = self.pools().collect();
        Err(UserError::bad_input(format!(
            "verification pods are given for pools {}, but no pool label says which node is in which pool",
            pools.join(", ")
        ))
        .hint("pass --pool-label (the workflow's pool-label parameter), e.g. node-pool"))
    }

    /// The pod that verifies a node in `pool`: its own, else the default.
    fn pod_for(&self, pool: Option<&str>) -> Option<&VerificationPod> {
        pool.and_then(|p| self.by_pool.get(p))
            .or(self.default.as_ref())
    }

    /// The pod of each node, by its value of `pool_label`; a node with no
    /// pod (no pool pod, no default) is bad input.
    pub fn assign<'a>(
        &'a self,
        nodes: &[Node],
        pool_label: Option<&str>,
    ) -> Result<Vec<(String, &'a VerificationPod)>, UserError> {
        nodes
            .iter()
            .map(|node| {
                let pool = pool_label.and_then(|label| node.labels().get(label)).map(String::as_str);
                match self.pod_for(pool) {
                    Some(pod) => Ok((node.name_any(), pod)),
                    None => Err(UserError::bad_input(format!(
                        "no verification pod for node {} (pool {})",
                        node.name_any(),
                        pool.unwrap_or("-")
                    ))
                    .hint("give a default pod (--verification-pod) or one for its pool (--pool-verification-pod POOL=PATH)")),
                }
            })
            .collect()
    }
}

/// Decodes the base64 YAML map of pool to pod YAML.
fn decode_map(encoded: &str) -> Result<BTreeMap<String, String>, UserError> {
    let text = super::template::decode_base64("--pool-verification-pods-base64", encoded)?;
    serde_saphyr::from_str::<Option<BTreeMap<String, String>>>(&text)
        .map(Option::unwrap_or_default)
        .map_err(|e| {
            UserError::bad_input(format!(
                "--pool-verification-pods-base64 is not a YAML map of pool to pod YAML: {e}"
            ))
            .hint("the chart passes verificationPods as {pool: |<pod YAML>}")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: ${TEST_POD}\nspec:\n  restartPolicy: Never\n  nodeSelector:\n    kubernetes.io/hostname: ${NODE}\n  tolerations:\n    - key: node.kubernetes.io/unschedulable\n      operator: Exists\n      effect: NoSchedule\n  containers:\n    - name: verify\n      image: IMAGE\n";

    fn args(default: bool, pools: &[(&str, &str)]) -> VerificationArgs {
        let encode = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
        let map: BTreeMap<&str, String> = pools
            .iter()
            .map(|(pool, image)| (*pool, POD.replace("IMAGE", image)))
            .collect();
        VerificationArgs {
            verification_pod: None,
            verification_pod_base64: default.then(|| encode(&POD.replace("IMAGE", "default"))),
            pool_verification_pods: Vec::new(),
            pool_verification_pods_base64: (!pools.is_empty())
                .then(|| encode(&serde_json::to_string(&map).unwrap())),
            verification_namespace: "default".into(),
            verification_timeout: std::time::Duration::from_secs(1),
            keep_failed: false,
        }
    }

    fn node(name: &str, pool: Option<&str>) -> Node {
        let mut node = Node::default();
        node.metadata.name = Some(name.into());
        if let Some(pool) = pool {
            node.metadata.labels = Some([("pool".to_string(), pool.to_string())].into());
        }
        node
    }

    fn image(pod: &VerificationPod) -> String {
        let pod = pod.for_node("n", "run").unwrap();
        pod.spec.unwrap().containers[0].image.clone().unwrap()
    }

    #[test]
    fn each_node_gets_its_pools_pod_else_the_default() {
        let pods =
            Pods::from_args(&args(true, &[("gpu", "gpu-check"), ("tdx", "tdx-check")])).unwrap();
        assert_eq!(pods.pools().collect::<Vec<_>>(), ["gpu", "tdx"]);
        let nodes = [
            node("g1", Some("gpu")),
            node("t1", Some("tdx")),
            node("c1", Some("cpu")),
            node("x1", None),
        ];
        let assigned: Vec<(String, String)> = pods
            .assign(&nodes, Some("pool"))
            .unwrap()
            .into_iter()
            .map(|(n, pod)| (n, image(pod)))
            .collect();
        assert_eq!(
            assigned,
            [
                ("g1".into(), "gpu-check".into()),
                ("t1".into(), "tdx-check".into()),
                ("c1".into(), "default".into()),
                ("x1".into(), "default".into())
            ]
        );
        assert_eq!(pods.all().count(), 3);
    }

    #[test]
    fn a_node_without_a_pod_and_pools_without_a_label_are_refused() {
        let pods = Pods::from_args(&args(false, &[("gpu", "gpu-check")])).unwrap();
        let err = pods
            .assign(&[node("c1", Some("cpu"))], Some("pool"))
            .unwrap_err();
        assert!(
            err.message
                .contains("no verification pod for node c1 (pool cpu)"),
            "{}",
            err.message
        );
        assert!(
            pods.check_pool_label(None)
                .unwrap_err()
                .message
                .contains("pools gpu")
        );
        assert!(pods.check_pool_label(Some("pool")).is_ok());
        assert!(
            Pods::from_args(&args(true, &[]))
                .unwrap()
                .check_pool_label(None)
                .is_ok()
        );
    }

    #[test]
    fn a_pools_pod_is_validated_like_the_default() {
        let mut bad = args(true, &[]);
        bad.pool_verification_pods_base64 =
            Some(base64::engine::general_purpose::STANDARD.encode("gpu: 'kind: Service'"));
        let err = Pods::from_args(&bad).unwrap_err();
        assert!(
            err.message.starts_with("pool gpu's verification pod:"),
            "{}",
            err.message
        );
        bad.pool_verification_pods_base64 = Some("%%%".into());
        assert!(
            Pods::from_args(&bad)
                .unwrap_err()
                .message
                .contains("not valid base64")
        );
    }
}
