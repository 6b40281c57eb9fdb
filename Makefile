# The few commands a newcomer types. `make demo` shows an upgrade on the test
# rig; `make test` runs every check and test (what CI runs).

BIN := target/rig/bin
CHART := chart/kata-lifecycle-manager

.PHONY: all build rig-bins host-packages static-klm demo rig-up test lint unit integration bench bench-workflow clean-rig

all: build

## Build klm (debug).
build:
	cargo build --bin klm

## Build the rig's Go binaries (control plane, kwok, helm, Argo, argolint, actionlint) when missing or stale.
rig-bins:
	bash tests/rig/build.sh
	bash tests/argo/build.sh
	@if [ -f tests/argolint/build.sh ]; then bash tests/argolint/build.sh; fi
	@if [ -f tests/tools/build.sh ]; then bash tests/tools/build.sh; fi

## Debian packages of the rig's real node (containerd, runc, CNI plugins), installed when missing (root).
host-packages:
	bash tests/argo/host-packages.sh

## A static klm (crt-static, the host's own target) for the image the Argo tier's steps run.
static-klm:
	bash tests/argo/static-klm.sh

## The way users run it, on the rig: helm install both charts, then argo submit an upgrade of three
## simulated nodes (steps on a real kubelet node, a real Argo controller) and one that rolls back.
demo: rig-bins host-packages
	cargo build --bin klm
	cargo build -p klm-rig --bin klm-rig
	bash tests/demo.sh

## Start the rig for a person (Ctrl-C stops it); prints how to point kubectl and klm at it.
rig-up: rig-bins
	cargo run -q -p klm-rig --bin klm-rig -- up --nodes 3

## Every check and test: formatting, lints, chart lint, unit and integration tests on the rig.
test: rig-bins lint unit integration

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(BIN)/helm lint $(CHART) --set-string defaults.verificationPod=placeholder

unit:
	cargo test --workspace --lib --bins

integration: rig-bins host-packages
	cargo test --workspace --tests -- --test-threads=4

## Speed measurements on the rig (numbers for the notes; not a test).
bench: rig-bins
	cargo build --release --bin klm
	cargo build --release -p klm-rig --bin klm-rig
	bash tests/bench.sh

## The WorkflowTemplate on the real controller: wall time, Argo's share of each wave, the
## workflow's size and capacity (NODES=10 by default; KLM_RIG_ARGO_REQUEUE=10s for Argo's default).
bench-workflow: rig-bins host-packages
	cargo build --bin klm
	cargo build -p klm-rig --bin klm-rig
	bash tests/bench-workflow.sh
