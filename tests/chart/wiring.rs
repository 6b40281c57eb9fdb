//! The WorkflowTemplate's wiring, checked against klm itself: every step's
//! template exists, every `{{...}}` reference resolves where it is used,
//! every klm invocation parses with klm's own command line (clap), the JSON
//! fields the workflow reads are the ones klm prints, the wave loop has
//! parallelism 1 and failFast, and the exit handler exists.

use std::collections::{BTreeMap, BTreeSet};

use clap::{CommandFactory, Parser};
use kata_lifecycle_manager::cli::Cli;
use serde_json::Value;

use crate::render;

/// The rendered workflow template, indexed.
struct Workflow {
    kind: String,
    spec: Value,
    templates: BTreeMap<String, Value>,
    /// Workflow parameters and their default values (None: required).
    parameters: BTreeMap<String, Option<String>>,
}

impl Workflow {
    fn render(extra: &[&str]) -> Workflow {
        let docs = render::documents(&render::render(extra));
        let template = docs
            .iter()
            .find(|d| d["kind"] == "WorkflowTemplate" || d["kind"] == "ClusterWorkflowTemplate")
            .expect("a (Cluster)WorkflowTemplate is rendered");
        let spec = template["spec"].clone();
        let mut templates = BTreeMap::new();
        for t in spec["templates"].as_array().expect("spec.templates") {
            let name = t["name"].as_str().expect("template name").to_string();
            assert!(
                templates.insert(name.clone(), t.clone()).is_none(),
                "template {name} is defined twice"
            );
        }
        let parameters = spec["arguments"]["parameters"]
            .as_array()
            .expect("spec.arguments.parameters")
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().expect("parameter name").to_string(),
                    p.get("value").and_then(Value::as_str).map(String::from),
                )
            })
            .collect();
        Workflow {
            kind: template["kind"].as_str().unwrap_or_default().to_string(),
            spec,
            templates,
            parameters,
        }
    }

    fn template(&self, name: &str) -> &Value {
        self.templates
            .get(name)
            .unwrap_or_else(|| panic!("{}: template {name:?} does not exist", self.kind))
    }

    /// The steps of a steps template, group by group; a DAG's tasks as
    /// groups of one, in the order listed (which is their dependency order).
    fn groups<'a>(&self, template: &'a Value) -> Vec<Vec<&'a Value>> {
        if let Some(tasks) = template["dag"]["tasks"].as_array() {
            return tasks.iter().map(|t| vec![t]).collect();
        }
        template["steps"]
            .as_array()
            .map(|groups| {
                groups
                    .iter()
                    .map(|g| {
                        g.as_array()
                            .expect("a step group is a list")
                            .iter()
                            .collect()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The containers of a container or containerSet template, each with a
    /// label (`template` or `template/container`).
    fn containers<'a>(&self, name: &str, template: &'a Value) -> Vec<(String, &'a Value)> {
        if let Some(container) = template.get("container") {
            return vec![(name.to_string(), container)];
        }
        template["containerSet"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    format!("{name}/{}", c["name"].as_str().unwrap_or_default()),
                    c,
                )
            })
            .collect()
    }

    /// The klm arguments of a container template, if it runs klm.
    fn klm_args(&self, template: &Value) -> Option<Vec<String>> {
        Self::container_klm_args(template.get("container")?)
    }

    /// The klm arguments of the container `name` of a containerSet template.
    fn set_klm_args(&self, template: &str, name: &str) -> Vec<String> {
        let container = self.template(template)["containerSet"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("template {template} has no container {name}"));
        Self::container_klm_args(container)
            .unwrap_or_else(|| panic!("{template}/{name} does not run klm"))
    }

    /// The klm arguments of a container, if it runs klm.
    fn container_klm_args(container: &Value) -> Option<Vec<String>> {
        let command: Vec<&str> = container["command"]
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        if command != ["klm"] {
            return None;
        }
        Some(
            container["args"]
                .as_array()
                .expect("klm steps have args")
                .iter()
                .map(|a| a.as_str().expect("args are strings").to_string())
                .collect(),
        )
    }
}

/// Every `{{...}}` in a string: (is an expression `{{=...}}`, the inside).
fn placeholders(text: &str) -> Vec<(bool, String)> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .unwrap_or_else(|| panic!("unclosed {{{{ in {text:?}"));
        let inner = after[..end].trim();
        match inner.strip_prefix('=') {
            Some(expression) => found.push((true, expression.trim().to_string())),
            None => found.push((false, inner.to_string())),
        }
        rest = &after[end + 2..];
    }
    found
}

/// Every string inside a JSON value.
fn strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// The variables an Argo expression reads, as dotted paths (`steps['a-b']`
/// becomes `steps.a-b`).
fn expression_references(expression: &str) -> Vec<String> {
    let normalised = expression.replace("['", ".").replace("']", "");
    let mut references = Vec::new();
    let bytes: Vec<char> = normalised.chars().collect();
    let mut i = 0;
    let in_quotes = |at: usize| {
        normalised[..normalised
            .char_indices()
            .nth(at)
            .map(|(b, _)| b)
            .unwrap_or(normalised.len())]
            .matches('\'')
            .count()
            % 2
            == 1
    };
    while i < bytes.len() {
        let c = bytes[i];
        if (c.is_ascii_alphabetic() || c == '_')
            && (i == 0
                || !(bytes[i - 1].is_ascii_alphanumeric()
                    || bytes[i - 1] == '.'
                    || bytes[i - 1] == '_'))
        {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], '.' | '-' | '_'))
            {
                i += 1;
            }
            let word: String = bytes[start..i].iter().collect();
            let is_call = bytes.get(i) == Some(&'(');
            if !is_call && word.contains('.') && !in_quotes(start) {
                references.push(word);
            }
        } else {
            i += 1;
        }
    }
    references
}

