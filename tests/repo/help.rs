//! Snapshots of what a person reads: `klm --help`, each subcommand's help,
//! and one error per exit code. A change to any of them is a reviewed diff:
//! regenerate with `KLM_UPDATE_GOLDEN=1 cargo test --test repo help`.

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;
use kata_lifecycle_manager::cli::Cli;

use crate::support::root;

/// A kubeconfig whose apiserver nobody listens on.
const UNREACHABLE: &str = r#"apiVersion: v1
kind: Config
current-context: nowhere
clusters:
  - name: nowhere
    cluster: {server: "https://127.0.0.1:9"}
users:
  - name: nobody
    user: {token: not-a-token}
contexts:
  - name: nowhere
    context: {cluster: nowhere, user: nobody}
"#;

fn snapshot_path(name: &str) -> PathBuf {
    root()
        .join("tests/repo/snapshots")
        .join(format!("{name}.txt"))
}

/// Runs klm in `dir` with a clean environment (no cluster, no terminal,
/// no logs) and returns the exit code, stdout and stderr as one text.
fn klm(dir: &Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_klm"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("KLM_LOG", "off")
        .output()
        .expect("klm runs");
    format!(
        "$ klm {}\nexit {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Each snapshot and the klm arguments that print it.
fn cases() -> Vec<(String, Vec<String>)> {
    let mut cases = vec![("help".to_string(), vec!["--help".to_string()])];
    for subcommand in Cli::command().get_subcommands() {
        let name = subcommand.get_name().to_string();
        if name == "help" {
            continue;
        }
        cases.push((format!("help-{name}"), vec![name, "--help".into()]));
    }
    let errors: [(&str, &[&str]); 4] = [
        (
            "exit-1-apiserver-unreachable",
            &["status", "--kubeconfig", "unreachable.kubeconfig"],
        ),
        (
            "exit-2-bad-batch-size",
            &["select-nodes", "--batch-size", "0"],
        ),
        (
            "exit-2-missing-kubeconfig",
            &["status", "--kubeconfig", "missing.kubeconfig"],
        ),
        (
            "exit-3-no-helm",
            &[
                "plan",
                "--target-version",
                "3.28.0",
                "--helm",
                "/nonexistent/helm",
                "--kubeconfig",
                "unreachable.kubeconfig",
            ],
        ),
    ];
    for (name, args) in errors {
        cases.push((name.into(), args.iter().map(|a| a.to_string()).collect()));
    }
    cases
}

#[test]
fn help_and_errors_match_their_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("unreachable.kubeconfig"), UNREACHABLE).unwrap();
    let updating = std::env::var_os("KLM_UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut mismatches = Vec::new();
    for (name, args) in cases() {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let printed = klm(dir.path(), &args);
        let path = snapshot_path(&name);
        if updating {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &printed).unwrap();
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(expected) if expected == printed => {}
            Ok(expected) => mismatches.push(format!(
                "{name}: klm prints\n{printed}\nbut {} says\n{expected}",
                path.display()
            )),
            Err(_) => mismatches.push(format!("{name}: no snapshot {}", path.display())),
        }
    }
    assert!(
        mismatches.is_empty(),
        "{}\n(regenerate with KLM_UPDATE_GOLDEN=1 cargo test --test repo help)",
        mismatches.join("\n\n")
    );
}

#[test]
fn every_exit_code_has_a_snapshot_and_no_snapshot_is_orphaned() {
    let names: Vec<String> = cases().into_iter().map(|(name, _)| name).collect();
    for code in 1..=3 {
        assert!(
            names
                .iter()
                .any(|n| n.starts_with(&format!("exit-{code}-"))),
            "no error snapshot exits {code}"
        );
    }
    for entry in std::fs::read_dir(root().join("tests/repo/snapshots")).unwrap() {
        let file = entry.unwrap().file_name().to_string_lossy().to_string();
        let name = file.trim_end_matches(".txt");
        assert!(
            names.iter().any(|n| n == name),
            "snapshot {file} belongs to no case; delete it"
        );
    }
}
