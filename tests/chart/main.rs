//! Chart tests: lint, deterministic rendering, golden files, template wiring, Argo validation.
