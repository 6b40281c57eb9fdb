//! The WorkflowTemplate's wiring, checked against klm itself: every step's
//! template exists, every `{{...}}` reference resolves where it is used,
//! every klm invocation parses with klm's own command line (clap), the JSON
//! fields the workflow reads are the ones klm prints, the wave loop has
//! parallelism 1 and failFast, and the exit handler exists.

use std::collections::{BTreeMap, BTreeSet};

use clap::{CommandFactory, Parser};
use kata_lifecycle_manager::cli::{Cli, OutputFormat};
use kata_lifecycle_manager::commands::check_prerequisites::Prerequisites;
use kata_lifecycle_manager::nodes::waves;
use kata_lifecycle_manager::versions::DeploymentMode;
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

    /// The steps of a steps template, group by group.
    fn groups<'a>(&self, template: &'a Value) -> Vec<&'a Vec<Value>> {
        template["steps"]
            .as_array()
            .map(|groups| {
                groups
                    .iter()
                    .map(|g| g.as_array().expect("a step group is a list"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The klm arguments of a container template, if it runs klm.
    fn klm_args(&self, template: &Value) -> Option<Vec<String>> {
        let container = template.get("container")?;
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
/// becomes `steps.a-b`), plus the JSON fields it extracts with jsonpath.
fn expression_references(expression: &str) -> (Vec<String>, Vec<String>) {
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
    let fields = expression
        .split("'$.")
        .skip(1)
        .map(|rest| rest.split('\'').next().unwrap_or_default().to_string())
        .collect();
    (references, fields)
}

/// What klm prints for a step (-o json), as JSON, so that the fields the
/// workflow reads can be checked against the real report types.
fn sample_output(subcommand: &str) -> Option<Value> {
    match subcommand {
        "check-prerequisites" => Some(
            serde_json::to_value(Prerequisites {
                run_id: "run".into(),
                mode: DeploymentMode::Daemonset,
                release: "kata-deploy".into(),
                namespace: "kube-system".into(),
                current_version: "3.27.0".into(),
                previous_version: None,
                revision: 1,
                target_version: "3.28.0".into(),
                verification_pod: true,
                resumed: false,
                warnings: Vec::new(),
            })
            .expect("serialises"),
        ),
        _ => None,
    }
}

/// The JSON keys of one wave as select-nodes writes it (`--waves-file`).
fn wave_keys() -> BTreeSet<String> {
    let planned = waves::plan(&["worker-1".to_string(), "worker-2".to_string()], 2);
    let json = serde_json::to_value(&planned).expect("waves serialise");
    json[0]
        .as_object()
        .expect("a wave is an object")
        .keys()
        .cloned()
        .collect()
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
    ];
    // The steps visible to a reference: those of earlier groups.
    let mut earlier: BTreeMap<String, String> = BTreeMap::new();
    let check = |reference: &str,
                 visible: &BTreeMap<String, String>,
                 in_loop: bool,
                 problems: &mut Vec<String>| {
        let ok = if let Some(p) = reference.strip_prefix("workflow.parameters.") {
            wf.parameters.contains_key(p)
        } else if globals.contains(&reference) {
            true
        } else if let Some(p) = reference.strip_prefix("inputs.parameters.") {
            inputs.contains(p)
        } else if let Some(key) = reference.strip_prefix("item.") {
            in_loop && wave_keys().contains(key)
        } else if let Some(rest) = reference.strip_prefix("steps.") {
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
        for step in group {
            let step_name = step["name"].as_str().unwrap_or_default();
            let in_loop = step.get("withParam").is_some() || step.get("withItems").is_some();
            let mut texts = Vec::new();
            strings(step, &mut texts);
            for text in texts {
                for (is_expression, inner) in placeholders(&text) {
                    if is_expression {
                        let (references, fields) = expression_references(&inner);
                        for reference in &references {
                            check(reference, &earlier, in_loop, problems);
                        }
                        check_json_fields(wf, name, &references, &fields, &earlier, problems);
                        check_mode_literals(
                            name,
                            &inner.replace("['", ".").replace("']", ""),
                            problems,
                        );
                    } else {
                        check(&inner, &earlier, in_loop, problems);
                        if inner.contains("mode") {
                            check_mode_literals(name, &text, problems);
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
}

/// A jsonpath over a step's result reads a field klm prints, from a step run with -o json.
fn check_json_fields(
    wf: &Workflow,
    name: &str,
    references: &[String],
    fields: &[String],
    visible: &BTreeMap<String, String>,
    problems: &mut Vec<String>,
) {
    if fields.is_empty() {
        return;
    }
    for reference in references.iter().filter(|r| r.ends_with(".outputs.result")) {
        let step = reference
            .trim_start_matches("steps.")
            .trim_end_matches(".outputs.result");
        let Some(target) = visible.get(step) else {
            continue;
        };
        let Some(args) = wf.klm_args(wf.template(target)) else {
            problems.push(format!(
                "template {name}: {reference} is not the result of a klm step"
            ));
            continue;
        };
        let cli = parse_klm(&substitute(&args, &sample_values(wf, &BTreeMap::new())))
            .unwrap_or_else(|e| panic!("template {target}: klm arguments do not parse: {e}"));
        if cli.global.output != OutputFormat::Json {
            problems.push(format!("template {target}: its result is read as JSON ({name}) but klm does not run with --output=json"));
        }
        let subcommand = &args[0];
        let Some(sample) = sample_output(subcommand) else {
            problems.push(format!("template {name}: no sample output of klm {subcommand} to check fields {fields:?} against"));
            continue;
        };
        for field in fields {
            if sample.get(field).is_none() {
                problems.push(format!(
                    "template {name}: klm {subcommand} -o json prints no field {field:?}"
                ));
            }
        }
    }
}

/// Strings compared with a mode are modes klm prints.
fn check_mode_literals(name: &str, text: &str, problems: &mut Vec<String>) {
    let modes: Vec<String> = [DeploymentMode::Daemonset, DeploymentMode::Job]
        .iter()
        .map(|m| {
            serde_json::to_value(m)
                .expect("mode serialises")
                .as_str()
                .expect("a string")
                .to_string()
        })
        .collect();
    for literal in text.split('\'').skip(1).step_by(2) {
        if literal.contains("{{") || literal.starts_with("$.") {
            continue;
        }
        if ["Succeeded", "true", "deploy-version"].contains(&literal) {
            continue;
        }
        if !modes.iter().any(|m| m == literal) {
            problems.push(format!("template {name}: {literal:?} compared with a mode is not a mode klm prints ({modes:?})"));
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
    values.insert("inputs.parameters.mode".into(), "daemonset".into());
    values.insert("inputs.parameters.index".into(), "1".into());
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

/// The whole check of one rendering.
fn check_workflow(wf: &Workflow) {
    let mut problems = Vec::new();

    // Entrypoints and the exit handler exist.
    assert_eq!(wf.spec["entrypoint"], "deploy-version");
    for name in ["deploy-version", "rollback-node"] {
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
    let roots = ["deploy-version", "rollback-node", exit];
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
    assert_eq!(
        wf.parameters.get("target-version"),
        Some(&None),
        "target-version must be required (no default)"
    );

    check_klm_steps(wf, &mut problems);
    check_waves(wf, &mut problems);

    assert!(
        problems.is_empty(),
        "{} wiring problems:\n  {}",
        wf.kind,
        problems.join("\n  ")
    );
}

/// Depth-first over template calls, reporting cycles (recursion).
fn walk_calls(
    wf: &Workflow,
    name: &str,
    path: &mut Vec<String>,
    reached: &mut BTreeSet<String>,
    problems: &mut Vec<String>,
) {
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
    for (name, template) in &wf.templates {
        let Some(args) = wf.klm_args(template) else {
            if template.get("container").is_some() || template.get("script").is_some() {
                problems.push(format!("template {name} runs something other than klm"));
            }
            continue;
        };
        let subcommand = args.first().cloned().unwrap_or_default();
        subcommands.insert(subcommand.clone());
        for overrides in [BTreeMap::new(), realistic.clone()] {
            let args = substitute(&args, &sample_values(wf, &overrides));
            if let Err(err) = parse_klm(&args) {
                problems.push(format!(
                    "template {name}: `klm {}` does not parse:\n{err}",
                    args.join(" ")
                ));
            }
        }
        let container = &template["container"];
        let reads = subcommand_env(&subcommand);
        for env in container["env"].as_array().into_iter().flatten() {
            let var = env["name"].as_str().unwrap_or_default();
            if var.starts_with("KLM_") && !reads.contains(var) {
                problems.push(format!(
                    "template {name}: klm {subcommand} does not read ${var}"
                ));
            }
        }
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
        if template["activeDeadlineSeconds"].as_u64().unwrap_or(0) == 0 {
            problems.push(format!("template {name}: no activeDeadlineSeconds"));
        }
        if template["retryStrategy"]["retryPolicy"] != "OnError" {
            problems.push(format!(
                "template {name}: retries must be for pod errors only (retryPolicy OnError)"
            ));
        }
        let mounts: Vec<&str> = container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["mountPath"].as_str())
            .collect();
        if !mounts.contains(&"/tmp") {
            problems.push(format!(
                "template {name}: no writable /tmp (the root filesystem is read-only)"
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
        "complete",
        "rollback",
        "status",
        "uncordon",
    ] {
        if !subcommands.contains(expected) {
            problems.push(format!("no step runs klm {expected}"));
        }
    }
}

/// The wave loop: withParam over select-nodes' waves file, one wave at a
/// time, failFast, each wave opening with the guard.
fn check_waves(wf: &Workflow, problems: &mut Vec<String>) {
    let waves = wf.template("waves");
    assert_eq!(waves["parallelism"], 1, "waves run one at a time");
    assert_eq!(waves["failFast"], true, "no wave starts after a failed one");
    let groups = wf.groups(waves);
    assert_eq!(groups.len(), 1, "the waves template is one looped step");
    let looped = &groups[0][0];
    assert_eq!(looped["withParam"], "{{inputs.parameters.waves}}");
    let wave = wf.template(looped["template"].as_str().expect("a template"));

    // select-nodes writes the waves where its output parameter reads them.
    let select = wf.template("select-nodes");
    let args = wf.klm_args(select).expect("select-nodes runs klm");
    let path = select["outputs"]["parameters"][0]["valueFrom"]["path"]
        .as_str()
        .expect("waves output path");
    assert!(
        args.contains(&format!("--waves-file={path}")),
        "select-nodes writes --waves-file={path}"
    );
    let deploy = wf.template("deploy-version");
    let passes_waves = wf.groups(deploy).iter().flat_map(|g| g.iter()).any(|s| {
        s["template"] == "waves"
            && s["arguments"]["parameters"].as_array().is_some_and(|ps| {
                ps.iter()
                    .any(|p| p["value"] == "{{steps.select-nodes.outputs.parameters.waves}}")
            })
    });
    assert!(
        passes_waves,
        "deploy-version passes select-nodes' waves to the loop"
    );

    // Each wave opens with the guard, a single step.
    let first = wf.groups(wave)[0];
    assert_eq!(first.len(), 1, "the guard runs alone, first");
    let guard = wf.template(first[0]["template"].as_str().expect("a template"));
    let guard_args = wf.klm_args(guard).expect("the guard runs klm");
    if !(guard_args[0] == "status" && guard_args.contains(&"--fail-if-run-failed".to_string())) {
        problems.push(format!(
            "the wave's first step is not the run guard: klm {}",
            guard_args.join(" ")
        ));
    }
    if !guard_args.iter().any(|a| a == "--run-id={{workflow.name}}") {
        problems.push("the guard does not name this run".into());
    }

    // A failed upgrade leads to a rollback and then to the guard failing the wave.
    let names: Vec<Vec<&str>> = wf
        .groups(wave)
        .iter()
        .map(|g| {
            g.iter()
                .map(|s| s["template"].as_str().unwrap_or_default())
                .collect()
        })
        .collect();
    assert!(
        names.iter().flatten().any(|t| *t == "rollback"),
        "a wave can roll back: {names:?}"
    );
    assert!(
        names.iter().flatten().any(|t| *t == "complete"),
        "a wave completes: {names:?}"
    );
    assert_eq!(
        names.last().map(|g| g.as_slice()),
        Some(&["guard"][..]),
        "a rolled-back wave ends failing: {names:?}"
    );

    // The exit handler releases every node the run holds.
    let exit = wf.template(wf.spec["onExit"].as_str().unwrap_or_default());
    let releases = wf.groups(exit).iter().flat_map(|g| g.iter()).any(|s| {
        wf.templates
            .get(s["template"].as_str().unwrap_or_default())
            .and_then(|t| wf.klm_args(t))
            .is_some_and(|a| {
                a[0] == "uncordon"
                    && a.contains(&"--all-held".to_string())
                    && a.contains(&"--run-id={{workflow.name}}".to_string())
            })
    });
    assert!(
        releases,
        "the exit handler runs klm uncordon --all-held --run-id={{{{workflow.name}}}}"
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
    let (refs, fields) = expression_references(
        "jsonpath(steps['check-prerequisites'].outputs.result, '$.mode') == 'daemonset'",
    );
    assert_eq!(refs, vec!["steps.check-prerequisites.outputs.result"]);
    assert_eq!(fields, vec!["mode"]);
    assert_eq!(
        placeholders("a {{x.y}} b {{= 1 + 2 }}"),
        vec![(false, "x.y".to_string()), (true, "1 + 2".to_string())]
    );
}
