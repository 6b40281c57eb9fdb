//! The rig's certificates and keys, generated fresh for every rig: a cluster
//! CA, the apiserver's serving certificate, client certificates (admin and
//! one per control-plane component, one for the real node's kubelet) and the ServiceAccount token signing key.

use std::path::{Path, PathBuf};

use anyhow::Result;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

/// The name of the rig's real node (a kubelet with containerd, see
/// `real_node`); its client certificate is issued with the rest.
pub const REAL_NODE: &str = "rig-node";

/// A certificate and its key, written as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// The private key (PEM).
    pub key: PathBuf,
}

/// Every PEM file the control plane needs.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The cluster CA certificate.
    pub ca_cert: PathBuf,
    /// The apiserver's serving certificate (SANs: 127.0.0.1, localhost, kubernetes.default...).
    pub apiserver: CertFiles,
    /// kwok's serving certificate (it serves `pods/log` for the fake nodes).
    pub kwok_server: CertFiles,
    /// The apiserver's client certificate towards kubelets (kwok).
    pub apiserver_kubelet_client: CertFiles,
    /// `rig-admin` in group `system:masters`.
    pub admin: CertFiles,
    /// `system:kube-controller-manager`.
    pub controller_manager: CertFiles,
    /// `system:kube-scheduler`.
    pub scheduler: CertFiles,
    /// The real node's kubelet: `system:node:<REAL_NODE>` in group
    /// `system:nodes` (the Node authorizer and NodeRestriction know it).
    pub kubelet_client: CertFiles,
    /// ServiceAccount token signing key (private).
    pub sa_key: PathBuf,
    /// ServiceAccount token verification key (public).
    pub sa_pub: PathBuf,
}

impl Pki {
    /// Generates everything into `dir`.
    pub fn generate(dir: &Path) -> Result<Pki> {
        std::fs::create_dir_all(dir)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.distinguished_name = name("klm-rig-ca", None);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let ca_cert = dir.join("ca.crt");
        std::fs::write(&ca_cert, ca.pem())?;

        let serving_names = [
            "127.0.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ];
        let issue = |file: &str, cn: &str, org: Option<&str>, sans: &[&str], server: bool| {
            let mut params =
                CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
            params.distinguished_name = name(cn, org);
            params.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            params.extended_key_usages = vec![if server {
                ExtendedKeyUsagePurpose::ServerAuth
            } else {
                ExtendedKeyUsagePurpose::ClientAuth
            }];
            let key = KeyPair::generate()?;
            let cert = params.signed_by(&key, &ca)?;
            let files = CertFiles {
                cert: dir.join(format!("{file}.crt")),
                key: dir.join(format!("{file}.key")),
            };
            std::fs::write(&files.cert, cert.pem())?;
            std::fs::write(&files.key, key.serialize_pem())?;
            anyhow::Ok(files)
        };
        let sa = KeyPair::generate()?;
        let pki = Pki {
            apiserver: issue("apiserver", "kube-apiserver", None, &serving_names, true)?,
            kwok_server: issue("kwok", "kwok", None, &["127.0.0.1", "localhost"], true)?,
            apiserver_kubelet_client: issue(
                "apiserver-kubelet-client",
                "kube-apiserver-kubelet-client",
                Some("system:masters"),
                &[],
                false,
            )?,
            admin: issue("admin", "rig-admin", Some("system:masters"), &[], false)?,
            controller_manager: issue(
                "controller-manager",
                "system:kube-controller-manager",
                None,
                &[],
                false,
            )?,
            scheduler: issue("scheduler", "system:kube-scheduler", None, &[], false)?,
            kubelet_client: issue(
                "kubelet-client",
                &format!("system:node:{REAL_NODE}"),
                Some("system:nodes"),
                &[],
                false,
            )?,
            sa_key: dir.join("sa.key"),
            sa_pub: dir.join("sa.pub"),
            ca_cert,
        };
        std::fs::write(&pki.sa_key, sa.serialize_pem())?;
        std::fs::write(&pki.sa_pub, sa.public_key_pem())?;
        Ok(pki)
    }
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}
