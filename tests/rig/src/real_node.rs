//! A real node beside the kwok nodes: Debian's containerd and runc and the
//! rig's kubelet, joined to the rig's apiserver as [`REAL_NODE`] with the
//! node client certificate the rig's PKI issues.
//!
//! * Everything lives under one directory (`target/rig/real-node`): the
//!   containerd root, state and socket, a loopback-only CNI network (so only
//!   `hostNetwork` pods can run, and no bridge, veth or iptables rule is
//!   made), the kubelet's root and its pod log directory.
//! * The node is tainted and labelled [`REAL_NODE_LABEL`]`=true`: only pods
//!   that ask for it (Argo's step pods, through the controller's
//!   `workflowDefaults`) land there.
//! * Nothing listens off loopback: the kubelet and containerd's streaming
//!   server bind 127.0.0.1. The node's address is the machine's own
//!   interface address (the kubelet refuses loopback); nothing ever connects
//!   to it, so step logs are read from the pod log directory
//!   ([`read_pod_log`]), never through the apiserver.
//! * One real node per machine (its cgroups and a few host paths are
//!   host-wide): a host-wide `flock` on [`HOST_STATE_DIR`]`/lock` serialises
//!   test binaries, and a state file there lets the next run tear down what a
//!   crashed run left ([`teardown_stale`] runs before every setup).

use std::ffi::CString;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::Node;
use kube::runtime::wait::await_condition;
use kube::{Api, Client};
use serde::{Deserialize, Serialize};

use crate::control_plane::bin_dir;
use crate::pki::CertFiles;
pub use crate::pki::REAL_NODE;
use crate::process::Component;

/// Label and taint key of the real node (`=true`, taint effect NoSchedule).
pub const REAL_NODE_LABEL: &str = "rig.klm/real-node";
/// Host-wide lock and state of the real node (one per machine).
pub const HOST_STATE_DIR: &str = "/run/klm-rig-real-node";
/// The sandbox (pause) image containerd runs every pod in.
pub const PAUSE_IMAGE: &str = "localhost/rig/pause:1";

/// The sysctls the kubelet sets on start (saved before, restored after).
const SYSCTLS: &[&str] = &[
    "vm/overcommit_memory",
    "kernel/panic",
    "kernel/panic_on_oops",
    "vm/panic_on_oom",
];
/// Host paths the kubelet or containerd create whatever they are told;
/// removed at teardown when they did not exist before.
const HOST_PATHS: &[&str] = &[
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/run/containerd",
    "/var/lib/cni",
    "/etc/cni",
    "/opt/cni",
    "/var/lib/containerd",
];
/// The cgroups the kubelet (kubepods) and containerd (k8s.io) create.
const CGROUPS: &[&str] = &["kubepods", "k8s.io"];

/// What the machine lacks to run a real node, if anything: root, Debian's
/// `containerd`, `runc` and CNI plugins (`tests/argo/host-packages.sh`
/// installs them), and cgroups we can create.
pub fn host_check() -> std::result::Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root".into());
    }
    for program in ["containerd", "ctr", "containerd-shim-runc-v2"] {
        if find_program(program).is_none() {
            return Err(format!(
                "{program} not found (run tests/argo/host-packages.sh)"
            ));
        }
    }
    if find_runc().is_none() {
        return Err("runc not found (run tests/argo/host-packages.sh)".into());
    }
    if !Path::new("/usr/lib/cni/loopback").exists() {
        return Err("/usr/lib/cni/loopback not found (run tests/argo/host-packages.sh)".into());
    }
    let probe_parent = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        PathBuf::from("/sys/fs/cgroup")
    } else {
        PathBuf::from("/sys/fs/cgroup/pids")
    };
    // Unique per call: tests of one binary check the host concurrently.
    static PROBES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = probe_parent.join(format!("klm-rig-probe-{}-{n}", std::process::id()));
    std::fs::create_dir(&probe)
        .map_err(|e| format!("cannot create a cgroup in {}: {e}", probe_parent.display()))?;
    let _ = std::fs::remove_dir(&probe);
    Ok(())
}

