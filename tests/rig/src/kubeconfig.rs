//! Kubeconfig files for the rig's identities: client certificates for the
//! admin and the components, bearer tokens for ServiceAccounts.

use std::path::Path;

use anyhow::{Context, Result};

/// Writes a kubeconfig that authenticates with a client certificate.
pub fn write_cert(path: &Path, server: &str, ca: &Path, cert: &Path, key: &Path) -> Result<()> {
    let user = format!(
        "    client-certificate: {}\n    client-key: {}\n",
        cert.display(),
        key.display()
    );
    write(path, server, ca, &user)
}

/// Writes a kubeconfig that authenticates with a bearer token.
pub fn write_token(path: &Path, server: &str, ca: &Path, token: &str) -> Result<()> {
    write(path, server, ca, &format!("    token: {token}\n"))
}

fn write(path: &Path, server: &str, ca: &Path, user: &str) -> Result<()> {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: rig\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: rig\n  user:\n{user}contexts:\n- name: rig\n  context:\n    cluster: rig\n    user: rig\ncurrent-context: rig\n",
        ca.display()
    );
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
