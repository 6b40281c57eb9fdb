//! The chart's RBAC, for real, on the rig: the ServiceAccount the chart
//! creates runs every helm command klm runs on the fixture kata-deploy
//! release (status, history, get values, upgrade, rollback) in daemonset and
//! job mode and across kata-deploy's flavours, and the apiserver's audit log
//! shows that none of its requests was refused and that helm did write
//! kata-deploy's RBAC objects as it (the rules the chart mirrors). It also
//! cannot do what it has no business doing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use klm_rig::{NodeSpec, Rig};
use kube::Api;
use kube::api::{ListParams, PostParams};

use crate::render::{self, repo_root};

/// The fixture charts, packaged once for this test binary.
fn charts_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = repo_root().join("target/chart-tests/charts");
        klm_rig::charts::package_all(&dir).expect("packaging the fixture kata-deploy chart");
        dir
    })
    .clone()
}

fn chart(version: &str) -> String {
    charts_dir()
        .join(format!("kata-deploy-{version}.tgz"))
        .display()
        .to_string()
}

/// One namespace with two nodes, the fixture kata-deploy installed by an
/// admin, and this chart installed; helm runs as admin or as the chart's
/// ServiceAccount.
struct Setup {
    rig: &'static Rig,
    namespace: String,
    nodes: Vec<String>,
    sa_kubeconfig: PathBuf,
}

const RELEASE: &str = "kata-deploy";

impl Setup {
    async fn start(name: &str, version: &str, values: &[&str]) -> Result<Setup> {
        let rig = Rig::shared().await?;
        let namespace = rig.namespace(name).await?;
        let nodes: Vec<String> = (1..=2).map(|i| format!("{namespace}-n{i}")).collect();
        let specs: Vec<NodeSpec> = nodes
            .iter()
            .map(|n| NodeSpec::named(n.clone()).label("klm.test/case", &namespace))
            .collect();
        rig.add_nodes(&specs).await?;
        let mut setup = Setup {
            rig,
            namespace,
            nodes,
            sa_kubeconfig: PathBuf::new(),
        };
        let mut install = vec![
            "install".to_string(),
            RELEASE.into(),
            chart(version),
            "--namespace".into(),
            setup.namespace.clone(),
            "--wait".into(),
            "--timeout".into(),
            "180s".into(),
            "--set".into(),
            format!("nodeSelector.klm\\.test/case={}", setup.namespace),
            "--set".into(),
            format!("env.multiInstallSuffix={}", setup.namespace),
        ];
        for value in values {
            install.extend(["--set".to_string(), value.to_string()]);
        }
        setup.helm_admin(&install).await?;
        setup.install_chart().await?;
        Ok(setup)
    }

    fn service_account(&self) -> String {
        format!("klm-{}-kata-lifecycle-manager", self.namespace)
    }