/// How to start the real node.
#[derive(Debug, Clone)]
pub struct RealNodeOptions {
    /// Its working directory (removed and made afresh).
    pub dir: PathBuf,
    /// The apiserver URL.
    pub server: String,
    /// The cluster CA certificate.
    pub ca: PathBuf,
    /// The kubelet's client certificate (`system:node:<name>`).
    pub kubelet_client: CertFiles,
    /// The admin kubeconfig (teardown deletes the node's pods with it).
    pub admin_kubeconfig: PathBuf,
    /// Docker-archive tarballs to import before the kubelet starts (must
    /// hold [`PAUSE_IMAGE`]).
    pub images: Vec<PathBuf>,
}

/// The host-wide lock: held while a real node of this process exists.
#[derive(Debug)]
pub struct HostLock {
    _file: File,
}

/// Takes the host-wide real-node lock, waiting while another process holds it.
pub fn lock_host() -> Result<HostLock> {
    std::fs::create_dir_all(HOST_STATE_DIR)?;
    let path = Path::new(HOST_STATE_DIR).join("lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        tracing::warn!(
            "another process runs the real node (lock {}); waiting for it",
            path.display()
        );
        // SAFETY: as above.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("locking {}", path.display()));
        }
    }
    Ok(HostLock { _file: file })
}

/// What teardown needs, written to [`HOST_STATE_DIR`]`/state.json` before
/// anything starts, so a later run can undo a crashed one.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    dir: PathBuf,
    socket: PathBuf,
    admin_kubeconfig: PathBuf,
    node: String,
    /// Processes to stop before the pods are deleted (the workflow-controller).
    #[serde(default)]
    before_pods: Vec<Proc>,
    #[serde(default)]
    kubelet: Option<Proc>,
    #[serde(default)]
    containerd: Option<Proc>,
    /// `(path under /proc/sys, value)` as found before the kubelet started.
    sysctls: Vec<(String, String)>,
    /// Host paths that did not exist before setup.
    created: Vec<PathBuf>,
}

/// A process we started: its PID and a string its command line holds (so a
/// reused PID is never signalled).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Proc {
    name: String,
    pid: u32,
    marker: String,
}

fn state_path() -> PathBuf {
    Path::new(HOST_STATE_DIR).join("state.json")
}

fn save_state(state: &State) -> Result<()> {
    std::fs::create_dir_all(HOST_STATE_DIR)?;
    let partial = state_path().with_extension("partial");
    std::fs::write(&partial, serde_json::to_vec_pretty(state)?)?;
    std::fs::rename(&partial, state_path())?;
    Ok(())
}

/// A running real node. Dropping it tears it down.
pub struct RealNode {
    dir: PathBuf,
    pod_logs: PathBuf,
    node_ip: Ipv4Addr,
    state: State,
    containerd: Option<Component>,
    kubelet: Option<Component>,
    others: Vec<Component>,
    torn_down: bool,
    _lock: HostLock,
}

impl std::fmt::Debug for RealNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealNode")
            .field("dir", &self.dir)
            .field("node_ip", &self.node_ip)
            .finish_non_exhaustive()
    }
}

/// What a teardown did and left.
#[derive(Debug, Default, Clone)]
pub struct TeardownReport {
    /// How long it took.
    pub elapsed: Duration,
    /// Mounts still under the node's directory.
    pub mounts_left: Vec<String>,
    /// cgroups that could not be removed.
    pub cgroups_left: Vec<PathBuf>,
    /// Processes that were still alive and had to be killed (name, pid).
    pub killed: Vec<String>,
}

