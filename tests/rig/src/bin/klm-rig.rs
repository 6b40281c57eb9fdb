//! `klm-rig up`: starts the test rig for a person, with kwok nodes and the
//! kata-deploy simulator, prints how to point `kubectl`, `helm` and `klm` at
//! it, and runs until Ctrl-C (or until stdin closes with `--stdin-lifeline`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::{Parser, Subcommand};
use klm_rig::{NodeSpec, Rig, simulator};

/// The klm test rig: a real Kubernetes control plane on loopback with kwok nodes.
#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the rig and keep it running.
    Up {
        /// How many kwok nodes (named kata-1, kata-2, ...; pools a and b alternate).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Working directory (default: target/rig/up).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Write the admin kubeconfig's path to this file once the rig is ready.
        #[arg(long)]
        ready_file: Option<PathBuf>,
        /// Stop when stdin closes (for scripts that start the rig in the background).
        #[arg(long)]
        stdin_lifeline: bool,
        /// Also start the Argo tier: a real node (containerd, runc, kubelet; root
        /// only) and Argo's workflow-controller, with the image under test pulled from a loopback registry.
        #[arg(long)]
        argo: bool,
    },
    /// Apply Argo Workflows' full CRDs (server-side) and wait until they are established.
    ArgoCrds {
        /// The version the repository pins: v3.7.18 (tests/argo) or v4.0.7
        /// (tests/argolint/v4); read from the Argo module in the Go module cache.
        version: String,
        /// The cluster's kubeconfig.
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: PathBuf,
    },
    /// Tear down what a crashed run of the real node left on this machine
    /// (processes, mounts, cgroups, sysctls; every setup does this first too).
    RealNodeDown,
    /// Package the fixture kata-deploy chart at every version it imitates.
    Charts {
        /// Where the `kata-deploy-<version>.tgz` files go (default: target/rig/charts).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Build or check the klm image as an OCI image index (image/README.md).
    #[command(subcommand)]
    Image(klm_rig::image_cli::ImageCommand),
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KLM_RIG_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let (nodes, dir, ready_file, stdin_lifeline, argo) = match Cli::parse().command {
        Command::Up {
            nodes,
            dir,
            ready_file,
            stdin_lifeline,
            argo,
        } => (nodes, dir, ready_file, stdin_lifeline, argo),
        Command::ArgoCrds {
            version,
            kubeconfig,
        } => {
            let client = klm_rig::rig::client_for(&kubeconfig).await?;
            klm_rig::argo_crds::apply(&client, &version).await?;
            return Ok(());
        }
        Command::RealNodeDown => {
            let _lock = klm_rig::real_node::lock_host()?;
            let report = klm_rig::real_node::teardown_stale();
            writeln!(std::io::stdout(), "{report:#?}")?;
            return Ok(());
        }
        Command::Image(command) => return command.run(),
        Command::Charts { dir } => {
            let dir = dir.unwrap_or_else(|| {
                klm_rig::control_plane::workspace_root().join("target/rig/charts")
            });
            klm_rig::charts::package_all(&dir)?;
            let mut out = std::io::stdout().lock();
            for (version, what) in klm_rig::charts::VERSIONS {
                writeln!(
                    out,
                    "{}  {what}",
                    dir.join(format!("kata-deploy-{version}.tgz")).display()
                )?;
            }
            return Ok(());
        }
    };
    let dir = dir.unwrap_or_else(|| klm_rig::control_plane::workspace_root().join("target/rig/up"));
    let _ = std::fs::remove_dir_all(&dir);
    let started = Instant::now();
    let (rig, mut plane) = Rig::start_foreground(&dir)?;
    rig.wait_controllers().await?;
    let control_plane_ready = started.elapsed();
    let specs: Vec<NodeSpec> = (1..=nodes)
        .map(|i| NodeSpec {
            name: format!("kata-{i}"),
            labels: BTreeMap::from([(
                klm_rig::nodes::POOL_LABEL.to_string(),
                if i % 2 == 1 { "a" } else { "b" }.to_string(),
            )]),
            ..NodeSpec::default()
        })
        .collect();
    let client = rig.client().await?;
    let simulator = tokio::spawn(simulator::run(client));
    rig.add_nodes(&specs).await?;
    // Scripts read the first line of stdout as "ready": the Argo tier
    // starts before anything is printed.
    let argo_started = Instant::now();
    let argo_guard = if argo {
        Some(rig.start_argo_foreground().await?)
    } else {
        None
    };
    let argo_ready = argo_started.elapsed();
    if argo_guard.is_some() {
        // For scripts (tests/lib/argo-rig.sh), before the ready line: what the tier published to its
        // loopback registry, as shell assignments.
        let published = rig.argo()?.published();
        std::fs::write(
            dir.join("published.env"),
            format!(
                "KLM_IMAGE={}\nKLM_CHART={}\nKLM_CHART_VERSION={}\n",
                published.image(),
                published.chart_ref(),
                published.chart_version
            ),
        )?;
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "rig ready: control plane in {:.1}s, {nodes} nodes Ready in {:.1}s\n\n  export KUBECONFIG={}\n  export KLM_HELM={}\n  alias kubectl={}\n\nlogs: {}\nCtrl-C stops the rig.",
        control_plane_ready.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        rig.kubeconfig().display(),
        rig.helm().display(),
        rig.bin("kubectl").display(),
        rig.dir().display()
    )?;
    if argo_guard.is_some() {
        let tier = rig.argo()?;
        writeln!(
            out,
            "\nArgo tier ready in {:.1}s: real node {} (label and taint {}=true), workflow-controller {} watching namespace {}\n\n  alias argo='KUBECONFIG={} {}'\n  argo -n {} submit --wait WORKFLOW.yaml\n\nstep pods run only on {} (the controller's workflowDefaults); image under test {}\n(fixture charts at {}), pulled from the loopback registry; chart {} --version {} --plain-http\n(also in {}); step logs under {} (never through the apiserver);\nnode logs: {}",
            argo_ready.as_secs_f64(),
            tier.node(),
            tier.node_label(),
            klm_rig::argo::ARGO_VERSION,
            tier.namespace(),
            rig.kubeconfig().display(),
            rig.bin("argo").display(),
            tier.namespace(),
            tier.node(),
            tier.klm_image(),
            tier.chart_in_image(),
            tier.published().chart_ref(),
            tier.published().chart_version,
            dir.join("published.env").display(),
            tier.pod_logs_dir().display(),
            tier.node_dir().display(),
        )?;
    }
    drop(out);
    if let Some(file) = ready_file {
        std::fs::write(file, rig.kubeconfig().display().to_string())?;
    }
    let lifeline = async {
        if stdin_lifeline {
            let mut sink = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut sink).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = lifeline => {}
        result = simulator => { tracing::error!("simulator stopped: {result:?}"); }
    }
    if let Some(mut guard) = argo_guard {
        let report = guard.teardown();
        tracing::info!(?report, "Argo tier torn down");
    }
    plane.stop();
    Ok(())
}