    fn user(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace,
            self.service_account()
        )
    }

    /// Installs this chart as an admin would (the integration tests' values).
    async fn install_chart(&mut self) -> Result<()> {
        let _crds = crate::apiserver::argo_crds_installed(self.rig).await?;
        let ns = self.namespace.clone();
        let mut args = vec![
            "install".to_string(),
            format!("klm-{ns}"),
            render::chart_dir().display().to_string(),
            "--namespace".into(),
            ns.clone(),
        ];
        for value in [
            format!("argoNamespace={ns}"),
            format!("defaults.helmNamespace={ns}"),
            format!("defaults.helmRelease={RELEASE}"),
            format!("defaults.verificationNamespace={ns}"),
        ] {
            args.extend(["--set".to_string(), value]);
        }
        args.extend(render::base_args());
        self.helm_admin(&args).await?;
        self.sa_kubeconfig = self
            .rig
            .service_account_kubeconfig(&ns, &self.service_account())
            .await?;
        Ok(())
    }

    async fn helm_admin(&self, args: &[String]) -> Result<String> {
        helm(self.rig, self.rig.kubeconfig(), &self.namespace, args).await
    }

    async fn helm_as_sa(&self, args: &[&str]) -> Result<String> {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.extend(["--namespace".to_string(), self.namespace.clone()]);
        helm(self.rig, &self.sa_kubeconfig, &self.namespace, &all).await
    }

    /// Deletes kata-deploy RBAC objects as an admin, so that the next helm
    /// upgrade re-creates them as the ServiceAccount: creating a role
    /// requires holding every rule in it, which is what the chart mirrors.
    /// (Updating an unchanged role skips that check, so an upgrade alone
    /// would not prove the mirror complete.)
    async fn delete_kata_deploy_rbac(
        &self,
        cluster_roles: &[String],
        roles: &[String],
    ) -> Result<()> {
        let admin = self.rig.client().await?;
        let params = kube::api::DeleteParams::default();
        for name in cluster_roles {
            Api::<ClusterRole>::all(admin.clone())
                .delete(name, &params)
                .await?;
            // As kata-deploy names them: kata-deploy-role → -rb, -noderole → -noderb.
            let binding = name.replace("noderole", "noderb").replace("-role", "-rb");
            Api::<ClusterRoleBinding>::all(admin.clone())
                .delete(&binding, &params)
                .await?;
        }
        for name in roles {
            Api::<Role>::namespaced(admin.clone(), &self.namespace)
                .delete(name, &params)
                .await?;
            Api::<RoleBinding>::namespaced(admin.clone(), &self.namespace)
                .delete(&name.replace("-role", "-rb"), &params)
                .await?;
        }
        Ok(())
    }

    /// What klm does through helm before and during an upgrade: read the release.
    async fn read_release_as_sa(&self) -> Result<()> {
        self.helm_as_sa(&["status", RELEASE, "--output", "json"])
            .await?;
        self.helm_as_sa(&["history", RELEASE, "--max", "256", "--output", "json"])
            .await?;
        self.helm_as_sa(&["get", "values", RELEASE, "--all", "--output", "json"])
            .await?;
        Ok(())
    }

    /// The audit log: no request of the ServiceAccount was refused, and it
    /// wrote the kata-deploy RBAC objects named.
    fn assert_audit(&self, wrote: &[(&str, String)]) -> Result<()> {
        let requests = self.rig.audit_requests(&self.user())?;
        let refused: Vec<String> = requests
            .iter()
            .filter(|r| r.code == 403)
            .map(|r| format!("{} {:?}/{:?}", r.permission(), r.namespace, r.name))
            .collect();
        if !refused.is_empty() {
            bail!(
                "the chart's ServiceAccount was refused:\n  {}",
                refused.join("\n  ")
            );
        }
        for (resource, name) in wrote {
            let written = requests.iter().any(|r| {
                r.resource == *resource
                    && r.name.as_deref() == Some(name.as_str())
                    && matches!(r.verb.as_str(), "patch" | "update" | "create")
                    && (200..300).contains(&r.code)
            });
            if !written {
                let seen: Vec<String> = requests
                    .iter()
                    .filter(|r| r.resource == *resource)
                    .map(|r| format!("{} {:?} {}", r.verb, r.name, r.code))
                    .collect();
                bail!(
                    "helm did not write {resource}/{name} as the ServiceAccount; its {resource} requests: {seen:?}"
                );
            }
        }
        Ok(())
    }
}

/// Runs helm with its own writable homes and a kubeconfig.
async fn helm(rig: &Rig, kubeconfig: &Path, tag: &str, args: &[String]) -> Result<String> {
    let home = repo_root().join("target/chart-tests/helm-home").join(tag);
    let output = tokio::process::Command::new(rig.helm())
        .args(args)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .await
        .context("running helm")?;
    if !output.status.success() {
        bail!(
            "helm {} failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// daemonset mode, as klm does it: read the release, upgrade once with
/// OnDelete and kata-deploy's verification disabled, then `helm rollback` to
/// the revision recorded before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_account_upgrades_and_rolls_back_daemonset_mode() {
    let setup = Setup::start("rbac-ds", "3.27.0", &[])
        .await
        .expect("set-up");
    let ns = setup.namespace.clone();
    setup.read_release_as_sa().await.expect("read the release");
    setup
        .delete_kata_deploy_rbac(&[format!("kata-deploy-role-{ns}")], &[])
        .await
        .expect("delete kata-deploy's ClusterRole");
    setup
        .helm_as_sa(&[
            "upgrade",
            RELEASE,
            &chart("3.28.0"),
            "--reset-then-reuse-values",
            "--set",
            "verification.pod=",
            "--set",
            "updateStrategy.type=OnDelete",
            "--timeout",
            "180s",
        ])
        .await
        .expect("helm upgrade as the ServiceAccount");
    setup.read_release_as_sa().await.expect("read the release");
    setup
        .helm_as_sa(&["rollback", RELEASE, "1", "--timeout", "180s"])
        .await
        .expect("helm rollback as the ServiceAccount");
    setup
        .assert_audit(&[
            ("clusterroles", format!("kata-deploy-role-{ns}")),
            ("daemonsets", format!("kata-deploy-{ns}")),
        ])
        .expect("audit");
}

/// job mode (3.32 flavour): a wave-scoped upgrade runs the dispatcher hook
/// (its ServiceAccount, Roles and Jobs are written by helm as the chart's
/// ServiceAccount), then the scoped upgrade back that klm's rollback does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_account_upgrades_and_rolls_back_job_mode() {
    let setup = Setup::start("rbac-job", "3.32.0", &["deploymentMode=job"])
        .await
        .expect("set-up");
    let ns = setup.namespace.clone();
    setup.read_release_as_sa().await.expect("read the release");
    setup
        .delete_kata_deploy_rbac(
            &[
                format!("kata-deploy-role-{ns}"),
                format!("kata-deploy-dispatcher-noderole-{ns}"),
            ],
            &[format!("kata-deploy-dispatcher-role-{ns}")],
        )
        .await
        .expect("delete kata-deploy's roles");
    let wave = format!("job.nodes=[\"{}\"]", setup.nodes[0]);
    let tolerations = r#"tolerations=[{"key":"node.kubernetes.io/unschedulable","operator":"Exists","effect":"NoSchedule"}]"#;
    for version in ["3.33.0", "3.32.0"] {
        setup
            .helm_as_sa(&[
                "upgrade",
                RELEASE,
                &chart(version),
                "--reset-then-reuse-values",
                "--set",
                "verification.pod=",
                "--set-json",
                &wave,
                "--set",
                "job.parallelism=1",
                "--set-json",
                tolerations,
                "--timeout",
                "180s",
            ])
            .await
            .unwrap_or_else(|e| {
                panic!("scoped helm upgrade to {version} as the ServiceAccount: {e:#}")
            });
    }
    setup
        .helm_as_sa(&["rollback", RELEASE, "2", "--timeout", "180s"])
        .await
        .expect("helm rollback");
    setup
        .assert_audit(&[
            ("roles", format!("kata-deploy-dispatcher-role-{ns}")),
            (
                "clusterroles",
                format!("kata-deploy-dispatcher-noderole-{ns}"),
            ),
            ("jobs", format!("kata-deploy-{ns}-install-dispatcher")),
        ])
        .expect("audit");
}

/// The 4.1 flavour (state ConfigMap read with lookup) and main (0.0.0-dev).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_account_upgrades_the_newest_flavours() {
    let setup = Setup::start("rbac-new", "4.1.0", &[])
        .await
        .expect("set-up");
    for version in ["4.2.0", "0.0.0-dev"] {
        setup
            .helm_as_sa(&[
                "upgrade",
                RELEASE,
                &chart(version),
                "--reset-then-reuse-values",
                "--set",
                "verification.pod=",
                "--timeout",
                "180s",
            ])
            .await
            .unwrap_or_else(|e| panic!("helm upgrade to {version} as the ServiceAccount: {e:#}"));
    }
    setup
        .helm_as_sa(&["rollback", RELEASE, "1", "--timeout", "180s"])
        .await
        .expect("helm rollback");
    setup
        .assert_audit(&[("configmaps", format!("{RELEASE}-kata-deploy-state"))])
        .expect("audit");
}