impl RealNode {
    /// Takes the host lock, tears down whatever a crashed run left, writes
    /// the configuration, starts containerd, imports the images and starts
    /// the kubelet (PATH without /usr/sbin: it finds no iptables and leaves
    /// the host's firewall alone). Blocking; the processes die with the
    /// calling thread, so call it from a thread that lives as long as the node.
    /// Does not wait for the node to be Ready: see [`RealNode::wait_ready`].
    pub fn start(options: &RealNodeOptions) -> Result<RealNode> {
        if let Err(why) = host_check() {
            bail!("this machine cannot run the rig's real node: {why}");
        }
        let lock = lock_host()?;
        let stale = teardown_stale();
        if !stale.killed.is_empty() || !stale.mounts_left.is_empty() {
            tracing::warn!(?stale, "tore down what an earlier run left");
        }
        let dir = options.dir.clone();
        if dir.exists() {
            if !mounts_under(&dir).is_empty() {
                bail!(
                    "{} still has mounts after teardown: {:?}",
                    dir.display(),
                    mounts_under(&dir)
                );
            }
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        let containerd_dir = dir.join("containerd");
        let kubelet_dir = dir.join("kubelet");
        let pod_logs = kubelet_dir.join("pod-logs");
        for d in [
            containerd_dir.join("root"),
            containerd_dir.join("state"),
            containerd_dir.join("opt"),
            containerd_dir.join("cni-conf"),
            containerd_dir.join("certs.d"),
            kubelet_dir.join("root"),
            kubelet_dir.join("pki"),
            pod_logs.clone(),
        ] {
            std::fs::create_dir_all(&d)?;
        }
        let socket = containerd_dir.join("containerd.sock");
        let node_ip = host_address()?;
        let mut state = State {
            dir: dir.clone(),
            socket: socket.clone(),
            admin_kubeconfig: options.admin_kubeconfig.clone(),
            node: REAL_NODE.into(),
            sysctls: SYSCTLS
                .iter()
                .filter_map(|s| {
                    let value = std::fs::read_to_string(Path::new("/proc/sys").join(s)).ok()?;
                    Some((s.to_string(), value.trim().to_string()))
                })
                .collect(),
            created: HOST_PATHS
                .iter()
                .map(PathBuf::from)
                .filter(|p| !p.exists())
                .collect(),
            ..State::default()
        };
        save_state(&state)?;

        let runc = find_runc().context("runc not found")?;
        let containerd_config = containerd_dir.join("config.toml");
        std::fs::write(
            &containerd_config,
            containerd_config_toml(&containerd_dir, &socket, &runc),
        )?;
        std::fs::write(
            containerd_dir.join("cni-conf/10-loopback.conflist"),
            "{\"cniVersion\": \"1.0.0\", \"name\": \"rig-loopback\", \"plugins\": [{\"type\": \"loopback\"}]}\n",
        )?;
        let mut node = RealNode {
            dir: dir.clone(),
            pod_logs: pod_logs.clone(),
            node_ip,
            state: state.clone(),
            containerd: None,
            kubelet: None,
            others: Vec::new(),
            torn_down: false,
            _lock: lock,
        };
        let containerd = Component::start(
            "containerd",
            &find_program("containerd").context("containerd not found")?,
            &[format!("--config={}", containerd_config.display())],
            &containerd_dir,
        )?;
        state.containerd = Some(Proc {
            name: "containerd".into(),
            pid: containerd.pid(),
            marker: containerd_config.display().to_string(),
        });
        node.containerd = Some(containerd);
        node.state = state.clone();
        save_state(&state)?;
        node.wait_containerd(&socket)?;
        for image in &options.images {
            node.import_image(image)?;
        }

        let kubeconfig = kubelet_dir.join("kubelet.kubeconfig");
        crate::kubeconfig::write_cert(
            &kubeconfig,
            &options.server,
            &options.ca,
            &options.kubelet_client.cert,
            &options.kubelet_client.key,
        )?;
        let [port, healthz_port] = free_ports()?;
        let config = kubelet_dir.join("config.yaml");
        std::fs::write(
            &config,
            kubelet_config_yaml(&socket, &options.ca, &pod_logs, port, healthz_port),
        )?;
        let kubelet = Component::start_with_env(
            "kubelet",
            &bin_dir().join("kubelet"),
            &[
                format!("--config={}", config.display()),
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--root-dir={}", kubelet_dir.join("root").display()),
                format!("--cert-dir={}", kubelet_dir.join("pki").display()),
                format!("--hostname-override={REAL_NODE}"),
                format!("--node-ip={node_ip}"),
                format!("--node-labels={REAL_NODE_LABEL}=true"),
                "--v=2".into(),
            ],
            &[("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into())],
            &kubelet_dir,
        )?;
        state.kubelet = Some(Proc {
            name: "kubelet".into(),
            pid: kubelet.pid(),
            marker: config.display().to_string(),
        });
        node.kubelet = Some(kubelet);
        node.state = state.clone();
        save_state(&state)?;
        Ok(node)
    }

    /// Waits (by watching) until the node is registered and Ready, failing
    /// early with the kubelet's log when it exits.
    pub async fn wait_ready(&mut self, client: &Client, timeout: Duration) -> Result<()> {
        let nodes: Api<Node> = Api::all(client.clone());
        let ready = await_condition(nodes, REAL_NODE, |node: Option<&Node>| {
            node.and_then(|n| n.status.as_ref())
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        });
        let mut ready = std::pin::pin!(ready);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            tokio::select! {
                result = &mut ready => {
                    result?;
                    return Ok(());
                }
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    for component in [self.containerd.as_mut(), self.kubelet.as_mut()].into_iter().flatten() {
                        component.check_alive()?;
                    }
                    if tokio::time::Instant::now() > deadline {
                        bail!(
                            "node {REAL_NODE} not Ready within {timeout:?}; kubelet log:\n{}",
                            self.kubelet.as_ref().map(|k| k.log_tail(30)).unwrap_or_default()
                        );
                    }
                }
            }
        }
    }

    /// Imports a docker-archive tarball into containerd's `k8s.io` namespace.
    pub fn import_image(&self, tarball: &Path) -> Result<()> {
        let output = Command::new(find_program("ctr").context("ctr not found")?)
            .arg(format!("--address={}", self.state.socket.display()))
            .args(["-n", "k8s.io", "images", "import", "--platform"])
            .arg(format!("linux/{}", crate::image::oci_arch()))
            .arg(tarball)
            .output()
            .context("running ctr images import")?;
        if !output.status.success() {
            bail!(
                "ctr images import {} failed: {}",
                tarball.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// Starts another host process that belongs to the node's lifetime (the
    /// workflow-controller): it is stopped first at teardown, before the
    /// pods are deleted, so nothing recreates them.
    pub fn start_companion(
        &mut self,
        name: &str,
        binary: &Path,
        args: &[String],
        env: &[(String, String)],
        marker: &str,
    ) -> Result<&mut Component> {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir)?;
        let component = Component::start_with_env(name, binary, args, env, &dir)?;
        self.state.before_pods.push(Proc {
            name: name.into(),
            pid: component.pid(),
            marker: marker.into(),
        });
        save_state(&self.state)?;
        self.others.push(component);
        Ok(self.others.last_mut().expect("just pushed"))
    }

    /// Fails with a log tail when a process of the node has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        for component in self
            .containerd
            .iter_mut()
            .chain(self.kubelet.iter_mut())
            .chain(self.others.iter_mut())
        {
            component.check_alive()?;
        }
        Ok(())
    }

    /// The kubelet's pod log directory (`<ns>_<pod>_<uid>/<container>/<n>.log`).
    pub fn pod_logs_dir(&self) -> &Path {
        &self.pod_logs
    }

    /// The node's working directory (logs of containerd, kubelet, companions).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// containerd's registry hosts directory (`config_path`: one
    /// `<host>/hosts.toml` per registry, read at each pull), where the rig's
    /// loopback registry is declared plain HTTP
    /// ([`crate::registry::write_containerd_hosts`]).
    pub fn registry_hosts_dir(&self) -> PathBuf {
        self.dir.join("containerd/certs.d")
    }

    /// The node's InternalIP (this machine's interface address).
    pub fn node_ip(&self) -> Ipv4Addr {
        self.node_ip
    }

    /// Tears the node down (idempotent; also done on drop).
    pub fn teardown(&mut self) -> TeardownReport {
        if self.torn_down {
            return TeardownReport::default();
        }
        self.torn_down = true;
        let report = teardown_state(&self.state);
        // Reap the children the teardown stopped.
        for mut component in self
            .others
            .drain(..)
            .chain(self.kubelet.take())
            .chain(self.containerd.take())
        {
            component.stop();
        }
        let _ = std::fs::remove_file(state_path());
        report
    }

    fn wait_containerd(&mut self, socket: &Path) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let ctr = find_program("ctr").context("ctr not found")?;
        loop {
            if let Some(containerd) = self.containerd.as_mut() {
                containerd.check_alive()?;
            }
            if socket.exists() {
                let status = Command::new(&ctr)
                    .arg(format!("--address={}", socket.display()))
                    .arg("version")
                    .output()?;
                if status.status.success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("containerd did not serve {} within 30s", socket.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        let report = self.teardown();
        if !report.mounts_left.is_empty() || !report.cgroups_left.is_empty() {
            tracing::warn!(?report, "real node teardown left something behind");
        }
    }
}

/// Tears down what the state file of an earlier run names (a crashed run,
/// or one whose process ended without its teardown). Call with the host
/// lock held. Without a state file it still removes our cgroups and the
/// mounts of a default-located node directory.
pub fn teardown_stale() -> TeardownReport {
    match std::fs::read(state_path())
        .ok()
        .and_then(|b| serde_json::from_slice::<State>(&b).ok())
    {
        Some(state) => {
            let report = teardown_state(&state);
            let _ = std::fs::remove_file(state_path());
            report
        }
        None => {
            let started = Instant::now();
            let cgroups_left = remove_cgroups();
            TeardownReport {
                elapsed: started.elapsed(),
                cgroups_left,
                ..TeardownReport::default()
            }
        }
    }
}

/// The teardown, in an order that leaves nothing behind: the companions
/// (workflow-controller), then the node's pods through the still running
/// kubelet, the kubelet, the remaining sandboxes, containerd, any shim whose
/// address is our socket; then the mounts under the directory (deepest
/// first), the cgroups (leaves first), the sysctls, the host paths we created.
fn teardown_state(state: &State) -> TeardownReport {
    let started = Instant::now();
    let mut report = TeardownReport::default();
    for proc in &state.before_pods {
        stop_proc(proc, &mut report);
    }
    if state.kubelet.as_ref().is_some_and(proc_alive) {
        delete_node_pods(state);
    }
    if let Some(kubelet) = &state.kubelet {
        stop_proc(kubelet, &mut report);
    }
    if state.containerd.as_ref().is_some_and(proc_alive) {
        remove_tasks(&state.socket);
    }
    // Whatever still runs in the pods' cgroups (a crashed run's containers).
    kill_cgroup_processes(&mut report);
    if let Some(containerd) = &state.containerd {
        stop_proc(containerd, &mut report);
    }
    for pid in shims_of(&state.socket) {
        stop_proc(
            &Proc {
                name: "containerd-shim".into(),
                pid,
                marker: state.socket.display().to_string(),
            },
            &mut report,
        );
    }
    kill_cgroup_processes(&mut report);
    let mut roots: Vec<PathBuf> = vec![state.dir.clone()];
    roots.extend(state.created.iter().cloned());
    for root in &roots {
        unmount_under(root);
    }
    report.cgroups_left = remove_cgroups();
    for (name, value) in &state.sysctls {
        if let Err(e) = std::fs::write(Path::new("/proc/sys").join(name), value) {
            tracing::warn!("restoring sysctl {name}={value}: {e}");
        }
    }
    for path in &state.created {
        if path.exists() && mounts_under(path).is_empty() {
            let _ = std::fs::remove_dir_all(path);
        }
    }
    report.mounts_left = roots.iter().flat_map(|r| mounts_under(r)).collect();
    // The images and pod volumes are large; logs stay for a post-mortem.
    if report.mounts_left.is_empty() {
        for sub in ["containerd/root", "containerd/state", "kubelet/root"] {
            let _ = std::fs::remove_dir_all(state.dir.join(sub));
        }
    }
    report.elapsed = started.elapsed();
    tracing::info!(elapsed = ?report.elapsed, "real node torn down");
    report
}

/// Deletes every pod bound to the node and waits (a watch, through
/// `kubectl wait`) until the kubelet has stopped them.
fn delete_node_pods(state: &State) {
    let kubectl = bin_dir().join("kubectl");
    let selector = format!("--field-selector=spec.nodeName={}", state.node);
    let kubeconfig = format!("--kubeconfig={}", state.admin_kubeconfig.display());
    let run = |args: &[&str]| {
        let _ = Command::new(&kubectl)
            .arg(&kubeconfig)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    };
    run(&[
        "delete",
        "pods",
        "--all-namespaces",
        &selector,
        "--grace-period=1",
        "--wait=false",
        "--request-timeout=10s",
    ]);
    run(&[
        "wait",
        "--for=delete",
        "pods",
        "--all-namespaces",
        &selector,
        "--timeout=60s",
    ]);
}

/// Kills and deletes every task containerd still runs in `k8s.io`.
fn remove_tasks(socket: &Path) {
    let Some(ctr) = find_program("ctr") else {
        return;
    };
    let address = format!("--address={}", socket.display());
    let ctr_run = |args: &[&str]| {
        Command::new(&ctr)
            .arg(&address)
            .args(["-n", "k8s.io"])
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
    };
    let Some(tasks) = ctr_run(&["tasks", "ls", "-q"]) else {
        return;
    };
    let ids: Vec<String> = String::from_utf8_lossy(&tasks.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    for id in &ids {
        ctr_run(&["tasks", "kill", "--signal", "SIGKILL", id]);
    }
    for id in &ids {
        ctr_run(&["tasks", "delete", "--force", id]);
    }
}

fn proc_alive(proc: &Proc) -> bool {
    pid_alive(proc.pid)
        && std::fs::read(format!("/proc/{}/cmdline", proc.pid))
            .map(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .contains(&proc.marker)
            })
            .unwrap_or(false)
}

/// Alive and not a zombie.
fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|s| s != "Z" && s != "X"),
        Err(_) => false,
    }
}

/// SIGTERM, up to 10 s, then SIGKILL; only when the PID still runs our command.
fn stop_proc(proc: &Proc, report: &mut TeardownReport) {
    if !proc_alive(proc) {
        return;
    }
    signal(proc.pid, libc::SIGTERM);
    if wait_gone(proc.pid, Duration::from_secs(10)) {
        return;
    }
    report.killed.push(format!("{} ({})", proc.name, proc.pid));
    signal(proc.pid, libc::SIGKILL);
    wait_gone(proc.pid, Duration::from_secs(5));
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) with a PID checked to run one of our commands.
    unsafe { libc::kill(pid as libc::pid_t, signal) };
}

