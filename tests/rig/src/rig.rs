//! [`Rig`]: one running control plane with the kata-deploy simulator, and
//! what tests do with it (namespaces, nodes, ServiceAccount credentials,
//! the audit log, Argo's CRDs).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::await_condition;
use kube::{Api, Client, Config};

use crate::argo::ArgoTier;
use crate::control_plane::{ControlPlane, bin_dir, workspace_root};
use crate::pki::Pki;
use crate::{AuditRequest, NodeSpec, audit, kubeconfig, nodes, simulator};

/// A running control plane with kwok and the kata-deploy simulator.
///
/// The processes belong to a dedicated thread that lives as long as the
/// test binary; they die with it (`PR_SET_PDEATHSIG`), so nothing outlives a
/// test run, even a killed one.
#[derive(Debug)]
pub struct Rig {
    dir: PathBuf,
    server: String,
    kubeconfig: PathBuf,
    ca: PathBuf,
    audit_log: PathBuf,
    namespaces: AtomicU32,
    crds: tokio::sync::Mutex<Option<String>>,
    control: Option<tokio::sync::mpsc::UnboundedSender<Control>>,
    pki: Pki,
    argo: OnceLock<std::result::Result<ArgoTier, String>>,
}

/// A request to the thread that owns the control plane's processes.
#[derive(Debug)]
enum Control {
    RestartApiserver(tokio::sync::oneshot::Sender<std::result::Result<(), String>>),
}

static SHARED: OnceLock<std::result::Result<Rig, String>> = OnceLock::new();

