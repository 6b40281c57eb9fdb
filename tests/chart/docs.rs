//! The chart's documentation agrees with the chart: README.md documents
//! every value (with its default) and every workflow parameter, and no
//! other; its RBAC tables list exactly the rules rendered; the schema types
//! every value.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::render::{self, chart_dir};

fn readme() -> String {
    std::fs::read_to_string(chart_dir().join("README.md")).expect("chart README.md")
}

fn values() -> Value {
    let text = std::fs::read_to_string(chart_dir().join("values.yaml")).expect("values.yaml");
    serde_saphyr::from_str(&text).expect("values.yaml parses")
}

fn schema() -> Value {
    let text = std::fs::read_to_string(chart_dir().join("values.schema.json"))
        .expect("values.schema.json");
    serde_json::from_str(&text).expect("values.schema.json parses")
}

/// The rows of the markdown table under a `## heading`, as cells.
fn table(readme: &str, heading: &str) -> Vec<Vec<String>> {
    let section = readme
        .split(&format!("\n## {heading}\n"))
        .nth(1)
        .unwrap_or_else(|| panic!("README has no section {heading}"));
    let section = section.split("\n## ").next().unwrap_or_default();
    rows(section)
}

/// Markdown table rows (without header and separator) of a text.
fn rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_string())
                .collect::<Vec<String>>()
        })
        .filter(|cells| {
            !cells[0].starts_with("---")
                && !matches!(cells[0].as_str(), "Value" | "Parameter" | "Resources")
        })
        .collect()
}

fn unticked(cell: &str) -> String {
    cell.trim().trim_matches('`').to_string()
}

/// Every documented key of values.yaml: leaves, and objects the schema
/// leaves free-form (resources, securityContext...), by dotted path.
fn value_keys(value: &Value, schema: &Value, prefix: &str, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) if schema.get("properties").is_some() => {
            for (key, child) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                let child_schema = schema["properties"]
                    .get(key)
                    .unwrap_or_else(|| panic!("values.schema.json does not type {path}"));
                value_keys(child, child_schema, &path, out);
            }
        }
        _ => {
            out.insert(prefix.to_string(), value.clone());
        }
    }
}

/// How README writes a scalar default.
fn written(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if s.is_empty() => Some("`\"\"`".into()),
        Value::String(s) => Some(format!("`{s}`")),
        Value::Bool(b) => Some(format!("`{b}`")),
        Value::Number(n) => Some(format!("`{n}`")),
        Value::Array(a) if a.is_empty() => Some("`[]`".into()),
        Value::Object(o) if o.is_empty() => Some("`{}`".into()),
        _ => None,
    }
}