/// Polls /proc (a process that is not our child cannot be waited for).
fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !pid_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    !pid_alive(pid)
}

/// The PIDs of `containerd-shim-runc-v2` processes whose `-address` is `socket`.
fn shims_of(socket: &Path) -> Vec<u32> {
    let socket = socket.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            args.first()
                .is_some_and(|a| a.ends_with("containerd-shim-runc-v2"))
                && args
                    .windows(2)
                    .any(|w| w[0] == "-address" && w[1] == socket)
        })
        .collect()
}

/// The cgroup hierarchies (`/sys/fs/cgroup/<controller>` under v1, the
/// root under v2).
fn cgroup_hierarchies() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut hierarchies = Vec::new();
    if root.join("cgroup.controllers").exists() {
        hierarchies.push(root.to_path_buf());
    }
    if let Ok(entries) = std::fs::read_dir(root) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.join("cgroup.procs").exists() && !path.join("cgroup.controllers").exists()
                || path.file_name().is_some_and(|n| n == "unified")
            {
                hierarchies.push(path);
            }
        }
    }
    hierarchies
}

/// Every directory under `dir`, leaves first.
fn subdirs_depth_first(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                subdirs_depth_first(&entry.path(), out);
            }
        }
    }
    out.push(dir.to_path_buf());
}

