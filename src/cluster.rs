//! Connecting to the cluster, the way kubectl and kubert do: a local
//! kubeconfig when any connection flag (or `$KUBECONFIG`) names one, the
//! in-cluster config first when none does; impersonation on top. helm is
//! pointed at the same cluster as the same identity ([`helm_connection`]).

use std::ffi::OsString;
use std::sync::Arc;

use anyhow::Context;
use kube::config::{KubeConfigOptions, Kubeconfig, NamedContext};
use kube::{Client, Config};

use crate::args::{ClientArgs, GlobalArgs};
use crate::error::UserError;

/// The context klm writes for helm when `--cluster` or `--user` overrides
/// the kubeconfig's (helm has no such flags).
const HELM_CONTEXT: &str = "klm";

/// Builds a client from the global flags.
pub async fn client(args: &GlobalArgs) -> anyhow::Result<Client> {
    let config = config(&args.client).await?;
    Client::try_from(config).context("building the Kubernetes client")
}

/// A client that returns 429 and 503 answers to the caller instead of
/// retrying them itself: for evictions, where 429 means a
/// PodDisruptionBudget refuses now and the caller decides how long to wait.
pub async fn client_without_retry(args: &GlobalArgs) -> anyhow::Result<Client> {
    let mut config = config(&args.client).await?;
    config.default_retry = false;
    Client::try_from(config).context("building the Kubernetes client")
}

impl ClientArgs {
    /// Whether the flags or the environment name a local kubeconfig.
    pub fn names_local_config(&self) -> bool {
        self.kubeconfig.is_some()
            || self.context.is_some()
            || self.cluster.is_some()
            || self.user.is_some()
            || std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty())
    }

    fn options(&self) -> KubeConfigOptions {
        KubeConfigOptions {
            context: self.context.clone(),
            cluster: self.cluster.clone(),
            user: self.user.clone(),
        }
    }
}

async fn config(args: &ClientArgs) -> anyhow::Result<Config> {
    let mut config = if args.names_local_config() {
        local_config(args).await?
    } else if let Ok(config) = Config::incluster() {
        config
    } else {
        local_config(args).await?
    };
    config
        .headers
        .push((http::header::USER_AGENT, user_agent(args.step.as_deref())));
    if let Some(user) = &args.as_user {
        config.auth_info.impersonate = Some(user.clone());
    }
    if !args.as_groups.is_empty() {
        config.auth_info.impersonate_groups = Some(args.as_groups.clone());
    }
    Ok(config)
}

/// `klm/VERSION (STEP)`, as kubectl names itself: the apiserver's audit log
/// and metrics then say which klm, and which of its steps, made a request.
fn user_agent(step: Option<&str>) -> http::HeaderValue {
    let agent = match step {
        Some(step) => format!("klm/{} ({step})", env!("CARGO_PKG_VERSION")),
        None => format!("klm/{}", env!("CARGO_PKG_VERSION")),
    };
    // A subcommand name is ASCII; a value that is not falls back to the bare name.
    http::HeaderValue::from_str(&agent).unwrap_or(http::HeaderValue::from_static("klm"))
}

async fn local_config(args: &ClientArgs) -> anyhow::Result<Config> {
    let (kubeconfig, source) = kubeconfig(args)?;
    Config::from_custom_kubeconfig(kubeconfig, &args.options())
        .await
        .map_err(|e| {
            UserError::bad_input(format!("kubeconfig {source} is not usable: {e}"))
                .hint("check --context, --cluster and --user against `kubectl config get-contexts`")
                .into()
        })
}

