//! Connecting to the cluster: a kubeconfig (with context, cluster and user
//! overrides) when one is given or found, the in-cluster config otherwise.

use anyhow::Context;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::args::GlobalArgs;
use crate::error::UserError;

/// Builds a client from the global flags.
pub async fn client(args: &GlobalArgs) -> anyhow::Result<Client> {
    let config = config(args).await?;
    Client::try_from(config).context("building the Kubernetes client")
}

/// A client that returns 429 and 503 answers to the caller instead of
/// retrying them itself: for evictions, where 429 means a
/// PodDisruptionBudget refuses now and the caller decides how long to wait.
pub async fn client_without_retry(args: &GlobalArgs) -> anyhow::Result<Client> {
    let mut config = config(args).await?;
    config.default_retry = false;
    Client::try_from(config).context("building the Kubernetes client")
}

async fn config(args: &GlobalArgs) -> anyhow::Result<Config> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        cluster: args.cluster.clone(),
        user: args.user.clone(),
    };
    if let Some(path) = &args.kubeconfig {
        if !path.exists() {
            return Err(UserError::bad_input(format!("kubeconfig {} does not exist", path.display()))
                .hint("pass --kubeconfig with an existing file, or unset KUBECONFIG to use the in-cluster config")
                .into());
        }
        let kubeconfig = Kubeconfig::read_from(path).map_err(|e| {
            UserError::bad_input(format!("kubeconfig {} cannot be read: {e}", path.display())).hint(
                "check that the file is a valid kubeconfig (kubectl config view --kubeconfig FILE)",
            )
        })?;
        return Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| {
                UserError::bad_input(format!("kubeconfig {} is not usable: {e}", path.display()))
                .hint("check --context, --cluster and --user against `kubectl config get-contexts`")
                .into()
            });
    }
    if let Ok(config) = Config::incluster() {
        return Ok(config);
    }
    Config::from_kubeconfig(&options).await.map_err(|e| {
        UserError::bad_input(format!("no cluster configuration found: {e}"))
            .hint("pass --kubeconfig, set KUBECONFIG, or run inside a pod with a ServiceAccount")
            .into()
    })
}