/// SIGKILLs every process in the kubepods and k8s.io cgroups.
fn kill_cgroup_processes(report: &mut TeardownReport) {
    for _ in 0..3 {
        let mut pids = Vec::new();
        for hierarchy in cgroup_hierarchies() {
            for top in CGROUPS {
                let mut dirs = Vec::new();
                let base = hierarchy.join(top);
                if !base.exists() {
                    continue;
                }
                subdirs_depth_first(&base, &mut dirs);
                for dir in dirs {
                    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                        pids.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
                    }
                }
            }
        }
        pids.sort_unstable();
        pids.dedup();
        pids.retain(|pid| pid_alive(*pid));
        if pids.is_empty() {
            return;
        }
        for pid in &pids {
            report.killed.push(format!("pod process ({pid})"));
            signal(*pid, libc::SIGKILL);
        }
        for pid in &pids {
            wait_gone(*pid, Duration::from_secs(5));
        }
    }
}

/// Removes the kubepods and k8s.io cgroups in every hierarchy, leaves
/// first; returns what could not be removed.
fn remove_cgroups() -> Vec<PathBuf> {
    let mut left = Vec::new();
    for hierarchy in cgroup_hierarchies() {
        for top in CGROUPS {
            let base = hierarchy.join(top);
            if !base.exists() {
                continue;
            }
            let mut dirs = Vec::new();
            subdirs_depth_first(&base, &mut dirs);
            for dir in dirs {
                let _ = std::fs::remove_dir(&dir);
            }
            if base.exists() {
                left.push(base);
            }
        }
    }
    left
}

