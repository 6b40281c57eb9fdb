//! The install dispatcher hooks the real packages render (job mode): klm runs
//! a copy of them for each wave from 4.1, so every flag they pass must be one
//! klm knows, and the copy must be the hook scoped to the wave without its
//! prune.

use std::process::Command;

use kata_lifecycle_manager::dispatch::{Dispatcher, check_copy};

use crate::real::RealCharts;

/// The hooks `helm template` renders for a real package in job mode.
fn rendered_hooks(charts: &RealCharts, version: &str) -> String {
    let output = Command::new(klm_rig::control_plane::bin_dir().join("helm"))
        .arg("template")
        .arg("kata-deploy")
        .arg(charts.package(version))
        .args(["--namespace", "kube-system", "--set", "deploymentMode=job"])
        .output()
        .expect("helm runs (make rig-bins)");
    assert!(
        output.status.success(),
        "helm template of {version}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The YAML documents of a rendering.
fn documents(text: &str) -> Vec<&str> {
    text.split("\n---").collect()
}

pub fn check(charts: &RealCharts) {
    for version in ["3.32.0", "4.0.0", "4.1.0", "0.0.0-dev"] {
        if !charts.has(version) {
            continue;
        }
        let text = rendered_hooks(charts, version);
        let dispatcher = Dispatcher::find(documents(&text), "kata-deploy", 1)
            .unwrap_or_else(|e| panic!("{version}'s dispatcher hook: {e}"));
        assert_eq!(
            dispatcher.name_prefix().as_deref(),
            Some("kata-deploy-install"),
            "{version}"
        );
        let wave = vec!["ip-10-0-1-23.ec2.internal".to_string(), "w2".to_string()];
        let copy = dispatcher
            .scoped_copy("kata-deploy-install-klm-0-w1", "run", &wave)
            .unwrap_or_else(|e| panic!("{version}'s copy: {e}"));
        check_copy(&copy, &wave).unwrap();
        let command = copy
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .command
            .clone()
            .unwrap();
        let prunes = text.contains("--cleanup-job-template");
        assert_eq!(
            prunes,
            version == "4.1.0" || version == "0.0.0-dev",
            "{version}: the hook prunes from 4.1"
        );
        assert!(
            !command
                .iter()
                .any(|a| a.starts_with("--cleanup-job-template")),
            "{version}: the copy never prunes: {command:?}"
        );
        assert!(
            command.contains(&"--nodes=ip-10-0-1-23.ec2.internal,w2".to_string()),
            "{version}: {command:?}"
        );
        assert!(
            !command.iter().any(|a| a.starts_with("--node-selector")),
            "{version}: {command:?}"
        );
        // The copy keeps the hook's own templates and ServiceAccount.
        assert!(command.contains(&"--job-template=/etc/kata-job/install-job.yaml".to_string()));
        let pod = copy.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some("kata-deploy-dispatcher-sa"),
            "{version}"
        );
    }
}