/// The kubeconfig the flags name: `--kubeconfig`, else the files of
/// `$KUBECONFIG` merged as kubectl merges them, else `~/.kube/config`; with
/// where it came from, for messages.
fn kubeconfig(args: &ClientArgs) -> Result<(Kubeconfig, String), UserError> {
    if let Some(path) = &args.kubeconfig {
        if !path.exists() {
            return Err(UserError::bad_input(format!("kubeconfig {} does not exist", path.display()))
                .hint("pass --kubeconfig with an existing file, or leave it out to use $KUBECONFIG or the in-cluster config"));
        }
        let kubeconfig = Kubeconfig::read_from(path).map_err(|e| {
            UserError::bad_input(format!("kubeconfig {} cannot be read: {e}", path.display())).hint(
                "check that the file is a valid kubeconfig (kubectl config view --kubeconfig FILE)",
            )
        })?;
        return Ok((kubeconfig, path.display().to_string()));
    }
    match Kubeconfig::from_env() {
        Ok(Some(kubeconfig)) => return Ok((kubeconfig, "$KUBECONFIG".into())),
        Ok(None) => {}
        Err(e) => {
            return Err(UserError::bad_input(format!("$KUBECONFIG cannot be read: {e}"))
                .hint("every file $KUBECONFIG lists (separated by ':') must be a readable kubeconfig; unset it to use the in-cluster config"));
        }
    }
    Kubeconfig::read()
        .map(|kubeconfig| (kubeconfig, "~/.kube/config".into()))
        .map_err(|e| {
            UserError::bad_input(format!("no cluster configuration found: {e}")).hint(
                "pass --kubeconfig, set KUBECONFIG, or run inside a pod with a ServiceAccount",
            )
        })
}

/// helm's flags for the cluster and identity klm uses, and the kubeconfig
/// file klm wrote for it, if it had to (kept as long as helm may run).
pub fn helm_connection(args: &ClientArgs) -> Result<crate::helm::Connection, UserError> {
    let mut flags: Vec<OsString> = Vec::new();
    let mut written = None;
    if args.cluster.is_some() || args.user.is_some() {
        // helm takes a context, not a cluster or a user: give it a context
        // that is the chosen one with the overrides, in a file of its own.
        let (kubeconfig, source) = kubeconfig(args)?;
        let derived = with_overrides(kubeconfig, args).map_err(|why| {
            UserError::bad_input(format!("kubeconfig {source}: {why}"))
                .hint("check --context, --cluster and --user against `kubectl config get-contexts`")
        })?;
        let path = write_private(&derived).map_err(|e| {
            UserError::precondition(format!("cannot write the kubeconfig for helm: {e}"))
                .hint("klm writes it in $TMPDIR; make that writable")
        })?;
        flags.push("--kubeconfig".into());
        flags.push(path.to_path_buf().into_os_string());
        flags.push("--kube-context".into());
        flags.push(HELM_CONTEXT.into());
        written = Some(Arc::new(path));
    } else {
        if let Some(kubeconfig) = &args.kubeconfig {
            flags.push("--kubeconfig".into());
            flags.push(kubeconfig.clone().into_os_string());
        }
        if let Some(context) = &args.context {
            flags.push("--kube-context".into());
            flags.push(context.into());
        }
    }
    if let Some(user) = &args.as_user {
        flags.push("--kube-as-user".into());
        flags.push(user.into());
    }
    for group in &args.as_groups {
        flags.push("--kube-as-group".into());
        flags.push(group.into());
    }
    Ok(crate::helm::Connection { flags, written })
}

/// The kubeconfig with one more context, [`HELM_CONTEXT`], current: the
/// chosen context (or the current one) with `--cluster`/`--user` instead of
/// its own.
fn with_overrides(mut kubeconfig: Kubeconfig, args: &ClientArgs) -> Result<Kubeconfig, String> {
    let base_name = args
        .context
        .clone()
        .or_else(|| kubeconfig.current_context.clone())
        .ok_or("no --context and no current context")?;
    let mut context = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == base_name)
        .and_then(|c| c.context.clone())
        .ok_or_else(|| format!("no context {base_name:?}"))?;
    if let Some(cluster) = &args.cluster {
        if !kubeconfig.clusters.iter().any(|c| &c.name == cluster) {
            return Err(format!("no cluster {cluster:?}"));
        }
        context.cluster = cluster.clone();
    }
    if let Some(user) = &args.user {
        if !kubeconfig.auth_infos.iter().any(|u| &u.name == user) {
            return Err(format!("no user {user:?}"));
        }
        context.user = Some(user.clone());
    }
    kubeconfig.contexts.retain(|c| c.name != HELM_CONTEXT);
    kubeconfig.contexts.push(NamedContext {
        name: HELM_CONTEXT.into(),
        context: Some(context),
        other: Default::default(),
    });
    kubeconfig.current_context = Some(HELM_CONTEXT.into());
    Ok(kubeconfig)
}