/// What the ServiceAccount must not do: read Secrets outside the release's
/// namespace, grant rights it does not hold, bind roles to itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_account_cannot_escalate() {
    let setup = Setup::start("rbac-deny", "3.27.0", &[])
        .await
        .expect("set-up");
    let client = klm_rig::rig::client_for(&setup.sa_kubeconfig)
        .await
        .expect("SA client");
    let forbidden = |result: Result<(), kube::Error>, what: &str| match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    };

    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    forbidden(
        secrets.list(&ListParams::default()).await.map(|_| ()),
        "listing Secrets in another namespace",
    );
    let all_secrets: Api<Secret> = Api::all(client.clone());
    forbidden(
        all_secrets.list(&ListParams::default()).await.map(|_| ()),
        "listing Secrets cluster-wide",
    );

    let name = format!("{}-escalate", setup.namespace);
    let role = ClusterRole {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["*".into()]),
            resources: Some(vec!["*".into()]),
            verbs: vec!["*".into()],
            ..Default::default()
        }]),
        ..Default::default()
    };
    let roles: Api<ClusterRole> = Api::all(client.clone());
    forbidden(
        roles
            .create(&PostParams::default(), &role)
            .await
            .map(|_| ()),
        "creating a ClusterRole with every right",
    );

    let binding = ClusterRoleBinding {
        metadata: kube::api::ObjectMeta {
            name: Some(name),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: "cluster-admin".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: setup.service_account(),
            namespace: Some(setup.namespace.clone()),
            ..Default::default()
        }]),
    };
    let bindings: Api<ClusterRoleBinding> = Api::all(client);
    forbidden(
        bindings
            .create(&PostParams::default(), &binding)
            .await
            .map(|_| ()),
        "binding cluster-admin to itself",
    );

    // And the rules it holds are the chart's, nothing more: no escalate or bind anywhere.
    let admin = setup.rig.client().await.expect("admin");
    let cluster_role: ClusterRole = Api::all(admin)
        .get(&format!("klm-{}-kata-lifecycle-manager", setup.namespace))
        .await
        .expect("the chart's ClusterRole");
    let verbs: BTreeMap<String, Vec<String>> = cluster_role
        .rules
        .unwrap_or_default()
        .into_iter()
        .map(|r| (r.resources.unwrap_or_default().join(","), r.verbs))
        .collect();
    for (resources, verbs) in &verbs {
        assert!(
            !verbs
                .iter()
                .any(|v| v == "escalate" || v == "bind" || v == "impersonate"),
            "{resources}: {verbs:?}"
        );
        assert!(
            !resources.split(',').any(|r| r == "*" || r == "secrets"),
            "cluster-wide {resources}"
        );
    }
}