/// Checks every reference of one template; returns the problems found.
fn check_references(wf: &Workflow, name: &str, problems: &mut Vec<String>) {
    let template = wf.template(name);
    let inputs: BTreeSet<String> = template["inputs"]["parameters"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let globals = [
        "workflow.name",
        "workflow.mainEntrypoint",
        "workflow.namespace",
        "workflow.uid",
        "workflow.status",
        "workflow.failures",
    ];
    // The steps visible to a reference: those of earlier groups.
    let mut earlier: BTreeMap<String, String> = BTreeMap::new();
    let check = |reference: &str,
                 visible: &BTreeMap<String, String>,
                 in_loop: bool,
                 problems: &mut Vec<String>| {
        let ok = if let Some(p) = reference.strip_prefix("workflow.parameters.") {
            wf.parameters.contains_key(p)
        } else if let Some(p) = reference.strip_prefix("workflow.outputs.parameters.") {
            // A global output: some step exports it.
            wf.templates.values().any(|t| {
                t["outputs"]["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|o| o["globalName"] == p))
            })
        } else if globals.contains(&reference) {
            true
        } else if let Some(p) = reference.strip_prefix("inputs.parameters.") {
            inputs.contains(p)
        } else if reference == "item" {
            // The loop item is a bare wave index (select-nodes --index-file).
            in_loop
        } else if let Some(rest) = reference
            .strip_prefix("steps.")
            .or_else(|| reference.strip_prefix("tasks."))
        {
            let (step, what) = rest.split_once('.').unwrap_or((rest, ""));
            match visible.get(step) {
                None => false,
                Some(target) => {
                    let target = wf.template(target);
                    if what == "status" {
                        true
                    } else if what == "outputs.result" {
                        target.get("container").is_some() || target.get("script").is_some()
                    } else if let Some(p) = what.strip_prefix("outputs.parameters.") {
                        target["outputs"]["parameters"]
                            .as_array()
                            .is_some_and(|ps| ps.iter().any(|o| o["name"] == p))
                    } else {
                        false
                    }
                }
            }
        } else {
            false
        };
        if !ok {
            problems.push(format!(
                "template {name}: {{{{{reference}}}}} does not resolve here"
            ));
        }
    };
    for group in wf.groups(template) {
        for step in &group {
            let step_name = step["name"].as_str().unwrap_or_default();
            let in_loop = step.get("withParam").is_some() || step.get("withItems").is_some();
            let mut texts = Vec::new();
            strings(step, &mut texts);
            for text in texts {
                for (is_expression, inner) in placeholders(&text) {
                    let references = if is_expression {
                        expression_references(&inner)
                    } else {
                        vec![inner.clone()]
                    };
                    for reference in &references {
                        check(reference, &earlier, in_loop, problems);
                        // The run record is the one source of truth: no step
                        // decides from what another printed.
                        if reference.ends_with(".outputs.result") {
                            problems.push(format!("template {name}: step {step_name} reads {reference}; steps read the run record instead"));
                        }
                    }
                }
            }
            let target = step["template"].as_str().unwrap_or_default();
            if !wf.templates.contains_key(target) {
                problems.push(format!("template {name}: step {step_name} calls template {target:?}, which does not exist"));
            }
            // Every argument the step passes is an input of its template, and
            // every input without a default gets one.
            let passed: BTreeSet<String> = step["arguments"]["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter_map(|p| p["name"].as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            if let Some(target) = wf.templates.get(target) {
                let wanted: BTreeSet<String> = target["inputs"]["parameters"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .filter(|p| p.get("value").is_none())
                            .filter_map(|p| p["name"].as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                if passed != wanted {
                    problems.push(format!("template {name}: step {step_name} passes {passed:?} but {} wants {wanted:?}", step["template"]));
                }
            }
        }
        for step in group {
            earlier.insert(
                step["name"].as_str().unwrap_or_default().to_string(),
                step["template"].as_str().unwrap_or_default().to_string(),
            );
        }
    }
    // The template's own body (container args, env, outputs) sees its inputs
    // and, for a steps template's outputs, all its steps.
    let mut body = template.clone();
    body.as_object_mut()
        .expect("template is an object")
        .remove("steps");
    body.as_object_mut()
        .expect("template is an object")
        .remove("dag");
    // Its metrics see, besides, what Argo puts in a metric's scope once the
    // node ends (prepareMetricScope): its status, duration and exit code,
    // and its own outputs.
    let metrics = body
        .as_object_mut()
        .expect("template is an object")
        .remove("metrics");
    let mut texts = Vec::new();
    strings(&body, &mut texts);
    for text in texts {
        for (is_expression, inner) in placeholders(&text) {
            if is_expression {
                problems.push(format!("template {name}: expression {{{{={inner}}}}} outside steps is not checked; avoid it"));
            } else {
                check(&inner, &earlier, false, problems);
            }
        }
    }
    let own_outputs: BTreeSet<String> = template["outputs"]["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            p["name"]
                .as_str()
                .map(|n| format!("outputs.parameters.{n}"))
        })
        .collect();
    let mut texts = Vec::new();
    strings(&metrics.unwrap_or(Value::Null), &mut texts);
    for text in texts {
        for (_, inner) in placeholders(&text) {
            if ["status", "duration", "exitCode"].contains(&inner.as_str())
                || own_outputs.contains(&inner)
            {
                continue;
            }
            check(&inner, &earlier, false, problems);
        }
    }
}

/// Sample values for every placeholder a klm step can see.
fn sample_values(wf: &Workflow, overrides: &BTreeMap<&str, &str>) -> BTreeMap<String, String> {
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    for (name, default) in &wf.parameters {
        values.insert(
            format!("workflow.parameters.{name}"),
            default.clone().unwrap_or_default(),
        );
    }
    values.insert("workflow.parameters.target-version".into(), "3.28.0".into());
    values.insert("workflow.parameters.node-name".into(), "worker-1".into());
    for (name, value) in overrides {
        values.insert(format!("workflow.parameters.{name}"), value.to_string());
    }
    values.insert(
        "workflow.name".into(),
        "kata-lifecycle-manager-x7k2p".into(),
    );
    values.insert("inputs.parameters.nodes".into(), "worker-1,worker-2".into());
    values.insert(
        "inputs.parameters.reason".into(),
        "wave 1 (worker-1,worker-2) failed".into(),
    );
    values.insert("inputs.parameters.index".into(), "1".into());
    values.insert("inputs.parameters.resumed-from".into(), "approval".into());
    values.insert("workflow.namespace".into(), "argo".into());
    values.insert("inputs.parameters.upgrade-status".into(), "Failed".into());
    values.insert(
        "inputs.parameters.run-id".into(),
        "kata-lifecycle-manager-x7k2p".into(),
    );
    values.insert("inputs.parameters.workflow-status".into(), "Failed".into());
    values.insert(
        "inputs.parameters.failures".into(),
        r#"[{"displayName":"verify(0)","message":"Stopped with strategy 'Stop'"}]"#.into(),
    );
    values.insert("inputs.parameters.reason".into(), "".into());
    values
}

/// Replaces every placeholder in the arguments by its sample value.
fn substitute(args: &[String], values: &BTreeMap<String, String>) -> Vec<String> {
    args.iter()
        .map(|arg| {
            let mut out = arg.clone();
            for (is_expression, inner) in placeholders(arg) {
                assert!(
                    !is_expression,
                    "klm argument {arg:?} holds an expression; pass plain parameters"
                );
                let value = values
                    .get(&inner)
                    .unwrap_or_else(|| panic!("no sample value for {{{{{inner}}}}} in {arg:?}"));
                out = out.replace(&format!("{{{{{inner}}}}}", inner = inner), value);
            }
            out
        })
        .collect()
}

fn parse_klm(args: &[String]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("klm".to_string()).chain(args.iter().cloned()))
}

/// The environment variables a klm subcommand reads.
fn subcommand_env(subcommand: &str) -> BTreeSet<String> {
    let mut command = Cli::command();
    command.build();
    let sub = command
        .find_subcommand(subcommand)
        .unwrap_or_else(|| panic!("klm has no subcommand {subcommand}"));
    sub.get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect()
}

/// The KLM_* variables of a container as the flags of `subcommand` that
/// read them (`--flag=value`); a variable no flag reads is left out.
fn env_as_flags(subcommand: &str, container: &Value) -> Vec<String> {
    let mut command = Cli::command();
    command.build();
    let sub = command
        .find_subcommand(subcommand)
        .unwrap_or_else(|| panic!("klm has no subcommand {subcommand}"));
    let mut flags = Vec::new();
    for env in container["env"].as_array().into_iter().flatten() {
        let var = env["name"].as_str().unwrap_or_default();
        if !var.starts_with("KLM_") || var == "KLM_VERIFICATION_POD_BASE64" {
            continue;
        }
        if let Some(arg) = sub
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == var))
        {
            let long = arg.get_long().expect("env flags have a long name");
            flags.push(format!(
                "--{long}={}",
                env["value"].as_str().unwrap_or_default()
            ));
        }
    }
    flags
}

