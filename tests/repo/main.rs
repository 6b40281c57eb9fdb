//! Repository checks: the GitHub workflows pass actionlint and pin every
//! third-party action by commit, the Containerfile builds from pinned bases
//! into a shell-free non-root image with OCI labels, and the lock file holds
//! none of the banned crates.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn workflows() -> Vec<PathBuf> {
    let dir = root().join(".github/workflows");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect(".github/workflows exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
}

#[test]
fn workflows_pass_actionlint() {
    let actionlint = root().join("target/rig/bin/actionlint");
    assert!(
        actionlint.exists(),
        "{} is missing: run `make rig-bins` (tests/tools/build.sh)",
        actionlint.display()
    );
    let files = workflows();
    assert!(
        files.len() >= 4,
        "ci, image, release and e2e workflows: {files:?}"
    );
    let output = Command::new(&actionlint)
        .args(&files)
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "actionlint:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn third_party_actions_are_pinned_by_commit_with_their_version() {
    let mut unpinned = Vec::new();
    for file in workflows() {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let Some(rest) = line
                .trim_start()
                .trim_start_matches("- ")
                .strip_prefix("uses:")
            else {
                continue;
            };
            let reference = rest.split('#').next().unwrap().trim();
            if reference.starts_with("./") || reference.starts_with("docker://") {
                continue;
            }
            let sha = reference.rsplit_once('@').map(|(_, r)| r).unwrap_or("");
            let pinned = sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit());
            let versioned = rest.contains("# v");
            if !pinned || !versioned {
                unpinned.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        unpinned.is_empty(),
        "pin by 40-hex commit with a `# vX` comment:\n{}",
        unpinned.join("\n")
    );
}

/// The Containerfile's stages: (FROM line, instructions of the stage).
fn stages(text: &str) -> Vec<(String, Vec<String>)> {
    let mut stages: Vec<(String, Vec<String>)> = Vec::new();
    let mut logical = String::new();
    for line in text.lines() {
        let line = line.trim_end();
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some(continued) = line.strip_suffix('\\') {
            logical.push_str(continued);
            continue;
        }
        logical.push_str(line);
        let instruction = std::mem::take(&mut logical);
        if instruction
            .trim_start()
            .to_ascii_uppercase()
            .starts_with("FROM ")
        {
            stages.push((instruction.trim().to_string(), Vec::new()));
        } else if let Some(stage) = stages.last_mut() {
            stage.1.push(instruction.trim().to_string());
        }
    }
    stages
}

/// Default values of the Containerfile's global ARGs.
fn global_args(text: &str) -> Vec<(String, String)> {
    text.lines()
        .take_while(|l| !l.trim_start().starts_with("FROM "))
        .filter_map(|l| l.trim().strip_prefix("ARG "))
        .filter_map(|a| a.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_image_builds_from_pinned_bases_into_a_shell_free_non_root_image() {
    let text = std::fs::read_to_string(root().join("image/Containerfile")).unwrap();
    let args = global_args(&text);
    let stages = stages(&text);
    assert!(stages.len() >= 2, "a multi-stage build");
    let mut names = Vec::new();
    for (from, _) in &stages {
        let words: Vec<&str> = from
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        let image = words[1];
        let resolved = match image.strip_prefix("${").and_then(|i| i.strip_suffix('}')) {
            Some(arg) => args
                .iter()
                .find(|(k, _)| k == arg)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("ARG {arg} has no default")),
            None => image.to_string(),
        };
        let digest = resolved
            .rsplit_once("@sha256:")
            .map(|(_, d)| d)
            .unwrap_or("");
        let pinned = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
        assert!(
            pinned || names.contains(&image.to_string()),
            "{from}: base {resolved} is not pinned by digest"
        );
        if let Some(i) = words.iter().position(|w| w.eq_ignore_ascii_case("AS")) {
            names.push(words[i + 1].to_string());
        }
    }
    let (from, final_stage) = stages.last().unwrap();
    let base = args
        .iter()
        .find(|(k, _)| from.contains(&format!("${{{k}}}")))
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| from.clone());
    assert!(
        base.contains("distroless"),
        "the final base has no shell or package manager: {base}"
    );
    assert!(
        !final_stage
            .iter()
            .any(|i| i.to_ascii_uppercase().starts_with("RUN ")),
        "no RUN in the final stage (it has no shell)"
    );
    let user = final_stage
        .iter()
        .find_map(|i| i.strip_prefix("USER "))
        .expect("the final stage sets USER");
    assert!(
        !user.starts_with('0') && !user.starts_with("root"),
        "non-root user: {user}"
    );
    let entrypoint = final_stage
        .iter()
        .find(|i| i.starts_with("ENTRYPOINT"))
        .expect("an ENTRYPOINT");
    assert!(
        entrypoint.contains("[\"/usr/local/bin/klm\"]"),
        "exec-form entrypoint, no shell: {entrypoint}"
    );
    let labels: String = final_stage
        .iter()
        .filter(|i| i.starts_with("LABEL"))
        .cloned()
        .collect();
    for key in ["source", "version", "revision", "licenses"] {
        assert!(
            labels.contains(&format!("org.opencontainers.image.{key}=")),
            "OCI label {key}: {labels}"
        );
    }
    for binary in ["/usr/local/bin/klm", "/usr/local/bin/helm"] {
        assert!(
            final_stage
                .iter()
                .any(|i| i.starts_with("COPY --from=") && i.ends_with(binary)),
            "the image holds {binary}"
        );
    }
}

#[test]
fn banned_crates_are_not_in_the_lock_file() {
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).unwrap();
    for banned in ["backoff", "serde_yaml", "openssl-sys"] {
        assert!(
            !lock.contains(&format!("name = \"{banned}\"\n")),
            "{banned} is in Cargo.lock"
        );
    }
    let deny = std::fs::read_to_string(root().join("deny.toml")).unwrap();
    for banned in ["backoff", "serde_yaml"] {
        assert!(
            deny.contains(&format!("name = \"{banned}\"")),
            "deny.toml bans {banned}"
        );
    }
    assert!(
        Path::new(&root().join("tests/tools/go.sum")).exists(),
        "actionlint is pinned by go.sum"
    );
}
