//! Running the WorkflowTemplate's steps as Argo would run them: the chart
//! is rendered for the case (its release, namespace and chart reference), and
//! each step runs klm with exactly that template's args and KLM_* environment,
//! Argo's `{{...}}` substituted, as the chart's ServiceAccount. Only two
//! things differ from a pod: the identity comes from the ServiceAccount's
//! kubeconfig instead of its mounted token, and the files the template writes
//! under the pod's /tmp go to a directory of the test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{Case, Klm, chart_reference, repo_root};

/// The rendered template of one case.
pub struct Workflow {
    templates: BTreeMap<String, Value>,
    parameters: BTreeMap<String, String>,
}

impl Workflow {
    /// `helm template` of the chart with the values the case installed it
    /// with, and `pod` as the verification pod.
    pub async fn render(case: &Case, pod: &Path) -> Workflow {
        Self::render_with(case, pod, &[]).await
    }

    /// Like [`Workflow::render`], with more chart values (`helm template` flags).
    pub async fn render_with(case: &Case, pod: &Path, extra: &[String]) -> Workflow {
        let chart = repo_root().join("chart/kata-lifecycle-manager");
        let mut args: Vec<String> = vec![
            "template".into(),
            format!("klm-{}", case.namespace),
            chart.display().to_string(),
            "--namespace".into(),
            case.namespace.clone(),
            "--set".into(),
            format!("argoNamespace={}", case.namespace),
            "--set".into(),
            format!("defaults.helmNamespace={}", case.namespace),
            "--set".into(),
            format!("defaults.helmRelease={}", case.release),
            "--set".into(),
            format!("defaults.verificationNamespace={}", case.namespace),
            "--set".into(),
            format!("kataDeploy.chart={}", chart_reference()),
            "--set-file".into(),
            format!("defaults.verificationPod={}", pod.display()),
        ];
        args.extend(extra.iter().cloned());
        let rendered = case.helm_admin(&args).await.expect("helm template");
        let template = rendered
            .split("\n---")
            .filter_map(|doc| serde_saphyr::from_str::<Value>(doc).ok())
            .find(|doc| doc["kind"] == "WorkflowTemplate")
            .expect("a WorkflowTemplate is rendered");
        let templates = template["spec"]["templates"]
            .as_array()
            .expect("templates")
            .iter()
            .map(|t| (t["name"].as_str().unwrap().to_string(), t.clone()))
            .collect();
        let parameters = template["spec"]["arguments"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["value"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        Workflow {
            templates,
            parameters,
        }
    }

    /// A template by name.
    pub fn template(&self, name: &str) -> &Value {
        self.templates
            .get(name)
            .unwrap_or_else(|| panic!("the WorkflowTemplate has no template {name}"))
    }
}

/// One submitted workflow: its name (the run id) and its parameters.
pub struct Submission<'a> {
    case: &'a Case,
    workflow: &'a Workflow,
    /// The workflow's name.
    pub name: String,
    parameters: BTreeMap<String, String>,
    /// Where the steps' /tmp files go.
    pub tmp: PathBuf,
}

impl<'a> Submission<'a> {
    /// `argo submit --from workflowtemplate/... -p k=v ...` named `name`.
    pub fn new(
        case: &'a Case,
        workflow: &'a Workflow,
        name: &str,
        parameters: &[(&str, &str)],
        tmp: &Path,
    ) -> Self {
        let mut all = workflow.parameters.clone();
        for (key, value) in parameters {
            assert!(
                all.contains_key(*key),
                "the WorkflowTemplate has no parameter {key}"
            );
            all.insert(key.to_string(), value.to_string());
        }
        Self {
            case,
            workflow,
            name: name.to_string(),
            parameters: all,
            tmp: tmp.to_path_buf(),
        }
    }