/// The whole check of one rendering.
fn check_workflow(wf: &Workflow) {
    let mut problems = Vec::new();

    // Entrypoints and the exit handler exist.
    assert_eq!(wf.spec["entrypoint"], "deploy-version");
    for name in ["deploy-version", "rollback-node", "close-run"] {
        wf.template(name);
    }
    let exit = wf.spec["onExit"]
        .as_str()
        .expect("an onExit handler is set");
    wf.template(exit);

    // References resolve in every template.
    for name in wf.templates.keys() {
        check_references(wf, name, &mut problems);
    }

    // Every template is reachable, and nothing recurses.
    let roots = ["deploy-version", "rollback-node", "close-run", exit];
    let mut reached = BTreeSet::new();
    for root in roots {
        let mut path = Vec::new();
        walk_calls(wf, root, &mut path, &mut reached, &mut problems);
    }
    for name in wf.templates.keys() {
        if !reached.contains(name) {
            problems.push(format!("template {name} is never used"));
        }
    }

    // Every parameter is used somewhere.
    let mut all = Vec::new();
    strings(&wf.spec["templates"], &mut all);
    strings(&wf.spec["synchronization"], &mut all);
    let text = all.join("\n");
    for parameter in wf.parameters.keys() {
        if !text.contains(&format!("workflow.parameters.{parameter}}}}}")) {
            problems.push(format!("workflow parameter {parameter} is never used"));
        }
    }
    // Empty, so that `argo submit --entrypoint rollback-node` needs no
    // target; check-prerequisites refuses an empty one (exit 2).
    assert_eq!(
        wf.parameters.get("target-version"),
        Some(&Some(String::new())),
        "target-version has an empty default"
    );

    check_klm_steps(wf, &mut problems);
    check_waves(wf, &mut problems);
    check_closing(wf, &mut problems);

    assert!(
        problems.is_empty(),
        "{} wiring problems:\n  {}",
        wf.kind,
        problems.join("\n  ")
    );
}

/// Depth-first over template calls, reporting cycles (recursion). One is
/// allowed: the hold calls itself after each wait, a handful of times at
/// most (soak, approval, window), far from Argo's depth limit of 100; the
/// waves must never recurse (one level per wave).
fn walk_calls(
    wf: &Workflow,
    name: &str,
    path: &mut Vec<String>,
    reached: &mut BTreeSet<String>,
    problems: &mut Vec<String>,
) {
    if name == "hold" && path.last().is_some_and(|p| p == "hold") {
        return;
    }
    if path.iter().any(|p| p == name) {
        problems.push(format!(
            "templates recurse: {} -> {name}",
            path.join(" -> ")
        ));
        return;
    }
    reached.insert(name.to_string());
    let Some(template) = wf.templates.get(name) else {
        return;
    };
    path.push(name.to_string());
    for group in wf.groups(template) {
        for step in group {
            if let Some(target) = step["template"].as_str() {
                walk_calls(wf, target, path, reached, problems);
            }
        }
    }
    path.pop();
}

