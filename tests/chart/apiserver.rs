//! The rendered chart on a real kube-apiserver (the rig) with Argo's full
//! CRDs, v3.7.18 and v4.0.7 (from the Argo modules that tests/argo and
//! tests/argolint/v4 pin, see `klm_rig::argo_crds`): every object is created
//! with server-side apply and strict field validation, so an unknown or
//! mistyped field in the WorkflowTemplate fails here, and the stored
//! template is compared with the rendered one, so a field the CRD schema
//! would silently prune fails too.

use anyhow::{Context, Result};
use klm_rig::Rig;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Discovery, Scope};
use kube::{Api, Client};
use serde_json::Value;

use crate::render;

/// Serialises this binary's tests that use Argo's CRDs: the two versions
/// share CRD names, so one test must not switch them under another.
static CRDS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// For tests that only need the Argo kinds served: holds the CRD lock with
/// a version installed.
pub async fn argo_crds_installed(rig: &Rig) -> Result<tokio::sync::MutexGuard<'static, ()>> {
    let guard = CRDS.lock().await;
    rig.apply_argo_crds("v4.0.7").await?;
    Ok(guard)
}

/// Server-side applies every document; returns what the apiserver stored.
async fn apply_all(client: &Client, discovery: &Discovery, docs: &[Value]) -> Result<Vec<Value>> {
    let mut stored = Vec::new();
    for doc in docs {
        let gvk = GroupVersionKind::try_from(&serde_json::from_value::<kube::core::TypeMeta>(
            doc.clone(),
        )?)?;
        let (resource, capabilities) = discovery
            .resolve_gvk(&gvk)
            .with_context(|| format!("the apiserver does not serve {gvk:?}"))?;
        let name = doc["metadata"]["name"]
            .as_str()
            .context("a name")?
            .to_string();
        let api: Api<DynamicObject> = match capabilities.scope {
            Scope::Namespaced => {
                let ns = doc["metadata"]["namespace"]
                    .as_str()
                    .context("a namespaced object without namespace")?;
                Api::namespaced_with(client.clone(), ns, &resource)
            }
            Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        let params = PatchParams::apply("klm-chart-test")
            .force()
            .validation_strict();
        let object = api
            .patch(&name, &params, &Patch::Apply(doc))
            .await
            .with_context(|| format!("server-side apply of {} {name} (strict)", gvk.kind))?;
        stored.push(serde_json::to_value(object)?);
    }
    Ok(stored)
}

/// Whether every field of `rendered` is in `stored` with the same value
/// (the apiserver may add fields, never drop or change one).
fn contained(rendered: &Value, stored: &Value, path: &str, missing: &mut Vec<String>) {
    match (rendered, stored) {
        (Value::Object(r), Value::Object(s)) => {
            for (key, value) in r {
                match s.get(key) {
                    Some(other) => contained(value, other, &format!("{path}.{key}"), missing),
                    None => missing.push(format!("{path}.{key} was dropped")),
                }
            }
        }
        (Value::Array(r), Value::Array(s)) if r.len() == s.len() => {
            for (i, (a, b)) in r.iter().zip(s).enumerate() {
                contained(a, b, &format!("{path}[{i}]"), missing);
            }
        }
        (a, b) if a == b => {}
        (a, b) => missing.push(format!("{path}: rendered {a}, stored {b}")),
    }
}

async fn check_version(rig: &Rig, version: &str) -> Result<()> {
    rig.apply_argo_crds(version).await?;
    let client = rig.client().await?;
    let discovery = Discovery::new(client.clone()).run().await?;
    for cluster_scoped in [false, true] {
        let namespace = rig.namespace("chart").await?;
        let release = format!("klm-{namespace}");
        let mut values = render::base_args();
        values.extend(
            [
                format!("argoNamespace={namespace}"),
                format!("defaults.helmNamespace={namespace}"),
                format!("defaults.verificationNamespace={namespace}"),
                format!("clusterScoped={cluster_scoped}"),
                format!("rbac.kataDeployEventsNamespace={namespace}"),
            ]
            .into_iter()
            .flat_map(|v| ["--set".to_string(), v]),
        );
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        let manifests =
            render::template_as(&release, &namespace, &values).map_err(anyhow::Error::msg)?;
        let docs = render::documents(&manifests);
        let stored = apply_all(&client, &discovery, &docs)
            .await
            .with_context(|| format!("Argo {version}, clusterScoped={cluster_scoped}"))?;
        let kind = if cluster_scoped {
            "ClusterWorkflowTemplate"
        } else {
            "WorkflowTemplate"
        };
        let index = docs
            .iter()
            .position(|d| d["kind"] == kind)
            .context("the template is rendered")?;
        let mut missing = Vec::new();
        contained(
            &docs[index]["spec"],
            &stored[index]["spec"],
            "spec",
            &mut missing,
        );
        anyhow::ensure!(
            missing.is_empty(),
            "Argo {version}: the apiserver changed the stored {kind}:\n  {}",
            missing.join("\n  ")
        );
    }
    Ok(())
}

/// Both Argo lines' CRDs accept the rendered chart, unchanged, and refuse a
/// template with an unknown field (so the check is not vacuous). One test
/// for both lines: they share CRD names, so they are installed in turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apiserver_accepts_the_rendered_chart_with_argo_crds() {
    let rig = Rig::shared().await.expect("the rig starts");
    let _crds = CRDS.lock().await;
    for version in ["v3.7.18", "v4.0.7"] {
        check_version(rig, version)
            .await
            .unwrap_or_else(|e| panic!("Argo CRDs {version}: {e:?}"));
        refuses_unknown_fields(rig)
            .await
            .unwrap_or_else(|e| panic!("Argo CRDs {version}: {e:?}"));
    }
}

/// A WorkflowTemplate with a misspelt field is refused, naming the field.
async fn refuses_unknown_fields(rig: &Rig) -> Result<()> {
    let client = rig.client().await?;
    let discovery = Discovery::new(client.clone()).run().await?;
    let namespace = rig.namespace("chart-bad").await?;
    let docs = render::documents(&render::render(&[
        "--set",
        &format!("argoNamespace={namespace}"),
    ]));
    let mut template = render::the(&docs, "WorkflowTemplate").clone();
    template["spec"]["templates"][0]["failfast"] = Value::Bool(true);
    let err = apply_all(&client, &discovery, &[template])
        .await
        .err()
        .context("a template with an unknown field was accepted")?;
    let text = format!("{err:?}");
    anyhow::ensure!(
        text.contains("failfast"),
        "the refusal does not name the field:\n{text}"
    );
    Ok(())
}
