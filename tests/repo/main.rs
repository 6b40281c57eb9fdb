//! Repository checks: GitHub workflows pass actionlint, the Containerfile is pinned and shell-free.