/// Every klm invocation parses, with default and with realistic parameter
/// values; its environment is read by klm; deadlines and retries are set;
/// nothing a submitter controls picks the image or the chart.
fn check_klm_steps(wf: &Workflow, problems: &mut Vec<String>) {
    let realistic = BTreeMap::from([
        ("node-selector", "node-pool=kata,zone in (a,b)"),
        ("node-taint-key", "maintenance"),
        ("node-taint-value", "pending"),
        ("pool-label", "node-pool"),
        ("batch-size", "3"),
        ("deployment-mode", "job"),
        (
            "helm-set-values",
            "image.reference=mirror.example/kata-deploy,debug=true",
        ),
        ("verification-timeout", "5m"),
        ("drain-timeout", "10m"),
        ("helm-timeout", "15m"),
        ("restart-timeout", "20m"),
    ]);
    let mut subcommands = BTreeSet::new();
    let mut read_anywhere: BTreeSet<String> = BTreeSet::new();
    let mut set_anywhere: BTreeSet<String> = BTreeSet::new();
    for (template_name, template) in &wf.templates {
        if template.get("script").is_some() {
            problems.push(format!(
                "template {template_name} runs something other than klm"
            ));
        }
        let containers = wf.containers(template_name, template);
        if !containers.is_empty() {
            if template["activeDeadlineSeconds"].as_u64().unwrap_or(0) == 0 {
                problems.push(format!(
                    "template {template_name}: no activeDeadlineSeconds"
                ));
            }
            check_retries(template_name, &template["retryStrategy"], problems);
        }
        for (name, container) in containers {
            let name = name.as_str();
            for env in container["env"].as_array().into_iter().flatten() {
                set_anywhere.insert(env["name"].as_str().unwrap_or_default().to_string());
            }
            let Some(args) = Workflow::container_klm_args(container) else {
                problems.push(format!("template {name} runs something other than klm"));
                continue;
            };
            let subcommand = args.first().cloned().unwrap_or_default();
            subcommands.insert(subcommand.clone());
            for overrides in [BTreeMap::new(), realistic.clone()] {
                // The container's KLM_* variables, given as the flags that read
                // them: clap parses them exactly as it would the environment.
                let mut args = args.clone();
                args.extend(env_as_flags(&subcommand, container));
                let args = substitute(&args, &sample_values(wf, &overrides));
                if let Err(err) = parse_klm(&args) {
                    problems.push(format!(
                        "template {name}: `klm {}` does not parse:\n{err}",
                        args.join(" ")
                    ));
                }
            }
            let reads = subcommand_env(&subcommand);
            read_anywhere.extend(reads.iter().cloned());
            check_shared_env(
                template_name,
                &subcommand,
                &args,
                container,
                &reads,
                problems,
            );
            let passes_pod = container["env"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|e| e["name"] == "KLM_VERIFICATION_POD_BASE64");
            if reads.contains("KLM_VERIFICATION_POD_BASE64") && !passes_pod {
                problems.push(format!("template {name}: klm {subcommand} takes the verification pod, but the step does not pass it"));
            }
            let image = container["image"].as_str().unwrap_or_default();
            if image.contains("{{") {
                problems.push(format!(
                    "template {name}: its image comes from a parameter ({image})"
                ));
            }
            if args
                .iter()
                .any(|a| a.starts_with("--chart=") && a.contains("{{"))
            {
                problems.push(format!(
                    "template {name}: the kata-deploy chart comes from a parameter"
                ));
            }
            // A containerSet mounts for all its containers.
            let mounts: Vec<&str> = container["volumeMounts"]
                .as_array()
                .into_iter()
                .chain(template["containerSet"]["volumeMounts"].as_array())
                .flatten()
                .filter_map(|m| m["mountPath"].as_str())
                .collect();
            if !mounts.contains(&"/tmp") {
                problems.push(format!(
                    "template {name}: no writable /tmp (the root filesystem is read-only)"
                ));
            }
        }
    }
    for var in set_anywhere.iter().filter(|v| v.starts_with("KLM_")) {
        if !read_anywhere.contains(var) {
            problems.push(format!(
                "${var} is set on the steps but no klm step reads it"
            ));
        }
    }
    for expected in [
        "check-prerequisites",
        "helm-upgrade",
        "select-nodes",
        "cordon",
        "drain",
        "restart-kata-pod",
        "verify",
        "settle",
        "complete",
        "rollback",
        "status",
        "close-run",
    ] {
        if !subcommands.contains(expected) {
            problems.push(format!("no step runs klm {expected}"));
        }
    }
}

/// The variables every klm step gets from its container (klm.container),
/// with the value each must carry where it comes from a workflow parameter.
const SHARED_ENV: &[(&str, Option<&str>)] = &[
    (
        "KLM_HELM_RELEASE",
        Some("{{workflow.parameters.helm-release}}"),
    ),
    (
        "KLM_HELM_NAMESPACE",
        Some("{{workflow.parameters.helm-namespace}}"),
    ),
    ("KLM_LOG_FORMAT", None),
    ("KLM_CHART", None),
    (
        "KLM_HELM_TIMEOUT",
        Some("{{workflow.parameters.helm-timeout}}"),
    ),
    (
        "KLM_RESTART_TIMEOUT",
        Some("{{workflow.parameters.restart-timeout}}"),
    ),
    (
        "KLM_DRAIN_TIMEOUT",
        Some("{{workflow.parameters.drain-timeout}}"),
    ),
    (
        "KLM_VERIFICATION_NAMESPACE",
        Some("{{workflow.parameters.verification-namespace}}"),
    ),
    (
        "KLM_VERIFICATION_TIMEOUT",
        Some("{{workflow.parameters.verification-timeout}}"),
    ),
    ("KLM_STEP_DEADLINE", None),
];

/// The variables that name the release and how klm logs: every subcommand
/// a step runs must read them, or it would act on the default release.
const IDENTITY_ENV: &[&str] = &["KLM_HELM_RELEASE", "KLM_HELM_NAMESPACE", "KLM_LOG_FORMAT"];