    fn substitute(&self, text: &str, inputs: &BTreeMap<String, String>) -> String {
        // The steps' own /tmp paths (a value that is one, or a flag's), not
        // every "/tmp/": the chart's path may itself lie under /tmp.
        let tmp = format!("{}/", self.tmp.display());
        let repo = repo_root().display().to_string();
        let mut out = match text.strip_prefix("/tmp/") {
            Some(rest) if !text.starts_with(&repo) => format!("{tmp}{rest}"),
            _ => text.replace("=/tmp/", &format!("={tmp}")),
        }
        .replace("{{workflow.name}}", &self.name);
        for (key, value) in &self.parameters {
            out = out.replace(&format!("{{{{workflow.parameters.{key}}}}}"), value);
        }
        for (key, value) in inputs {
            out = out.replace(&format!("{{{{inputs.parameters.{key}}}}}"), value);
        }
        assert!(
            !out.contains("{{"),
            "unresolved Argo variable in {text:?}: {out:?}"
        );
        out
    }

    /// Runs the step `template` with these input parameters: a container
    /// template's klm, or the containers of a containerSet one after the
    /// other (each in the order the template lists them, the order their
    /// dependencies chain), stopping at the first that fails, as Argo's
    /// executor does. Returns the last container's result.
    pub async fn step(&self, template: &str, inputs: &[(&str, &str)]) -> Klm {
        let step = self.workflow.template(template);
        if step["container"].is_object() {
            return self.run(template, &step["container"], inputs).await;
        }
        let containers = step["containerSet"]["containers"]
            .as_array()
            .unwrap_or_else(|| {
                panic!("template {template} is neither a container nor a containerSet")
            });
        let mut last = None;
        for container in containers {
            let name = container["name"].as_str().unwrap();
            let result = self
                .run(&format!("{template}/{name}"), container, inputs)
                .await;
            let failed = result.code != 0;
            last = Some(result);
            if failed {
                break;
            }
        }
        last.expect("a containerSet has containers")
    }

    /// Runs one container, `name`, of the containerSet template `template`.
    pub async fn container(&self, template: &str, name: &str, inputs: &[(&str, &str)]) -> Klm {
        let container = self.workflow.template(template)["containerSet"]["containers"]
            .as_array()
            .unwrap_or_else(|| panic!("template {template} is not a containerSet"))
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("template {template} has no container {name}"));
        self.run(&format!("{template}/{name}"), container, inputs)
            .await
    }

    async fn run(&self, label: &str, container: &Value, inputs: &[(&str, &str)]) -> Klm {
        let inputs: BTreeMap<String, String> = inputs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let command: Vec<&str> = container["command"]
            .as_array()
            .expect("a container step")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(command, ["klm"], "{label} runs klm");
        let args: Vec<String> = container["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| self.substitute(a.as_str().unwrap(), &inputs))
            .collect();
        let mut klm = tokio::process::Command::new(env!("CARGO_BIN_EXE_klm"));
        klm.args(&args)
            .arg("--kubeconfig")
            .arg(&self.case.sa_kubeconfig)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KLM_HELM", self.case.rig.helm())
            .env("KLM_LOG", "info");
        for env in container["env"].as_array().into_iter().flatten() {
            let name = env["name"].as_str().unwrap();
            let value = self.substitute(env["value"].as_str().unwrap_or_default(), &inputs);
            let value = if value == "/tmp" {
                self.tmp.display().to_string()
            } else {
                value
            };
            klm.env(name, value);
        }
        let output = klm.output().await.expect("klm runs");
        let result = Klm::from(output);
        // The step's report, for the test's log (shown when it fails).
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "step {label} {inputs:?}: exit {}\n{}{}",
                result.code, result.stdout, result.stderr
            );
        }
        result
    }
}

/// base64 (standard alphabet, padded), for the verification-pod parameter.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn base64_encodes_like_the_tool() {
    assert_eq!(base64(b"a"), "YQ==");
    assert_eq!(base64(b"ab"), "YWI=");
    assert_eq!(base64(b"abc"), "YWJj");
}
