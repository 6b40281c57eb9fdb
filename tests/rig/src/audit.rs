//! The apiserver's audit log, read back: which requests a ServiceAccount
//! made and what the apiserver answered, so tests can list the permissions
//! a run used and show a missing one.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

/// One request of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AuditRequest {
    /// verb (get, list, watch, create, patch, update, delete, deletecollection).
    pub verb: String,
    /// API group ("" for core).
    pub api_group: String,
    /// Resource (plural).
    pub resource: String,
    /// Subresource, if any.
    pub subresource: Option<String>,
    /// Namespace, if namespaced.
    pub namespace: Option<String>,
    /// Object name, if any.
    pub name: Option<String>,
    /// HTTP status code of the response.
    pub code: u16,
}

impl AuditRequest {
    /// `verb group/resource[/subresource]`, the shape of an RBAC rule.
    pub fn permission(&self) -> String {
        let group = if self.api_group.is_empty() {
            "core"
        } else {
            &self.api_group
        };
        match &self.subresource {
            Some(sub) => format!("{} {group}/{}/{sub}", self.verb, self.resource),
            None => format!("{} {group}/{}", self.verb, self.resource),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    stage: String,
    verb: String,
    user: User,
    object_ref: Option<ObjectRef>,
    response_status: Option<Status>,
}

#[derive(Deserialize)]
struct User {
    username: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectRef {
    resource: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
    api_group: Option<String>,
    subresource: Option<String>,
}

#[derive(Deserialize)]
struct Status {
    code: Option<u16>,
}

/// Every completed request of `user` in the audit log at `path` (a watch
/// counts once it started streaming).
pub fn requests(path: &Path, user: &str) -> Result<Vec<AuditRequest>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut requests = Vec::new();
    for line in text.lines() {
        if !line.contains(user) {
            continue;
        }
        let Ok(event) = serde_json::from_str::<Event>(line) else {
            continue;
        };
        let counts = event.stage == "ResponseComplete"
            || (event.stage == "ResponseStarted" && event.verb == "watch");
        if event.user.username != user || !counts {
            continue;
        }
        let Some(object) = event.object_ref else {
            continue;
        };
        requests.push(AuditRequest {
            verb: event.verb,
            api_group: object.api_group.unwrap_or_default(),
            resource: object.resource.unwrap_or_default(),
            subresource: object.subresource,
            namespace: object.namespace,
            name: object.name,
            code: event.response_status.and_then(|s| s.code).unwrap_or(0),
        });
    }
    Ok(requests)
}