/// Steps that find their run themselves (the release's latest run): the
/// rollback-node entrypoint. Every other step is this workflow's run.
const FINDS_ITS_RUN: &[&str] = &["rollback-one", "status"];

/// Flags that the environment carries: a step passing one again would be a
/// second way for the same fact to arrive.
const CARRIED_BY_ENV: &[&str] = &[
    "--helm-release",
    "--helm-namespace",
    "--log-format",
    "--chart",
    "--helm-timeout",
    "--timeout",
    "--drain-timeout",
    "--verification-namespace",
    "--verification-timeout",
    "--step-deadline",
];

/// The shared environment reaches a step once, whole, and its subcommand reads it.
fn check_shared_env(
    name: &str,
    subcommand: &str,
    args: &[String],
    container: &Value,
    reads: &BTreeSet<String>,
    problems: &mut Vec<String>,
) {
    let env: BTreeMap<String, String> = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default().to_string(),
                e["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for (var, expected) in SHARED_ENV {
        match (env.get(*var), expected) {
            (None, _) => problems.push(format!("template {name}: ${var} is not set")),
            (Some(value), Some(expected)) if value != expected => problems.push(format!(
                "template {name}: ${var} is {value:?}, not {expected:?}"
            )),
            (Some(value), None) if value.contains("{{") => problems.push(format!(
                "template {name}: ${var} comes from a parameter ({value})"
            )),
            _ => {}
        }
    }
    for var in IDENTITY_ENV {
        if !reads.contains(*var) {
            problems.push(format!(
                "template {name}: klm {subcommand} does not read ${var}"
            ));
        }
    }
    let names_run = args.iter().any(|a| a.starts_with("--run-id="));
    match env.get("KLM_RUN_ID") {
        Some(value) if value != "{{workflow.name}}" => problems.push(format!(
            "template {name}: $KLM_RUN_ID is {value:?}, not the workflow's name"
        )),
        Some(_) if !reads.contains("KLM_RUN_ID") => problems.push(format!(
            "template {name}: klm {subcommand} does not read $KLM_RUN_ID"
        )),
        Some(_) if names_run => problems.push(format!(
            "template {name}: the run reaches it twice ($KLM_RUN_ID and --run-id)"
        )),
        None if !names_run && !FINDS_ITS_RUN.contains(&name) => problems.push(format!(
            "template {name}: no run: neither $KLM_RUN_ID nor --run-id"
        )),
        _ => {}
    }
    for arg in args {
        let flag = arg.split('=').next().unwrap_or_default();
        if CARRIED_BY_ENV.contains(&flag) {
            problems.push(format!(
                "template {name}: passes {flag}, which the step's environment carries"
            ));
        }
    }
}

/// A wave's hold: only for the waves select-nodes names in its global
/// `held-waves`; klm gate by index, then a timed or an approval suspend by
/// what it wrote, then the hold again told what the wave waited for.
fn check_hold(wf: &Workflow, step: &Value, problems: &mut Vec<String>) {
    let when = step["when"].as_str().unwrap_or_default();
    if when != "'{{workflow.outputs.parameters.held-waves}}' =~ ',{{inputs.parameters.index}},'" {
        problems.push(format!(
            "a wave's hold is not limited to the held waves: when {when:?}"
        ));
    }
    let exported = wf.template("start")["outputs"]["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|p| p["globalName"] == "held-waves" && p["valueFrom"]["path"] == "/tmp/held-waves");
    let select_args = wf.set_klm_args("start", "select-nodes");
    if !exported || !select_args.contains(&"--held-file=/tmp/held-waves".to_string()) {
        problems.push("select-nodes does not export the held waves it writes".into());
    }
    let hold = wf.template(step["template"].as_str().unwrap_or_default());
    let groups = wf.groups(hold);
    let gate = wf.template(groups[0][0]["template"].as_str().unwrap_or_default());
    let gate_args = wf.klm_args(gate).unwrap_or_default();
    for wanted in [
        "--wave={{inputs.parameters.index}}",
        "--resumed-from={{inputs.parameters.resumed-from}}",
        "--outputs-dir=/tmp/gate",
    ] {
        if !gate_args.contains(&wanted.to_string()) {
            problems.push(format!(
                "the hold's klm gate lacks {wanted}: klm {}",
                gate_args.join(" ")
            ));
        }
    }
    let suspends: Vec<&Value> = groups[1]
        .iter()
        .map(|s| wf.template(s["template"].as_str().unwrap_or_default()))
        .collect();
    let timed = suspends
        .iter()
        .any(|t| t["suspend"]["duration"] == "{{inputs.parameters.seconds}}");
    let approval = suspends
        .iter()
        .any(|t| t["suspend"].is_object() && t["suspend"].get("duration").is_none());
    let again = &groups[2][0];
    if !timed || !approval || again["template"] != step["template"] {
        problems.push(
            "the hold does not wait (a timed and an approval suspend) and pass its gate again"
                .into(),
        );
    }
}

/// Retries: infrastructure failures only, never klm's verdicts (exit 1, 2, 3).
fn check_retries(name: &str, retry: &Value, problems: &mut Vec<String>) {
    let expression = retry["expression"].as_str().unwrap_or_default();
    let spares_verdicts = ["'1'", "'2'", "'3'"]
        .iter()
        .all(|code| expression.contains(code))
        && expression.contains("lastRetry.exitCode")
        && expression.contains("lastRetry.status == 'Error'");
    if retry["retryPolicy"] != "Always" || !spares_verdicts {
        problems.push(format!(
            "template {name}: retries must be retryPolicy Always with an expression that retries Error and sparing klm's exit codes 1, 2, 3 (found {retry})"
        ));
    }
}

/// One Argo `when` after substitution: `'a' == 'b'`, `'a' != 'b'`, `'a' =~
/// 'b'` (b a literal: a holds it), or several joined by `||`.
fn evaluate_when(when: &str) -> bool {
    if when.contains("||") {
        return when.split("||").any(evaluate_when);
    }
    let unquote = |s: &str| s.trim().trim_matches('\'').to_string();
    if let Some((l, r)) = when.split_once("=~") {
        return unquote(l).contains(&unquote(r));
    }
    let (left, equal, right) = if let Some((l, r)) = when.split_once("!=") {
        (l, false, r)
    } else if let Some((l, r)) = when.split_once("==") {
        (l, true, r)
    } else {
        panic!("cannot evaluate when {when:?}");
    };
    (unquote(left) == unquote(right)) == equal
}

/// Pods and Argo status nodes that one successful run of a template
/// creates, the way the controller counts them: a Steps node and a StepGroup
/// per group, or a DAG node; per step or task a Skipped node (its `when` is
/// false), an Omitted node (a task whose `depends` is false), a Retry node
/// (with a retryStrategy) over a Pod node, a Container node per container of
/// a containerSet, or the nested template's.
fn run_cost(
    wf: &Workflow,
    template: &str,
    inputs: &BTreeMap<String, String>,
    parameters: &BTreeMap<&str, &str>,
) -> (usize, usize) {
    let template = wf.template(template);
    let retry = usize::from(template.get("retryStrategy").is_some());
    if template.get("container").is_some() {
        return (1, 1 + retry);
    }
    if let Some(containers) = template["containerSet"]["containers"].as_array() {
        return (1, 1 + retry + containers.len());
    }
    let substitute = |text: &str| {
        let mut out = text.to_string();
        for (key, value) in inputs {
            out = out.replace(&format!("{{{{inputs.parameters.{key}}}}}"), value);
        }
        for (key, value) in parameters {
            out = out.replace(&format!("{{{{workflow.parameters.{key}}}}}"), value);
        }
        // A wave of a run without gates or a window: none waits.
        out.replace("{{workflow.outputs.parameters.held-waves}}", ",")
    };
    let dag = template.get("dag").is_some();
    let (mut pods, mut nodes) = (0, 1);
    for group in wf.groups(template) {
        if !dag {
            nodes += 1;
        }
        for step in group {
            if let Some(when) = step["when"].as_str()
                && !evaluate_when(&substitute(when))
            {
                nodes += 1;
                continue;
            }
            // A successful run: a task that runs only on a failure is omitted.
            if step["depends"]
                .as_str()
                .is_some_and(|d| d.contains(".Failed") || d.contains(".Errored"))
            {
                nodes += 1;
                continue;
            }
            let passed: BTreeMap<String, String> = step["arguments"]["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap_or_default().to_string(),
                        substitute(p["value"].as_str().unwrap_or_default()),
                    )
                })
                .collect();
            let (p, n) = run_cost(
                wf,
                step["template"].as_str().unwrap_or_default(),
                &passed,
                parameters,
            );
            pods += p;
            nodes += n;
        }
    }
    (pods, nodes)
}

