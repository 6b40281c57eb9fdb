//! Starts and stops the control plane on loopback: etcd, kube-apiserver
//! (RBAC, ServiceAccount token signing, audit log), kube-controller-manager,
//! kube-scheduler and kwok, each a child process with its own log.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::kubeconfig;
use crate::pki::Pki;
use crate::process::Component;

/// The kwok Stages (how simulated nodes and pods behave).
pub const STAGES: &str = include_str!("../../fixtures/kwok/stages.yaml");

/// The audit policy: every request of a ServiceAccount outside kube-system, at
/// Metadata level (who did what to which object, and the response code), and
/// the pod status and node writes of kwok and the simulator (the events the
/// benchmarks time klm's reactions against).
const AUDIT_POLICY: &str = "\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    userGroups: [\"system:serviceaccounts:kube-system\"]
  - level: Metadata
    userGroups: [\"system:serviceaccounts\"]
  - level: Metadata
    users: [\"rig-admin\"]
    verbs: [patch, update]
    resources:
      - group: \"\"
        resources: [pods/status, nodes]
  - level: None
";

/// Where the rig's binaries are (built by `tests/rig/build.sh`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KLM_RIG_BIN") {
        return PathBuf::from(dir);
    }
    workspace_root().join("target/rig/bin")
}

/// The repository root.
pub fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// A running control plane.
pub struct ControlPlane {
    /// The working directory (PKI, kubeconfigs, logs, etcd data).
    pub dir: PathBuf,
    /// The PKI.
    pub pki: Pki,
    /// The apiserver URL.
    pub server: String,
    /// Admin kubeconfig.
    pub admin_kubeconfig: PathBuf,
    /// The apiserver's audit log.
    pub audit_log: PathBuf,
    /// Started components, in start order (stopped in reverse).
    components: Vec<Component>,
}