/// Mount points at or under `root`, deepest first.
pub fn mounts_under(root: &Path) -> Vec<String> {
    let root = root.display().to_string();
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut mounts: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount)
        .filter(|m| m == &root || m.starts_with(&format!("{root}/")))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    mounts.dedup();
    mounts
}

/// `/proc/self/mountinfo` escapes space, tab, newline and backslash as octal.
fn unescape_mount(field: &str) -> String {
    let mut out = String::new();
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let code: String = chars.by_ref().take(3).collect();
            match u8::from_str_radix(&code, 8) {
                Ok(b) => out.push(b as char),
                Err(_) => {
                    out.push('\\');
                    out.push_str(&code);
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Unmounts everything at or under `root`, deepest first (lazily when busy).
fn unmount_under(root: &Path) {
    for _ in 0..3 {
        let mounts = mounts_under(root);
        if mounts.is_empty() {
            return;
        }
        for mount in mounts {
            let Ok(path) = CString::new(mount.clone()) else {
                continue;
            };
            // SAFETY: umount2 with a NUL-terminated path.
            if unsafe { libc::umount2(path.as_ptr(), 0) } != 0 {
                // SAFETY: as above.
                unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}

/// The machine's first IPv4 address on an interface that is up and not
/// loopback (the kubelet needs a node IP and refuses loopback).
pub fn host_address() -> Result<Ipv4Addr> {
    let mut found = None;
    // SAFETY: getifaddrs fills a list we walk read-only and free once.
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut list) != 0 {
            return Err(std::io::Error::last_os_error()).context("getifaddrs");
        }
        let mut cursor = list;
        while !cursor.is_null() {
            let ifa = &*cursor;
            let flags = ifa.ifa_flags as libc::c_int;
            if !ifa.ifa_addr.is_null()
                && (*ifa.ifa_addr).sa_family as libc::c_int == libc::AF_INET
                && flags & libc::IFF_UP != 0
                && flags & libc::IFF_LOOPBACK == 0
            {
                let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                if !ip.is_loopback() && !ip.is_unspecified() {
                    found = Some(ip);
                    break;
                }
            }
            cursor = ifa.ifa_next;
        }
        libc::freeifaddrs(list);
    }
    found.ok_or_else(|| anyhow!("no IPv4 address on an interface that is up and not loopback"))
}

/// A program on PATH or in the usual system directories.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/bin", "/usr/bin", "/usr/sbin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn find_runc() -> Option<PathBuf> {
    find_program("runc")
}

/// Free loopback ports (bound, then released for the kubelet to take).
fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let listeners: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()?;
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<_>>()?;
    Ok(ports.try_into().expect("N ports"))
}

fn containerd_config_toml(dir: &Path, socket: &Path, runc: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = ""

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{d}/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{PAUSE_IMAGE}"
    restrict_oom_score_adj = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false
    disable_apparmor = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          BinaryName = "{runc}"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "{d}/cni-conf"
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "{d}/certs.d"
"#,
        socket = socket.display(),
        runc = runc.display(),
    )
}

fn kubelet_config_yaml(
    socket: &Path,
    ca: &Path,
    pod_logs: &Path,
    port: u16,
    healthz_port: u16,
) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix://{socket}
imageServiceEndpoint: unix://{socket}
address: 127.0.0.1
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz_port}
enableServer: true
oomScoreAdj: 0
podLogsDir: {pod_logs}
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: {ca}
authorization:
  mode: Webhook
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
imageMinimumGCAge: 87600h
maxPods: 50
registerNode: true
registerWithTaints:
  - key: {REAL_NODE_LABEL}
    value: "true"
    effect: NoSchedule