/// What one successful wave of the template `wave` costs: (pods, status nodes).
fn wave_cost(wf: &Workflow, wave: &str, drain: &str) -> (usize, usize) {
    let inputs = BTreeMap::from([("index".to_string(), "1".to_string())]);
    run_cost(
        wf,
        wave,
        &inputs,
        &BTreeMap::from([("drain-enabled", drain)]),
    )
}

/// The wave loops: withParam over select-nodes' wave indices, one wave at a
/// time, failFast, no retryStrategy on the loop; each wave reads its nodes
/// from the run record, upgrades them in one pod that opens with cordon
/// (which refuses a failed run) and ends completing them, and settles (rolls
/// back) only after a failure; the exit handler closes the run.
fn check_waves(wf: &Workflow, problems: &mut Vec<String>) {
    for (loop_name, wave_name) in [("waves", "wave"), ("held-waves", "held-wave")] {
        let waves = wf.template(loop_name);
        assert_eq!(
            waves["parallelism"], 1,
            "{loop_name}: waves run one at a time"
        );
        assert_eq!(
            waves["failFast"], true,
            "{loop_name}: no wave starts after a failed one"
        );
        let groups = wf.groups(waves);
        assert_eq!(groups.len(), 1, "{loop_name} is one looped step");
        let looped = groups[0][0];
        assert_eq!(looped["withParam"], "{{inputs.parameters.waves}}");
        assert_eq!(
            looped["template"], wave_name,
            "{loop_name} loops over {wave_name}"
        );
        let item: Vec<&Value> = looped["arguments"]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["value"].as_str().is_some_and(|v| v.contains("{{item")))
            .collect();
        assert!(
            item.len() == 1 && item[0]["name"] == "index" && item[0]["value"] == "{{item}}",
            "the loop item is only the wave's index: {item:?}"
        );
        for name in [loop_name, wave_name] {
            if wf.template(name).get("retryStrategy").is_some() {
                problems.push(format!(
                    "template {name} has a retryStrategy (argo-workflows#16849: a failFast loop over Retry nodes never ends)"
                ));
            }
        }
        check_wave(wf, wave_name, problems);
    }

    // The start pod: check-prerequisites, then select-nodes (which records
    // the plan and writes the indices where the output reads them), then the
    // release's upgrade, each after the one before succeeded.
    let start = wf.template("start");
    let chain = container_chain(start);
    let subcommands: Vec<String> = chain
        .iter()
        .map(|c| Workflow::container_klm_args(c).unwrap_or_default()[0].clone())
        .collect();
    assert_eq!(
        subcommands,
        ["check-prerequisites", "select-nodes", "helm-upgrade"],
        "the start pod checks, selects, then upgrades the release"
    );
    let args = wf.set_klm_args("start", "select-nodes");
    let path = start["outputs"]["parameters"][0]["valueFrom"]["path"]
        .as_str()
        .expect("waves output path");
    assert!(
        args.contains(&format!("--index-file={path}")),
        "select-nodes writes --index-file={path}"
    );
    // klm decides what the stage does in the run's mode (nothing when the
    // run selected no node).
    let upgrade_args = Workflow::container_klm_args(chain[2]).unwrap_or_default();
    assert_eq!(upgrade_args, ["helm-upgrade", "--stage=before-waves"]);
    // Argo reads a containerSet's outputs through its container named main.
    assert_eq!(
        chain[2]["name"], "main",
        "the start pod's outputs need a main"
    );
    let deploy = wf.template("deploy-version");
    let steps: Vec<&Value> = wf.groups(deploy).into_iter().flatten().collect();
    assert_eq!(
        steps[0]["template"], "start",
        "deploy-version starts with the start pod"
    );
    for (loop_name, when) in [
        (
            "waves",
            "'{{workflow.outputs.parameters.held-waves}}' == ','",
        ),
        (
            "held-waves",
            "'{{workflow.outputs.parameters.held-waves}}' != ','",
        ),
    ] {
        let step = steps
            .iter()
            .find(|s| s["template"] == loop_name)
            .unwrap_or_else(|| panic!("deploy-version runs {loop_name}"));
        let passes_waves = step["arguments"]["parameters"]
            .as_array()
            .is_some_and(|ps| {
                ps.iter()
                    .any(|p| p["value"] == "{{steps.start.outputs.parameters.waves}}")
            });
        if !passes_waves || step["when"] != when {
            problems.push(format!(
                "deploy-version does not pass the start pod's waves to {loop_name} when {when}: {step}"
            ));
        }
    }
}

