//! The dependency policy: the crates deny.toml bans stay out of Cargo.lock
//! (cargo-deny checks it all in CI; this catches the bans here, offline), and
//! the tools the checks run are pinned by their Go modules.

use crate::support::read;

/// Crates the project refuses, and why (deny.toml says the same).
const BANNED: [(&str, &str); 4] = [
    ("backoff", "unmaintained: use backon"),
    ("serde_yaml", "deprecated: use serde-saphyr"),
    ("openssl-sys", "rustls with ring only"),
    (
        "aws-lc-sys",
        "rustls with ring only (aws-lc needs cmake per target)",
    ),
];

#[test]
fn banned_crates_are_not_in_the_lock_file_and_deny_toml_bans_them() {
    let lock = read("Cargo.lock");
    let deny = read("deny.toml");
    for (crate_name, why) in BANNED {
        assert!(
            !lock.contains(&format!("name = \"{crate_name}\"\n")),
            "{crate_name} is in Cargo.lock ({why})"
        );
        assert!(
            deny.contains(&format!("{{ name = \"{crate_name}\" }}")),
            "deny.toml bans {crate_name} ({why})"
        );
    }
}

#[test]
fn the_tls_stack_is_rustls_with_ring() {
    let lock = read("Cargo.lock");
    for needed in ["rustls", "ring"] {
        assert!(
            lock.contains(&format!("name = \"{needed}\"\n")),
            "{needed} is in Cargo.lock"
        );
    }
}

#[test]
fn actionlint_is_pinned_by_its_go_module() {
    let go_mod = read("tests/tools/go.mod");
    assert!(
        go_mod.contains("tool github.com/rhysd/actionlint/cmd/actionlint"),
        "tests/tools/go.mod names actionlint as a tool"
    );
    let version = go_mod
        .lines()
        .find_map(|l| l.trim().strip_prefix("github.com/rhysd/actionlint "))
        .expect("tests/tools/go.mod requires github.com/rhysd/actionlint")
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let go_sum = read("tests/tools/go.sum");
    assert!(
        go_sum.contains(&format!("github.com/rhysd/actionlint {version} h1:")),
        "go.sum verifies actionlint {version}"
    );
}