#[test]
fn the_readme_documents_every_value_with_its_default() {
    let mut keys = BTreeMap::new();
    value_keys(&values(), &schema(), "", &mut keys);
    let documented: BTreeMap<String, String> = table(&readme(), "Values")
        .into_iter()
        .map(|cells| (unticked(&cells[0]), cells[1].clone()))
        .collect();
    let mut problems = Vec::new();
    for (key, value) in &keys {
        match documented.get(key) {
            None => problems.push(format!("value {key} is not in README's Values table")),
            Some(default) => {
                if let Some(expected) = written(value)
                    && default != &expected
                {
                    problems.push(format!(
                        "value {key}: README says default {default}, values.yaml has {expected}"
                    ));
                }
            }
        }
    }
    for key in documented.keys() {
        if !keys.contains_key(key) {
            problems.push(format!(
                "README documents value {key}, which values.yaml does not have"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_readme_documents_every_workflow_parameter() {
    let docs = render::documents(&render::render(&[]));
    let parameters: BTreeMap<String, Option<String>> =
        render::the(&docs, "WorkflowTemplate")["spec"]["arguments"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().expect("name").to_string(),
                    p.get("value").and_then(Value::as_str).map(String::from),
                )
            })
            .collect();
    let documented: BTreeMap<String, String> = table(&readme(), "Workflow parameters")
        .into_iter()
        .map(|cells| (unticked(&cells[0]), cells[1].clone()))
        .collect();
    let mut problems = Vec::new();
    for (name, value) in &parameters {
        match (documented.get(name), value) {
            (None, _) => problems.push(format!(
                "parameter {name} is not in README's Workflow parameters table"
            )),
            (Some(default), None) if default != "(required)" => problems.push(format!(
                "parameter {name} is required; README says {default}"
            )),
            (Some(default), Some(value)) if name != "verification-pod" => {
                let expected = if value.is_empty() {
                    "`\"\"`".to_string()
                } else {
                    format!("`{value}`")
                };
                if default != &expected {
                    problems.push(format!("parameter {name}: README says default {default}, the template has {expected}"));
                }
            }
            _ => {}
        }
    }
    for name in documented.keys() {
        if !parameters.contains_key(name) {
            problems.push(format!(
                "README documents parameter {name}, which the template does not have"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// One README RBAC block per rendered (Cluster)Role, one row per rule, with
/// the rule's resources and verbs.
#[test]
fn the_readme_rbac_tables_are_the_rendered_rules() {
    let docs = render::documents(&render::render(&[]));
    let readme = readme();
    let section = readme.split("\n## RBAC\n").nth(1).expect("an RBAC section");
    let section = section.split("\n## ").next().unwrap_or_default();
    let fullname = render::RELEASE;
    let mut problems = Vec::new();
    for doc in docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
    {
        let name =
            doc["metadata"]["name"]
                .as_str()
                .expect("name")
                .replacen(fullname, "<fullname>", 1);
        let heading = format!("{} `{name}`", doc["kind"].as_str().unwrap_or_default());
        let Some(block) = section.split(&heading).nth(1) else {
            problems.push(format!("README's RBAC section has no table for {heading}"));
            continue;
        };
        let block = block.split("\n\n").take(3).collect::<Vec<_>>().join("\n\n");
        let rows = rows(&block);
        let rules = doc["rules"].as_array().expect("rules");
        if rows.len() != rules.len() {
            problems.push(format!(
                "{heading}: README lists {} rules, the chart renders {}",
                rows.len(),
                rules.len()
            ));
        }
        for rule in rules {
            let groups: Vec<&str> = rule["apiGroups"]
                .as_array()
                .expect("apiGroups")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let resources: BTreeSet<String> = rule["resources"]
                .as_array()
                .expect("resources")
                .iter()
                .filter_map(Value::as_str)
                .flat_map(|r| {
                    groups.iter().map(move |g| {
                        if g.is_empty() {
                            r.to_string()
                        } else {
                            format!("{g}/{r}")
                        }
                    })
                })
                .collect();
            let verbs: Vec<&str> = rule["verbs"]
                .as_array()
                .expect("verbs")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let found = rows.iter().any(|cells| {
                let mut group = String::new();
                let listed: BTreeSet<String> = cells[0]
                    .split(", ")
                    .map(|cell| {
                        let item = unticked(cell);
                        match item.rsplit_once('/') {
                            Some((g, _)) if g.contains('.') => {
                                group = g.to_string();
                                item
                            }
                            _ if !group.is_empty() => format!("{group}/{item}"),
                            _ => item,
                        }
                    })
                    .collect();
                let listed_verbs: Vec<String> = cells[1].split(", ").map(unticked).collect();
                listed == resources && listed_verbs == verbs
            });
            if !found {
                problems.push(format!(
                    "{heading}: README has no row for {resources:?} {verbs:?}"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The example verification pod keeps to the contract README describes.
#[test]
fn the_example_verification_pod_keeps_the_contract() {
    let text = std::fs::read_to_string(render::example_pod()).expect("example pod");
    let pod: Value = serde_saphyr::from_str(&text).expect("example pod parses");
    assert_eq!(pod["kind"], "Pod");
    assert_eq!(pod["metadata"]["name"], "${TEST_POD}");
    assert_eq!(
        pod["spec"]["nodeSelector"]["kubernetes.io/hostname"],
        "${NODE}"
    );
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    assert!(
        pod["spec"]["tolerations"].as_array().is_some_and(|t| t
            .iter()
            .any(|t| t["operator"] == "Exists" && t.get("key").is_none())),
        "tolerates the cordon"
    );
    // README shows the same pod, without the comments.
    let body: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .collect();
    assert!(
        readme().contains(&body.join("\n")),
        "README's example differs from examples/verification-pod.yaml"
    );
}