/// A containerSet's containers in the order they run: each depends on the
/// one before (a chain), the first on nothing.
fn container_chain(template: &Value) -> Vec<&Value> {
    let containers: Vec<&Value> = template["containerSet"]["containers"]
        .as_array()
        .expect("a containerSet")
        .iter()
        .collect();
    for (i, container) in containers.iter().enumerate() {
        let wanted: Vec<Value> = if i == 0 {
            vec![]
        } else {
            vec![containers[i - 1]["name"].clone()]
        };
        let found = container["dependencies"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            found, wanted,
            "container {} runs after the one before it, only",
            container["name"]
        );
    }
    containers
}

/// One wave (`wave`, or `held-wave`: the hold first): the upgrade pod, then
/// settle only when it failed; every klm step by index.
fn check_wave(wf: &Workflow, name: &str, problems: &mut Vec<String>) {
    let wave = wf.template(name);
    let tasks: Vec<&Value> = wf.groups(wave).into_iter().flatten().collect();
    let tasks = if name == "held-wave" {
        assert_eq!(tasks[0]["name"], "hold", "a held wave holds first");
        check_hold(wf, tasks[0], problems);
        assert_eq!(
            tasks[1]["depends"], "hold",
            "a held wave upgrades after its hold"
        );
        &tasks[1..]
    } else {
        assert!(
            tasks[0].get("depends").is_none(),
            "a wave starts with its upgrade"
        );
        &tasks[..]
    };
    assert_eq!(
        tasks.len(),
        2,
        "a wave is its upgrade, then settle after a failure"
    );
    let (upgrade_task, settle_task) = (tasks[0], tasks[1]);
    let upgrade = wf.template(upgrade_task["template"].as_str().expect("a template"));
    let chain = container_chain(upgrade);
    let phases: Vec<Vec<String>> = chain
        .iter()
        .map(|c| Workflow::container_klm_args(c).expect("every phase runs klm"))
        .collect();
    let subcommands: Vec<&str> = phases.iter().map(|a| a[0].as_str()).collect();
    assert_eq!(
        subcommands,
        ["cordon", "drain", "restart-kata-pod", "verify", "settle"],
        "a wave's pod: cordon (which refuses a failed run) first, complete last"
    );
    for args in &phases {
        if !args.contains(&"--wave={{inputs.parameters.index}}".to_string())
            || args.iter().any(|a| a.starts_with("--nodes"))
        {
            problems.push(format!(
                "a wave's phase does not read its wave from the run record: klm {}",
                args.join(" ")
            ));
        }
    }
    if !phases[1].contains(&"--enabled={{workflow.parameters.drain-enabled}}".to_string()) {
        problems.push("the drain phase does not follow drain-enabled".into());
    }
    if !phases[4].contains(&"--upgrade-status=Succeeded".to_string()) {
        problems.push(
            "the wave's last phase does not complete it (settle --upgrade-status=Succeeded)".into(),
        );
    }
    let settle = wf.template(settle_task["template"].as_str().unwrap_or_default());
    let settle_args = wf.klm_args(settle).expect("settle runs klm");
    let passed_status = settle_task["arguments"]["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|p| p["name"] == "upgrade-status" && p["value"] == "{{tasks.upgrade.status}}");
    if settle_args[0] != "settle"
        || !settle_args.contains(&"--upgrade-status={{inputs.parameters.upgrade-status}}".into())
        || !passed_status
        || settle_task["depends"] != "upgrade.Failed || upgrade.Errored"
    {
        problems.push(format!(
            "a wave does not settle after a failed upgrade, given its status: klm {}",
            settle_args.join(" ")
        ));
    }
}

/// The run's end: the exit handler and the close-run entrypoint close it;
/// the lock is the release's.
fn check_closing(wf: &Workflow, problems: &mut Vec<String>) {
    // The exit handler closes this run, told how the workflow ended.
    let exit = wf.template(wf.spec["onExit"].as_str().unwrap_or_default());
    let closes = wf.groups(exit).iter().flat_map(|g| g.iter()).any(|s| {
        let target = wf.template(s["template"].as_str().unwrap_or_default());
        let args = wf.klm_args(target).unwrap_or_default();
        let passed: BTreeMap<&str, &str> = s["arguments"]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    p["name"].as_str().unwrap_or_default(),
                    p["value"].as_str().unwrap_or_default(),
                )
            })
            .collect();
        args.first().is_some_and(|a| a == "close-run")
            && args.contains(&"--run-id={{inputs.parameters.run-id}}".to_string())
            && args.contains(&"--workflow-status={{inputs.parameters.workflow-status}}".to_string())
            && args.contains(&"--failures={{inputs.parameters.failures}}".to_string())
            && passed.get("run-id") == Some(&"{{workflow.name}}")
            && passed.get("workflow-status") == Some(&"{{workflow.status}}")
            && passed.get("failures") == Some(&"{{workflow.failures}}")
    });
    if !closes {
        problems.push("the exit handler does not run klm close-run for this workflow with {{workflow.status}} and {{workflow.failures}}".into());
    }
    // After `argo terminate` (no exit handler): the close-run entrypoint.
    let by_hand = wf.groups(wf.template("close-run"))[0][0]["arguments"]["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|p| p["name"] == "run-id" && p["value"] == "{{workflow.parameters.run-id}}");
    if !by_hand {
        problems.push("the close-run entrypoint does not close the run named by -p run-id".into());
    }

    // The lock is the release's, whichever namespace the workflow runs in.
    let mutex = &wf.spec["synchronization"]["mutexes"][0];
    if mutex["namespace"] != "{{workflow.parameters.helm-namespace}}" {
        problems.push(format!(
            "the mutex is not scoped to the release's namespace: {mutex}"
        ));
    }
}

