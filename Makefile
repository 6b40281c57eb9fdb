# The few commands a newcomer types. `make demo` shows an upgrade on the test
# rig; `make test` runs every check and test (what CI runs).

BIN := target/rig/bin
CHART := chart/kata-lifecycle-manager

.PHONY: all build rig-bins host-packages static-klm cross-packages cross cross-release cross-test image image-release release-check demo rig-up test lint unit integration bench bench-workflow clean-rig

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

## Debian 12 packages of the cross builds (Rust 1.96 with the arm64 and ppc64el std and its sources, the
## cross gcc, qemu-user-static), installed when missing (root).
cross-packages:
	bash tests/cross/packages.sh

## klm for linux/amd64, arm64, ppc64le and s390x: static builds, checked and smoke-run (foreign ones
## under qemu-user), then klm's unit tests for each foreign architecture under qemu. README: "Other
## architectures".
cross: cross-packages
	bash tests/cross/build.sh
	bash tests/cross/unit.sh arm64 ppc64le s390x

## The same four binaries in the release profile (thin LTO, stripped), checked and smoke-run.
cross-release: cross-packages
	bash tests/cross/build.sh --release

## The klm image for the four platforms as one OCI image index in target/image/oci, built here
## without pulling a base (klm from `make cross`'s build, helm from the rig's Go module, Debian's CA
## bundle), then checked; prints the index digest and each platform's sizes. image/README.md.
image: cross-packages
	bash tests/image/build.sh

## The same with klm in the release profile (what ships).
image-release: cross-packages
	bash tests/image/build.sh --release

## The release's chain here: the four platforms' index in the release profile, pushed with the chart
## (the index digest in its values) to a registry on loopback, read back by digest and checked per
## platform (ELF machine of klm and helm), the pulled chart rendered. image/README.md.
release-check: rig-bins host-packages cross-packages
	bash tests/image/release-check.sh

## make test's share: `make cross`, with the unit tests under qemu for CROSS_UNIT_ARCHES only (all
## three by default; `make test CROSS_UNIT_ARCHES=s390x` keeps one), skipped with one line where
## Debian 12's packages cannot be installed.
CROSS_UNIT_ARCHES ?= arm64 ppc64le s390x
cross-test:
	CROSS_UNIT_ARCHES='$(CROSS_UNIT_ARCHES)' bash tests/cross/test.sh

## The way users run it, on the rig: helm install both charts, then argo submit an upgrade of three
## simulated nodes (steps on a real kubelet node, a real Argo controller) and one that rolls back.
demo: rig-bins host-packages
	cargo build --bin klm
	cargo build -p klm-rig --bin klm-rig
	bash tests/demo.sh

## Start the rig for a person (Ctrl-C stops it); prints how to point kubectl and klm at it.
rig-up: rig-bins
	cargo run -q -p klm-rig --bin klm-rig -- up --nodes 3

## Every check and test: formatting, lints, chart lint, unit tests (and klm for the other
## architectures under qemu), integration tests on the rig.
test: rig-bins lint unit cross-test integration

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

## The WorkflowTemplate on the real controller: wall time, each wave's time, Argo's share and API
## requests (klm's by step), the workflow's size and capacity (NODES=10 and BATCH=1 by default;
## KLM_RIG_ARGO_REQUEUE=10s for Argo's default; KLM_RIG_PROBELESS_INSTALL_SECS=0 for no install time).
bench-workflow: rig-bins host-packages
	cargo build --bin klm
	cargo build -p klm-rig --bin klm-rig
	bash tests/bench-workflow.sh
