//! A real Prometheus for metric gates (Debian's `prometheus` package, on
//! loopback), scraping a metric the rig exposes per simulated node:
//! `kata_shim_sandbox_create_failures_total{node="…"}`, a counter that goes
//! up at every scrape while the node runs the version its
//! [`SANDBOX_FAILURES_AT`] annotation names (a broken runtime failing to
//! create sandboxes), and stays put otherwise.
//!
//! Both live on a dedicated thread for the rest of the test binary, as the
//! rig's control plane does ([`MetricsTier::shared`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::Node;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::process::Component;
use crate::simulator::INSTALLED_VERSION;

/// A rig knob: a Node annotated with a version fails to create sandboxes
/// while it runs that version (its failure counter goes up).
pub const SANDBOX_FAILURES_AT: &str = "rig.klm.test/sandbox-failures-at";

/// The metric the rig exposes per node.
pub const FAILURES_METRIC: &str = "kata_shim_sandbox_create_failures_total";

/// Where the rig's Prometheus answers.
#[derive(Debug, Clone)]
pub struct MetricsTier {
    /// Its base URL (`http://127.0.0.1:PORT`).
    pub url: String,
    /// Its log.
    pub log: PathBuf,
}

static SHARED: OnceLock<std::result::Result<MetricsTier, String>> = OnceLock::new();

/// The Debian package's binary.
const PROMETHEUS: &str = "/usr/bin/prometheus";

impl MetricsTier {
    /// The Prometheus of this test binary, started on first use (its
    /// exporter reads the nodes through `kubeconfig`); None, with a line on
    /// stderr, where Debian's prometheus is not installed (outside CI).
    pub async fn shared(kubeconfig: &Path, dir: &Path) -> Result<Option<&'static MetricsTier>> {
        if !Path::new(PROMETHEUS).exists() {
            if std::env::var("CI").as_deref() == Ok("true") {
                bail!(
                    "{PROMETHEUS} is missing: tests/argo/host-packages.sh installs Debian's prometheus"
                );
            }
            #[allow(clippy::print_stderr)]
            {
                eprintln!(
                    "skipped: {PROMETHEUS} is missing (tests/argo/host-packages.sh installs it)"
                );
            }
            return Ok(None);
        }
        let (kubeconfig, dir) = (kubeconfig.to_path_buf(), dir.join("prometheus"));
        let shared = tokio::task::spawn_blocking(move || {
            SHARED.get_or_init(|| start(kubeconfig, dir).map_err(|e| format!("{e:#}")))
        })
        .await?;
        shared
            .as_ref()
            .map(Some)
            .map_err(|e| anyhow!("the rig's Prometheus did not start: {e}"))
    }
}

/// Starts the exporter and Prometheus on a thread of their own, and waits
/// until Prometheus has scraped the exporter once.
fn start(kubeconfig: PathBuf, dir: PathBuf) -> Result<MetricsTier> {
    std::fs::create_dir_all(&dir)?;
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("klm-rig-metrics".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(async move {
                let started = async {
                    let client = crate::rig::client_for(&kubeconfig).await?;
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                    let exporter = listener.local_addr()?;
                    tokio::spawn(serve(listener, client));
                    let port = std::net::TcpListener::bind("127.0.0.1:0")?
                        .local_addr()?
                        .port();
                    let config = dir.join("prometheus.yml");
                    std::fs::write(
                        &config,
                        format!(
                            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: rig\n    static_configs:\n      - targets: ['{exporter}']\n"
                        ),
                    )?;
                    let args = [
                        format!("--config.file={}", config.display()),
                        format!("--storage.tsdb.path={}", dir.join("data").display()),
                        format!("--web.listen-address=127.0.0.1:{port}"),
                        "--storage.tsdb.retention.time=2h".into(),
                    ];
                    let mut prometheus = Component::start("prometheus", Path::new(PROMETHEUS), &args, &dir)?;
                    let url = format!("http://127.0.0.1:{port}");
                    wait_scraped(&mut prometheus, port).await?;
                    anyhow::Ok((
                        MetricsTier {
                            url,
                            log: prometheus.log.clone(),
                        },
                        prometheus,
                    ))
                };
                match started.await {
                    Ok((tier, prometheus)) => {
                        let _ = sender.send(Ok(tier));
                        // Prometheus lives as long as this thread.
                        let _keep = prometheus;
                        std::future::pending::<()>().await;
                    }
                    Err(e) => {
                        let _ = sender.send(Err(e));
                    }
                }
            });
        })?;
    receiver
        .recv()
        .context("the metrics thread died while starting")?
}

/// Polls Prometheus (a process starting has nothing to watch) until its
/// first scrape of the exporter is in: `up{job="rig"} == 1`.
async fn wait_scraped(prometheus: &mut Component, port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let query = "/api/v1/query?query=up%7Bjob%3D%22rig%22%7D%3D%3D1";
    loop {
        prometheus.check_alive()?;
        if let Ok(body) = get(port, query).await
            && body.contains("\"result\":[{")
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "Prometheus did not scrape the rig within 60s:\n{}",
                prometheus.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A plain HTTP/1.0 GET on loopback; the body.
async fn get(port: u16, path: &str) -> Result<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default())
}

/// Serves `/metrics` (any path) to Prometheus: one answer per connection.
async fn serve(listener: tokio::net::TcpListener, client: Client) {
    let counters: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    while let Ok((mut stream, _)) = listener.accept().await {
        let client = client.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let body = match scrape(&client, &counters).await {
                Ok(body) => body,
                Err(e) => {
                    tracing::warn!("the rig's exporter could not read the nodes: {e:#}");
                    return;
                }
            };
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

/// One scrape: each simulated node with Kata installed, its counter moved
/// on where it runs the version it fails at.
async fn scrape(client: &Client, counters: &Mutex<BTreeMap<String, u64>>) -> Result<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let nodes = nodes.list(&ListParams::default()).await?.items;
    let mut counters = counters.lock().map_err(|_| anyhow!("counters poisoned"))?;
    let mut body = format!(
        "# HELP {FAILURES_METRIC} Sandboxes the Kata shim failed to create (simulated by the rig).\n# TYPE {FAILURES_METRIC} counter\n"
    );
    for node in &nodes {
        let annotations = node.annotations();
        let Some(installed) = annotations.get(INSTALLED_VERSION) else {
            continue;
        };
        let name = node.name_any();
        let count = counters.entry(name.clone()).or_default();
        if annotations.get(SANDBOX_FAILURES_AT) == Some(installed) {
            *count += 1;
        }
        body.push_str(&format!("{FAILURES_METRIC}{{node=\"{name}\"}} {count}\n"));
    }
    Ok(body)
}
