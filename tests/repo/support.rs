//! Paths and file reading shared by the repository checks.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file of the repository, as text (a panic names the missing file).
#[track_caller]
pub fn read(relative: impl AsRef<Path>) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A YAML file of the repository, as a JSON value.
#[track_caller]
pub fn yaml(relative: impl AsRef<Path>) -> Value {
    let relative = relative.as_ref();
    serde_saphyr::from_str(&read(relative))
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", relative.display()))
}

/// A binary built by `make rig-bins` (`target/rig/bin`, or `KLM_RIG_BIN`),
/// or a panic saying how to build it.
#[track_caller]
pub fn rig_bin(name: &str) -> PathBuf {
    let path = std::env::var_os("KLM_RIG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/rig/bin"))
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: build it with `make rig-bins`",
        path.display()
    );
    path
}

/// True for a 64-digit lower-case hex string (a sha256).
pub fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The value of `NAME=value` in a shell script (`tests/rig/build.sh`'s pins).
#[track_caller]
pub fn shell_assignment(script: &str, name: &str) -> String {
    script
        .lines()
        .find_map(|line| line.trim().strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name}= in the script"))
        .trim_matches('"')
        .to_string()
}