/// A successful wave costs 1 pod and 9 status nodes (its DAG, the pod's
/// Retry and Pod nodes, a node per phase, settle omitted), with or without
/// drain; a held wave one more (its hold, skipped when the wave does not
/// wait). Before containerSet waves: 4 pods and 19
/// nodes, 5 and 20 with drain; before that 25 nodes and 5 pods.
#[test]
fn a_wave_is_small() {
    let wf = Workflow::render(&[]);
    let plain = wave_cost(&wf, "wave", "false");
    let drained = wave_cost(&wf, "wave", "true");
    let held = wave_cost(&wf, "held-wave", "false");
    #[allow(clippy::print_stdout)]
    {
        println!(
            "per successful wave: {plain:?}, with drain {drained:?}, held {held:?} (pods, status nodes)"
        );
    }
    assert_eq!(plain, (1, 9), "(pods, status nodes) per wave");
    assert_eq!(drained, plain, "drain is a phase of the same pod");
    assert_eq!(
        held,
        (1, 10),
        "a held wave that does not wait: its skipped hold more"
    );
}

#[test]
fn the_workflow_template_is_wired_to_klm() {
    check_workflow(&Workflow::render(&[]));
}

#[test]
fn the_cluster_workflow_template_is_wired_to_klm() {
    let wf = Workflow::render(&["--set", "clusterScoped=true"]);
    assert_eq!(wf.kind, "ClusterWorkflowTemplate");
    check_workflow(&wf);
}

#[test]
fn every_option_combination_is_wired_to_klm() {
    for extra in [
        vec![
            "--set",
            "defaults.deploymentMode=job",
            "--set",
            "defaults.batchSize=10",
            "--set",
            "defaults.drainEnabled=true",
        ],
        vec![
            "--set",
            "submitOverrides.helmSetValues=true",
            "--set",
            "submitOverrides.verificationPod=false",
        ],
        vec![
            "--set",
            "workflow.logFormat=json",
            "--set",
            "kataDeploy.chart=/charts/kata-deploy-{version}.tgz",
        ],
    ] {
        check_workflow(&Workflow::render(&extra));
    }
}

/// What a submitter cannot change is fixed with an enum of one value.
#[test]
fn locked_parameters_allow_only_their_chart_value() {
    let enum_of = |wf: &Workflow, name: &str| {
        wf.spec["arguments"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p.get("enum").cloned())
    };
    let default = Workflow::render(&["--set", "defaults.helmSetValues=a=1"]);
    assert_eq!(
        enum_of(&default, "helm-set-values"),
        Some(serde_json::json!(["a=1"]))
    );
    assert_eq!(enum_of(&default, "verification-pod"), None);
    let open = Workflow::render(&[
        "--set",
        "submitOverrides.helmSetValues=true",
        "--set",
        "submitOverrides.verificationPod=false",
    ]);
    assert_eq!(enum_of(&open, "helm-set-values"), None);
    let pod = open.parameters["verification-pod"]
        .clone()
        .expect("a default pod");
    assert_eq!(
        enum_of(&open, "verification-pod"),
        Some(serde_json::json!([pod]))
    );
}

/// The verification pod reaches the workflow base64-encoded, byte for byte.
#[test]
fn the_verification_pod_is_passed_base64() {
    use base64_decode::decode;
    let wf = Workflow::render(&[]);
    let encoded = wf.parameters["verification-pod"]
        .clone()
        .expect("a default");
    let pod = std::fs::read_to_string(render::example_pod()).expect("example pod");
    assert_eq!(decode(&encoded), pod.into_bytes());
}

/// A tiny base64 decoder, so the test needs no extra crate.
mod base64_decode {
    pub fn decode(text: &str) -> Vec<u8> {
        let value = |c: u8| -> u32 {
            match c {
                b'A'..=b'Z' => (c - b'A') as u32,
                b'a'..=b'z' => (c - b'a') as u32 + 26,
                b'0'..=b'9' => (c - b'0') as u32 + 52,
                b'+' => 62,
                b'/' => 63,
                _ => panic!("not base64: {c}"),
            }
        };
        let mut out = Vec::new();
        for chunk in text.trim().as_bytes().chunks(4) {
            let pad = chunk.iter().filter(|&&c| c == b'=').count();
            let bits = chunk
                .iter()
                .filter(|&&c| c != b'=')
                .fold(0u32, |acc, &c| (acc << 6) | value(c))
                << (6 * pad);
            let bytes = [(bits >> 16) as u8, (bits >> 8) as u8, bits as u8];
            out.extend_from_slice(&bytes[..3 - pad]);
        }
        out
    }
}

#[test]
fn expression_references_are_found() {
    let refs = expression_references(
        "steps['select-nodes'].outputs.parameters.waves != '[]' && 'x.y' == inputs.parameters.a",
    );
    assert_eq!(
        refs,
        vec![
            "steps.select-nodes.outputs.parameters.waves",
            "inputs.parameters.a"
        ]
    );
    assert_eq!(
        placeholders("a {{x.y}} b {{= 1 + 2 }}"),
        vec![(false, "x.y".to_string()), (true, "1 + 2".to_string())]
    );
}