impl ControlPlane {
    /// Starts everything in `dir` and waits until the apiserver is ready and
    /// the controllers run.
    pub fn start(dir: &Path) -> Result<ControlPlane> {
        let started = Instant::now();
        let bin = bin_dir();
        for name in ["kuberig", "kwok", "helm"] {
            if !bin.join(name).exists() {
                bail!(
                    "{} is missing: run `make rig-bins` (tests/rig/build.sh) to build the rig's binaries",
                    bin.join(name).display()
                );
            }
        }
        std::fs::create_dir_all(dir)?;
        let pki = Pki::generate(&dir.join("pki"))?;
        let [
            etcd_port,
            etcd_peer,
            api_port,
            kcm_port,
            sched_port,
            kwok_port,
        ] = free_ports()?;
        let server = format!("https://127.0.0.1:{api_port}");
        let mut plane = ControlPlane {
            dir: dir.to_path_buf(),
            admin_kubeconfig: dir.join("admin.kubeconfig"),
            audit_log: dir.join("audit.log"),
            server: server.clone(),
            pki,
            components: Vec::new(),
        };
        let pki = plane.pki.clone();

        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        plane.spawn(
            "etcd",
            &bin.join("etcd"),
            &[
                "--name=rig".into(),
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=rig={peer_url}"),
                "--unsafe-no-fsync=true".into(),
                "--quota-backend-bytes=8589934592".into(),
                "--max-request-bytes=16777216".into(),
                "--log-level=warn".into(),
            ],
        )?;

        let audit_policy = dir.join("audit-policy.yaml");
        std::fs::write(&audit_policy, AUDIT_POLICY)?;
        plane.spawn(
            "kube-apiserver",
            &bin.join("kube-apiserver"),
            &[
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={api_port}"),
                format!("--tls-cert-file={}", pki.apiserver.cert.display()),
                format!("--tls-private-key-file={}", pki.apiserver.key.display()),
                format!("--client-ca-file={}", pki.ca_cert.display()),
                format!(
                    "--kubelet-client-certificate={}",
                    pki.apiserver_kubelet_client.cert.display()
                ),
                format!(
                    "--kubelet-client-key={}",
                    pki.apiserver_kubelet_client.key.display()
                ),
                "--kubelet-preferred-address-types=InternalIP".into(),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-account-key-file={}", pki.sa_pub.display()),
                format!(
                    "--service-account-signing-key-file={}",
                    pki.sa_key.display()
                ),
                "--authorization-mode=Node,RBAC".into(),
                // Only the real node's kubelet has a node identity: this restricts it alone.
                "--enable-admission-plugins=NodeRestriction".into(),
                "--service-cluster-ip-range=10.96.0.0/16".into(),
                "--allow-privileged=true".into(),
                format!("--audit-policy-file={}", audit_policy.display()),
                format!("--audit-log-path={}", plane.audit_log.display()),
                "--audit-log-format=json".into(),
                "--audit-log-mode=blocking".into(),
                "--max-requests-inflight=1000".into(),
                "--max-mutating-requests-inflight=500".into(),
                "--profiling=false".into(),
                "--v=1".into(),
            ],
        )?;
        kubeconfig::write_cert(
            &plane.admin_kubeconfig,
            &server,
            &pki.ca_cert,
            &pki.admin.cert,
            &pki.admin.key,
        )?;
        plane.wait_ready(&api_port.to_string(), started)?;

        let kcm_kubeconfig = dir.join("controller-manager.kubeconfig");
        kubeconfig::write_cert(
            &kcm_kubeconfig,
            &server,
            &pki.ca_cert,
            &pki.controller_manager.cert,
            &pki.controller_manager.key,
        )?;
        plane.spawn(
            "kube-controller-manager",
            &bin.join("kube-controller-manager"),
            &[
                format!("--kubeconfig={}", kcm_kubeconfig.display()),
                format!("--authentication-kubeconfig={}", kcm_kubeconfig.display()),
                format!("--authorization-kubeconfig={}", kcm_kubeconfig.display()),
                "--use-service-account-credentials=true".into(),
                format!("--root-ca-file={}", pki.ca_cert.display()),
                format!("--service-account-private-key-file={}", pki.sa_key.display()),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={kcm_port}"),
                "--kube-api-qps=200".into(),
                "--kube-api-burst=400".into(),
                "--concurrent-daemonset-syncs=4".into(),
                "--concurrent-job-syncs=10".into(),
                "--controllers=*,-certificatesigningrequest-approving-controller,-certificatesigningrequest-cleaner-controller,-certificatesigningrequest-signing-controller,-cloud-node-lifecycle-controller,-persistentvolume-attach-detach-controller,-persistentvolume-binder-controller,-persistentvolume-expander-controller,-ephemeral-volume-controller,-persistentvolume-protection-controller,-persistentvolumeclaim-protection-controller,-node-route-controller,-service-lb-controller,-horizontal-pod-autoscaler-controller".into(),
                "--v=1".into(),
            ],
        )?;

        let sched_kubeconfig = dir.join("scheduler.kubeconfig");
        kubeconfig::write_cert(
            &sched_kubeconfig,
            &server,
            &pki.ca_cert,
            &pki.scheduler.cert,
            &pki.scheduler.key,
        )?;
        let sched_config = dir.join("scheduler.yaml");
        std::fs::write(
            &sched_config,
            format!(
                "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nleaderElection:\n  leaderElect: false\nclientConnection:\n  kubeconfig: {}\n  qps: 200\n  burst: 400\n",
                sched_kubeconfig.display()
            ),
        )?;
        plane.spawn(
            "kube-scheduler",
            &bin.join("kube-scheduler"),
            &[
                format!("--config={}", sched_config.display()),
                format!("--authentication-kubeconfig={}", sched_kubeconfig.display()),
                format!("--authorization-kubeconfig={}", sched_kubeconfig.display()),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={sched_port}"),
                "--v=1".into(),
            ],
        )?;

        // What `kubectl logs` shows for every simulated container.
        let container_log = dir.join("container.log");
        std::fs::write(
            &container_log,
            "2026-01-01T00:00:00.000000000Z stdout F rig: simulated container output (kwok runs no containers)\n",
        )?;
        let stages = dir.join("kwok-stages.yaml");
        std::fs::write(
            &stages,
            format!(
                "{STAGES}\n---\napiVersion: kwok.x-k8s.io/v1alpha1\nkind: ClusterLogs\nmetadata:\n  name: rig-logs\nspec:\n  logs:\n    - logsFile: {}\n",
                container_log.display()
            ),
        )?;
        plane.spawn(
            "kwok",
            &bin.join("kwok"),
            &[
                format!("--kubeconfig={}", plane.admin_kubeconfig.display()),
                format!("--config={}", stages.display()),
                "--manage-all-nodes=false".into(),
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake".into(),
                "--node-lease-duration-seconds=40".into(),
                "--node-ip=127.0.0.1".into(),
                format!("--node-port={kwok_port}"),
                format!("--server-address=127.0.0.1:{kwok_port}"),
                format!("--tls-cert-file={}", pki.kwok_server.cert.display()),
                format!("--tls-private-key-file={}", pki.kwok_server.key.display()),
                "--cidr=10.64.0.1/10".into(),
                "--v=INFO".into(),
            ],
        )?;
        Ok(plane)
    }