nodeStatusReportFrequency: 10s
nodeStatusUpdateFrequency: 5s
syncFrequency: 10s
fileCheckFrequency: 20s
serializeImagePulls: false
localStorageCapacityIsolation: true
"#,
        socket = socket.display(),
        ca = ca.display(),
        pod_logs = pod_logs.display(),
    )
}

/// The log of `container` of pod `namespace/pod` as the kubelet wrote it to
/// `pod_logs` (`<ns>_<pod>_<uid>/<container>/<n>.log`, every restart in
/// order), the CRI framing (`<time> <stream> <P|F> `) removed and partial
/// lines joined. The newest pod of that name when it was recreated.
pub fn read_pod_log(
    pod_logs: &Path,
    namespace: &str,
    pod: &str,
    container: &str,
) -> Result<String> {
    let dir = pod_log_dir(pod_logs, namespace, pod)?.join(container);
    let mut files: Vec<(u32, PathBuf)> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {} (no container {container}?)", dir.display()))?
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            let n = path.file_stem()?.to_str()?.parse::<u32>().ok()?;
            (path.extension()? == "log").then_some((n, path))
        })
        .collect();
    files.sort();
    let mut text = String::new();
    for (_, file) in files {
        text.push_str(&strip_cri_framing(&std::fs::read_to_string(&file)?));
    }
    Ok(text)
}

