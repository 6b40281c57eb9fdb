//! Running the `helm` binary: always as an argv list, never through a shell,
//! so values with quotes, `$` or backticks arrive literally.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;

use serde::de::DeserializeOwned;

use std::sync::Arc;

use crate::error::{Classify, ExitStatus};
use crate::output::shell_word;

/// Why a helm invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum HelmError {
    /// The binary could not be started.
    #[error("cannot run {binary}: {source}")]
    Spawn {
        /// The binary.
        binary: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// helm ran and exited non-zero.
    #[error("`{command}` failed (exit {code}): {stderr}")]
    Failed {
        /// The command as a person would type it.
        command: String,
        /// Its exit code (-1 when killed by a signal).
        code: i32,
        /// The last lines of its stderr.
        stderr: String,
    },
    /// helm's output was not what it documents.
    #[error("`{command}` printed output that is not the expected JSON")]
    Output {
        /// The command.
        command: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

impl HelmError {
    /// Whether helm said the release does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, HelmError::Failed { stderr, .. } if stderr.contains("not found"))
    }
}

impl Classify for HelmError {
    fn status(&self) -> ExitStatus {
        match self {
            HelmError::Spawn { .. } => ExitStatus::Precondition,
            HelmError::Failed { stderr, .. } if stderr.contains("forbidden") => {
                ExitStatus::Precondition
            }
            _ => ExitStatus::Failed,
        }
    }
    fn hints(&self) -> Vec<String> {
        match self {
            HelmError::Spawn { binary, .. } => vec![format!(
                "install helm 4 or point --helm (or KLM_HELM) at it; tried {binary}"
            )],
            HelmError::Failed { stderr, .. } if stderr.contains("forbidden") => {
                vec!["the identity klm runs as lacks a permission helm needs: check the chart's RBAC".into()]
            }
            _ => Vec::new(),
        }
    }
}

/// A helm binary pointed at the same cluster as klm, as the same identity.
#[derive(Debug, Clone)]
pub struct Helm {
    binary: PathBuf,
    connection: Connection,
}

/// helm's flags for the cluster and identity klm uses (`--kubeconfig`,
/// `--kube-context`, `--kube-as-user`, ...; see
/// [`crate::cluster::helm_connection`]), and the kubeconfig file klm wrote
/// for helm if it had to, removed with the last clone. The default: none,
/// helm finds the cluster itself (`$KUBECONFIG`, or in a pod, the in-cluster
/// config).
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// The flags added to every helm command.
    pub flags: Vec<OsString>,
    /// The kubeconfig those flags name, when klm wrote it.
    pub written: Option<Arc<tempfile::TempPath>>,
}

impl Helm {
    /// helm at `binary`, connected as `connection` says.
    pub fn new(binary: PathBuf, connection: Connection) -> Self {
        Self { binary, connection }
    }

    /// Runs helm with these arguments and returns its stdout.
    pub async fn run<I, S>(&self, args: I) -> Result<String, HelmError>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let args: Vec<OsString> = args
            .into_iter()
            .map(Into::into)
            .chain(self.connection.flags.iter().cloned())
            .collect();
        let command = self.display(&args);
        tracing::debug!(%command, "running helm");
        let output = tokio::process::Command::new(&self.binary)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|source| HelmError::Spawn {
                binary: self.binary.display().to_string(),
                source,
            })?;
        if !output.status.success() {
            return Err(HelmError::Failed {
                command,
                code: output.status.code().unwrap_or(-1),
                stderr: tail(&String::from_utf8_lossy(&output.stderr), 20),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Runs helm and parses its stdout as JSON.
    pub async fn json<T, I, S>(&self, args: I) -> Result<T, HelmError>
    where
        T: DeserializeOwned,
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let stdout = self.run(args.clone()).await?;
        serde_json::from_str(&stdout).map_err(|source| HelmError::Output {
            command: self.display(&args),
            source,
        })
    }

    fn display(&self, args: &[OsString]) -> String {
        let mut words = vec![self.binary.display().to_string()];
        words.extend(args.iter().map(|a| shell_word(&a.to_string_lossy())));
        words.join(" ")
    }
}

/// A values file handed to helm (`--values`), removed when dropped.
pub struct ValuesFile(PathBuf);

impl ValuesFile {
    /// Writes values as JSON (which helm reads as YAML) to a new private file.
    pub fn new(values: &serde_json::Value) -> std::io::Result<Self> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("klm-values-{}-{n}.json", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        file.write_all(values.to_string().as_bytes())?;
        Ok(Self(path))
    }

    /// Its path.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for ValuesFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Quotes a word for display only (it is never run through a shell).
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn arguments_reach_the_program_literally() {
        // `echo` stands in for helm: what it prints is exactly the argv it got.
        let helm = Helm::new(PathBuf::from("echo"), Connection::default());
        let out = helm.run(["--set", "x=$HOME `id` \"q\" 'a'"]).await.unwrap();
        assert_eq!(out, "--set x=$HOME `id` \"q\" 'a'\n");
    }

    #[tokio::test]
    async fn failures_carry_the_exit_code_and_stderr() {
        let helm = Helm::new(PathBuf::from("false"), Connection::default());
        match helm.run(["status"]).await.unwrap_err() {
            HelmError::Failed { code, .. } => assert_eq!(code, 1),
            other => panic!("unexpected {other:?}"),
        }
        let missing = Helm::new(PathBuf::from("/nonexistent/helm"), Connection::default());
        let err = missing.run(["status"]).await.unwrap_err();
        assert_eq!(err.status(), ExitStatus::Precondition);
    }
}