impl Rig {
    /// The rig of this test binary, started on first use and shared by
    /// every test in it (tests isolate themselves by namespace and node names).
    pub async fn shared() -> Result<&'static Rig> {
        let shared = tokio::task::spawn_blocking(|| {
            SHARED.get_or_init(|| {
                let name = std::env::current_exe()
                    .ok()
                    .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                    .unwrap_or_else(|| "test".into());
                Rig::start_owned(&name).map_err(|e| format!("{e:#}"))
            })
        })
        .await?;
        shared
            .as_ref()
            .map_err(|e| anyhow!("the test rig did not start: {e}"))
    }

    /// Starts a rig whose processes live on a dedicated thread (which also
    /// runs the simulator) for the rest of this process.
    pub fn start_owned(name: &str) -> Result<Rig> {
        let (sender, receiver) = std::sync::mpsc::channel();
        let name = name.to_string();
        std::thread::Builder::new()
            .name("klm-rig".into())
            .spawn(move || {
                let started = Instant::now();
                let plane = match ControlPlane::start(&run_dir(&name)) {
                    Ok(plane) => plane,
                    Err(e) => {
                        let _ = sender.send(Err(e));
                        return;
                    }
                };
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
                let (control, mut requests) = tokio::sync::mpsc::unbounded_channel();
                let mut rig = Rig::from_plane(&plane);
                rig.control = Some(control);
                let ready = runtime.block_on(rig.wait_controllers());
                if let Err(e) = ready {
                    let _ = sender.send(Err(e.context(plane.log_tails(20))));
                    return;
                }
                tracing::info!(elapsed = ?started.elapsed(), dir = %plane.dir.display(), "rig ready");
                let _ = sender.send(Ok(rig));
                let kubeconfig = plane.admin_kubeconfig.clone();
                let mut plane = plane;
                runtime.block_on(async move {
                    tokio::spawn(async move {
                        let result = match client_for(&kubeconfig).await {
                            Ok(client) => simulator::run(client).await,
                            Err(e) => Err(e),
                        };
                        if let Err(e) = result {
                            tracing::error!("the kata-deploy simulator stopped: {e:#}");
                        }
                    });
                    // Serve control requests; the processes live as long as this thread.
                    while let Some(request) = requests.recv().await {
                        match request {
                            Control::RestartApiserver(reply) => {
                                let _ = reply.send(plane.restart_apiserver().map_err(|e| format!("{e:#}")));
                            }
                        }
                    }
                    std::future::pending::<()>().await;
                });
            })?;
        receiver
            .recv()
            .context("the rig thread died while starting")?
    }

    /// Starts a rig owned by the caller's thread: it stops when `plane` drops.
    /// For `klm-rig up`, which runs the simulator itself.
    pub fn start_foreground(dir: &Path) -> Result<(Rig, ControlPlane)> {
        let plane = ControlPlane::start(dir)?;
        Ok((Rig::from_plane(&plane), plane))
    }

    fn from_plane(plane: &ControlPlane) -> Rig {
        Rig {
            dir: plane.dir.clone(),
            server: plane.server.clone(),
            kubeconfig: plane.admin_kubeconfig.clone(),
            ca: plane.pki.ca_cert.clone(),
            audit_log: plane.audit_log.clone(),
            namespaces: AtomicU32::new(0),
            crds: tokio::sync::Mutex::new(None),
            control: None,
            pki: plane.pki.clone(),
            argo: OnceLock::new(),
        }
    }

    /// Restarts kube-apiserver and waits until it serves again (clients and
    /// watches see their connections drop). Only for a rig started with
    /// [`Rig::start_owned`] or [`Rig::shared`].
    pub async fn restart_apiserver(&self) -> Result<()> {
        let control = self
            .control
            .as_ref()
            .ok_or_else(|| anyhow!("this rig cannot restart its apiserver"))?;
        let (reply, done) = tokio::sync::oneshot::channel();
        control
            .send(Control::RestartApiserver(reply))
            .map_err(|_| anyhow!("the rig thread is gone"))?;
        done.await?
            .map_err(|e| anyhow!("restarting the apiserver: {e}"))
    }

    /// Waits until the controller-manager has created the `default`
    /// ServiceAccount (its controllers run) and the scheduler can bind.
    pub async fn wait_controllers(&self) -> Result<()> {
        let client = self.client().await?;
        wait_default_service_account(&client, "default").await
    }

    /// A new admin client (for set-up and assertions; the code under test
    /// runs as a ServiceAccount). A fresh client per call: a kube client is
    /// bound to the tokio runtime that made it, and every test has its own.
    pub async fn client(&self) -> Result<Client> {
        client_for(&self.kubeconfig).await
    }

    /// The rig's Prometheus, started on first use, scraping the simulated
    /// nodes' sandbox failures ([`crate::metrics`]); None where Debian's
    /// prometheus is not installed (outside CI).
    pub async fn prometheus(&self) -> Result<Option<&'static crate::metrics::MetricsTier>> {
        crate::metrics::MetricsTier::shared(&self.kubeconfig, &self.dir).await
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The apiserver URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The `helm` built for the rig.
    pub fn helm(&self) -> PathBuf {
        bin_dir().join("helm")
    }

    /// A binary of the rig (`kubectl`, `helm`, `kwok`, ...).
    pub fn bin(&self, name: &str) -> PathBuf {
        bin_dir().join(name)
    }

    /// The rig's PKI (certificate and key files).
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// Where the Argo tier of this rig is kept once started (see `argo`).
    pub(crate) fn argo_slot(&self) -> &OnceLock<std::result::Result<ArgoTier, String>> {
        &self.argo
    }

    /// The rig's working directory (logs, PKI, kubeconfigs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates a fresh namespace `<prefix>-<n>` and waits for its `default`
    /// ServiceAccount (pods cannot be created before it exists).
    pub async fn namespace(&self, prefix: &str) -> Result<String> {
        let n = self.namespaces.fetch_add(1, Ordering::Relaxed);
        let prefix: String = prefix
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(40)
            .collect();
        let name = format!("{}-{n}", prefix.trim_matches('-'));
        let client = self.client().await?;
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        wait_default_service_account(&client, &name).await?;
        Ok(name)
    }

    /// Creates kwok nodes and waits until they are Ready.
    pub async fn add_nodes(&self, nodes: &[NodeSpec]) -> Result<()> {
        let client = self.client().await?;
        let timeout = Duration::from_secs(60 + nodes.len() as u64 / 10);
        nodes::create(&client, nodes, timeout).await
    }

    /// A kubeconfig holding a TokenRequest token of ServiceAccount
    /// `namespace/name`: whatever runs with it has exactly that account's rights.
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> Result<PathBuf> {
        let client = self.client().await?;
        let accounts: Api<ServiceAccount> = Api::namespaced(client, namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(4 * 3600),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let token: TokenRequest = accounts
            .create_subresource("token", name, &PostParams::default(), &request)
            .await
            .with_context(|| format!("requesting a token for ServiceAccount {namespace}/{name} (is the chart installed?)"))?;
        let token = token
            .status
            .and_then(|s| s.token)
            .ok_or_else(|| anyhow!("TokenRequest answered without a token"))?;
        let path = self.dir.join(format!("sa-{namespace}-{name}.kubeconfig"));
        kubeconfig::write_token(&path, &self.server, &self.ca, &token)?;
        Ok(path)
    }

    /// Every request `user` (e.g. `system:serviceaccount:ns:name`) made, from
    /// the apiserver's audit log.
    pub fn audit_requests(&self, user: &str) -> Result<Vec<AuditRequest>> {
        audit::requests(&self.audit_log, user)
    }

    /// Installs Argo Workflows' full CRDs of `version` (one the repository's
    /// Go modules pin, see [`argo_crds`](crate::argo_crds)) with server-side
    /// apply and waits until they are established. Serialised: the versions
    /// share CRD names.
    pub async fn apply_argo_crds(&self, version: &str) -> Result<()> {
        let mut applied = self.crds.lock().await;
        if applied.as_deref() == Some(version) {
            return Ok(());
        }
        crate::argo_crds::apply(&self.client().await?, version).await?;
        *applied = Some(version.to_string());
        Ok(())
    }
}

/// A client from a kubeconfig file.
pub async fn client_for(path: &Path) -> Result<Client> {
    let kubeconfig = Kubeconfig::read_from(path)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

async fn wait_default_service_account(client: &Client, namespace: &str) -> Result<()> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    tokio::time::timeout(Duration::from_secs(60), await_condition(accounts, "default", |sa: Option<&ServiceAccount>| sa.is_some()))
        .await
        .with_context(|| format!("the default ServiceAccount of namespace {namespace} did not appear within 60s (is kube-controller-manager running?)"))??;
    Ok(())
}

/// `target/rig/run/<name>-<pid>`; directories of processes that are gone are removed.
fn run_dir(name: &str) -> PathBuf {
    let root = workspace_root().join("target/rig/run");
    if let Ok(entries) = std::fs::read_dir(&root) {
        for entry in entries.flatten() {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let pid = file_name
                .rsplit('-')
                .next()
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid
                && !Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    root.join(format!("{name}-{}", std::process::id()))
}