    fn spawn(&mut self, name: &str, binary: &Path, args: &[String]) -> Result<()> {
        let component = Component::start(name, binary, args, &self.dir)?;
        self.components.push(component);
        Ok(())
    }

    /// Polls the apiserver's `/readyz` until it answers ok (an apiserver that
    /// is starting has no watch to offer), failing with the log tails of
    /// components that exited.
    fn wait_ready(&mut self, port: &str, started: Instant) -> Result<()> {
        let deadline = started + Duration::from_secs(90);
        let url = format!("https://127.0.0.1:{port}/readyz");
        loop {
            for component in &mut self.components {
                component.check_alive()?;
            }
            let status = std::process::Command::new(bin_dir().join("kubectl"))
                .args([
                    "--kubeconfig",
                    &self.admin_kubeconfig.display().to_string(),
                    "get",
                    "--raw",
                    "/readyz",
                ])
                .output()
                .with_context(|| format!("querying {url}"))?;
            if status.status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let tails: Vec<String> = self
                    .components
                    .iter()
                    .map(|c| format!("--- {} ---\n{}", c.name, c.log_tail(30)))
                    .collect();
                bail!(
                    "the apiserver did not become ready within 90s:\n{}",
                    tails.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Restarts kube-apiserver (same flags, port and storage) and waits until
    /// it is ready again: for tests that prove watches survive it.
    pub fn restart_apiserver(&mut self) -> Result<()> {
        let started = Instant::now();
        let apiserver = self
            .components
            .iter_mut()
            .find(|c| c.name == "kube-apiserver")
            .ok_or_else(|| anyhow::anyhow!("no kube-apiserver in this rig"))?;
        apiserver.restart()?;
        let port = self
            .server
            .rsplit(':')
            .next()
            .unwrap_or_default()
            .to_string();
        self.wait_ready(&port, started)
    }

    /// Fails with the log tail of the first component that exited.
    pub fn check_alive(&mut self) -> Result<()> {
        for component in &mut self.components {
            component.check_alive()?;
        }
        Ok(())
    }

    /// The log tails of every component (for a failed start).
    pub fn log_tails(&self, lines: usize) -> String {
        self.components
            .iter()
            .map(|c| {
                format!(
                    "--- {} ({}) ---\n{}",
                    c.name,
                    c.log.display(),
                    c.log_tail(lines)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops every component, last started first.
    pub fn stop(&mut self) {
        while let Some(mut component) = self.components.pop() {
            component.stop();
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Free loopback ports (bound, then released for the components to take).
fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()?;
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<_>>()?;
    Ok(ports.try_into().expect("N ports"))
}