/// The pod's directory under the pod log directory (the newest when the
/// name was used by several pods).
pub fn pod_log_dir(pod_logs: &Path, namespace: &str, pod: &str) -> Result<PathBuf> {
    let prefix = format!("{namespace}_{pod}_");
    let mut candidates: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(pod_logs)
        .with_context(|| format!("reading {}", pod_logs.display()))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    candidates.sort();
    candidates
        .pop()
        .map(|(_, p)| p)
        .ok_or_else(|| anyhow!("no logs of pod {namespace}/{pod} in {}", pod_logs.display()))
}

/// The uid in a pod log directory's name.
pub fn pod_uid_of_log_dir(dir: &Path) -> Option<String> {
    dir.file_name()?
        .to_str()?
        .rsplit('_')
        .next()
        .map(str::to_string)
}

fn strip_cri_framing(raw: &str) -> String {
    let mut out = String::new();
    for line in raw.lines() {
        let mut parts = line.splitn(4, ' ');
        let (_time, _stream, tag) = (parts.next(), parts.next(), parts.next());
        let message = parts.next().unwrap_or("");
        out.push_str(message);
        if tag != Some("P") {
            out.push('\n');
        }
    }
    out
}

/// Host PIDs of processes named `program` (argv[0]'s file name) running in
/// the pod with `uid` (found by its cgroup, `pod<uid>`).
pub fn pod_processes(uid: &str, program: &str) -> Vec<u32> {
    let needle = format!("pod{uid}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let argv0 = std::fs::read(format!("/proc/{pid}/cmdline"))
                .ok()
                .and_then(|c| {
                    c.split(|b| *b == 0)
                        .next()
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                })
                .unwrap_or_default();
            Path::new(&argv0).file_name().is_some_and(|n| n == program)
                && std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                    .is_ok_and(|c| c.contains(&needle))
        })
        .collect();
    pids.sort_unstable();
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_framing_is_removed_and_partial_lines_joined() {
        let raw = "2026-12-01T20:25:27.03Z stdout F hello world\n2026-12-01T20:25:27.04Z stderr P part \n2026-12-01T20:25:27.05Z stderr F two\n";
        assert_eq!(strip_cri_framing(raw), "hello world\npart two\n");
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mount("/a\\040b"), "/a b");
        assert_eq!(unescape_mount("/plain"), "/plain");
    }

    #[test]
    fn host_address_is_not_loopback() {
        if let Ok(ip) = host_address() {
            assert!(!ip.is_loopback());
        }
    }

    #[test]
    fn pod_log_files_are_found_by_namespace_and_name() {
        let dir = tempfile::tempdir().unwrap();
        let container = dir.path().join("argo_wf-abc_1234-5678/main");
        std::fs::create_dir_all(&container).unwrap();
        std::fs::write(container.join("0.log"), "t stdout F first\n").unwrap();
        std::fs::write(container.join("1.log"), "t stdout F second\n").unwrap();
        let log = read_pod_log(dir.path(), "argo", "wf-abc", "main").unwrap();
        assert_eq!(log, "first\nsecond\n");
        let pod_dir = pod_log_dir(dir.path(), "argo", "wf-abc").unwrap();
        assert_eq!(pod_uid_of_log_dir(&pod_dir).as_deref(), Some("1234-5678"));
        assert!(read_pod_log(dir.path(), "argo", "wf", "main").is_err());
    }
}
