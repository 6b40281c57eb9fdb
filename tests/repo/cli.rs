//! The command line as people type it (issue 25, item 12), without a
//! cluster: `klm completion bash|zsh|fish`; `-n NS` as kubectl users type
//! it; a negative number reaches its flag's own check; help grouped by
//! heading.

use std::process::Command;

/// Runs klm with a clean environment; exit code, stdout, stderr.
fn klm(args: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_klm"))
        .args(args)
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .env("KLM_LOG", "off")
        .output()
        .expect("klm runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn completion_scripts_cover_the_subcommands_and_their_flags() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, script, stderr) = klm(&["completion", shell]);
        assert_eq!(code, 0, "{shell}: {stderr}");
        // fish names a flag `-l helm-namespace`, the others `--helm-namespace`.
        for word in [
            "check-prerequisites",
            "close-run",
            "helm-namespace",
            "batch-size",
        ] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    let (code, _, stderr) = klm(&["completion", "tcsh"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("possible values: bash"), "{stderr}");
    // The bash script is valid bash, where there is one to ask.
    let (_, script, _) = klm(&["completion", "bash"]);
    if let Ok(checked) = Command::new("bash").args(["-n", "-c", &script]).output() {
        assert!(
            checked.status.success(),
            "{}",
            String::from_utf8_lossy(&checked.stderr)
        );
    }
}

#[test]
fn kubectl_users_name_the_namespace_with_n() {
    for flag in ["-n", "--namespace", "--helm-namespace"] {
        let (code, _, stderr) = klm(&[
            "status",
            flag,
            "kata-system",
            "--kubeconfig",
            "missing.kubeconfig",
        ]);
        // Parsed: what fails is the missing kubeconfig, not the flag.
        assert_eq!(code, 2, "{flag}: {stderr}");
        assert!(stderr.contains("does not exist"), "{flag}: {stderr}");
    }
}

#[test]
fn a_negative_number_gets_its_flags_own_message() {
    let cases: [(&[&str], &str); 7] = [
        (&["select-nodes", "--batch-size", "-1"], "batch size \"-1\""),
        (
            &["select-nodes", "--max-batch-size", "-3"],
            "is not a count",
        ),
        (&["select-nodes", "--canary-size", "-1"], "is not a count"),
        (
            &["select-nodes", "--max-unavailable", "-2"],
            "max-unavailable \"-2\"",
        ),
        (
            &["settle", "--wave", "-1", "--upgrade-status", "Failed"],
            "waves are numbered from 1",
        ),
        (
            &["restart-kata-pod", "--nodes", "w1", "--timeout", "-5s"],
            "cannot be negative",
        ),
        (
            &[
                "upgrade",
                "--target-version",
                "3.28.0",
                "--gate-soak",
                "-10m",
            ],
            "cannot be negative",
        ),
    ];
    for (args, says) in cases {
        let (code, _, stderr) = klm(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(
            stderr.contains(says) && !stderr.contains("unexpected argument"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn help_is_grouped_by_heading() {
    use clap::CommandFactory;
    let mut cli = kata_lifecycle_manager::cli::Cli::command();
    // Built, the subcommands carry the global flags too.
    cli.build();
    for subcommand in cli.get_subcommands() {
        let ungrouped: Vec<&str> = subcommand
            .get_arguments()
            .filter(|a| a.get_help_heading().is_none() && !a.is_hide_set())
            .filter_map(|a| a.get_long())
            .collect();
        // A subcommand's own flags stay under "Options"; the shared ones
        // (waves, drain, selection, verification, chart, release, run,
        // connection, output) each under their heading.
        assert!(
            ungrouped.len() <= 10,
            "klm {} has {} options without a heading: {ungrouped:?}",
            subcommand.get_name(),
            ungrouped.len()
        );
    }
    let upgrade = cli.find_subcommand("upgrade").unwrap();
    let heading = |long: &str| {
        upgrade
            .get_arguments()
            .find(|a| a.get_long() == Some(long))
            .and_then(|a| a.get_help_heading())
    };
    for (long, expected) in [
        ("target-version", None),
        ("drain", Some("Drain")),
        ("drain-scope", Some("Drain")),
        ("dry-run", None),
        ("allow-downgrade", None),
        ("batch-size", Some("Waves")),
        ("gate-soak", Some("Gates and window")),
        ("node-selector", Some("Node selection")),
        ("verification-pod", Some("Verification")),
        ("chart", Some("Chart")),
        ("helm-namespace", Some("Release")),
        ("run-id", Some("Run")),
        ("kubeconfig", Some("Connection")),
        ("output", Some("Output")),
    ] {
        assert_eq!(heading(long), expected, "--{long}");
    }
}