/// Writes a kubeconfig (as JSON, which is YAML) to a file only this user can
/// read, removed when the returned path is dropped.
fn write_private(kubeconfig: &Kubeconfig) -> std::io::Result<tempfile::TempPath> {
    use std::io::Write;
    let mut file = tempfile::Builder::new()
        .prefix("klm-helm-")
        .suffix(".kubeconfig")
        .tempfile()?;
    file.write_all(&serde_json::to_vec(kubeconfig).map_err(std::io::Error::other)?)?;
    file.flush()?;
    Ok(file.into_temp_path())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECONFIG: &str = r#"
apiVersion: v1
kind: Config
current-context: main
clusters:
  - name: prod
    cluster: {server: "https://127.0.0.1:6443"}
  - name: staging
    cluster: {server: "https://127.0.0.1:7443"}
users:
  - name: admin
    user: {token: admin-token}
  - name: operator
    user: {token: operator-token}
contexts:
  - name: main
    context: {cluster: prod, user: admin, namespace: kube-system}
"#;

    fn args() -> ClientArgs {
        ClientArgs::default()
    }

    fn written_path(file: &Option<Arc<tempfile::TempPath>>) -> Option<std::path::PathBuf> {
        file.as_ref().map(|path| path.to_path_buf())
    }

    #[test]
    fn requests_name_klm_and_its_step() {
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            user_agent(Some("cordon")),
            format!("klm/{version} (cordon)").as_str()
        );
        assert_eq!(user_agent(None), format!("klm/{version}").as_str());
    }

    #[test]
    fn helm_gets_the_same_context_and_identity() {
        let mut args = args();
        args.kubeconfig = Some("/etc/kube/config".into());
        args.context = Some("main".into());
        args.as_user = Some("system:serviceaccount:argo:klm".into());
        args.as_groups = vec!["ops".into(), "audit".into()];
        let crate::helm::Connection { flags, written } = helm_connection(&args).unwrap();
        assert!(written.is_none());
        assert_eq!(
            flags,
            [
                "--kubeconfig",
                "/etc/kube/config",
                "--kube-context",
                "main",
                "--kube-as-user",
                "system:serviceaccount:argo:klm",
                "--kube-as-group",
                "ops",
                "--kube-as-group",
                "audit"
            ]
            .map(OsString::from)
        );
        assert!(
            helm_connection(&ClientArgs::default())
                .unwrap()
                .flags
                .is_empty()
        );
    }

    #[test]
    fn cluster_and_user_overrides_reach_helm_as_a_context_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, KUBECONFIG).unwrap();
        let mut args = args();
        args.kubeconfig = Some(path);
        args.cluster = Some("staging".into());
        args.user = Some("operator".into());
        let crate::helm::Connection { flags, written } = helm_connection(&args).unwrap();
        let file = written_path(&written).expect("a kubeconfig for helm");
        assert_eq!(flags[0], "--kubeconfig");
        assert_eq!(flags[1], file.as_os_str());
        assert_eq!(
            flags[2..],
            ["--kube-context", HELM_CONTEXT].map(OsString::from)
        );
        let derived = Kubeconfig::read_from(&file).unwrap();
        let context = derived
            .contexts
            .iter()
            .find(|c| c.name == HELM_CONTEXT)
            .and_then(|c| c.context.clone())
            .unwrap();
        assert_eq!(context.cluster, "staging");
        assert_eq!(context.user.as_deref(), Some("operator"));
        assert_eq!(context.namespace.as_deref(), Some("kube-system"));
        drop(written);
        assert!(!file.exists(), "the file goes with the helm that used it");

        args.user = Some("nobody".into());
        let refused = helm_connection(&args).unwrap_err();
        assert!(
            refused.message.contains("no user \"nobody\""),
            "{}",
            refused.message
        );
    }
}
