#!/usr/bin/env bash
# Runs klm's unit tests (`cargo test --lib` of the klm crate) for each
# foreign architecture given (all three by default: arm64 ppc64le s390x),
# built statically for that target (tests/cross/lib.sh) and run under its
# qemu-user (CARGO_TARGET_<TRIPLE>_RUNNER). Prints the passed count per
# architecture; fails when a test fails or none ran.
#
#   bash tests/cross/unit.sh [ARCH...]
#
# Extra arguments for the test binary: CROSS_TEST_ARGS (e.g. a filter).
#
# Skipped under qemu, because qemu-user cannot do what they test:
# - helm::tests::failures_carry_the_exit_code_and_stderr: spawning a program
#   that does not exist must fail (ENOENT, klm's exit 3); under qemu-user
#   (7.2) glibc's posix_spawn cannot report the child's failed exec, so the
#   spawn "succeeds" and the child exits 127. The same static x86_64 binary
#   behaves so under qemu-x86_64 too; natively it passes in `make unit`.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/cross/lib.sh
cross_require_tools
arches=("$@")
((${#arches[@]})) || arches=("${cross_foreign[@]}")
read -r -a test_args <<<"${CROSS_TEST_ARGS:-}"
qemu_skips=(helm::tests::failures_carry_the_exit_code_and_stderr)
for name in "${qemu_skips[@]}"; do
  test_args+=(--skip "$name")
done
mkdir -p target/cross/logs
summary=()
for arch in "${arches[@]}"; do
  cross_target "$arch"
  if [[ -z $qemu ]]; then
    echo "cross: $arch is the host: its unit tests run in 'make unit'" >&2
    continue
  fi
  log=target/cross/logs/unit-$arch.log
  start=$SECONDS
  echo "cross: $arch: unit tests of klm for $triple ($toolchain) under $qemu" >&2
  status=0
  cross_cargo "$arch" test -p kata-lifecycle-manager --lib -- "${test_args[@]}" >"$log" 2>&1 || status=$?
  took=$((SECONDS - start))
  result=$(grep -E '^test result: ' "$log" | tail -n 1 || true)
  passed=$(sed -n 's/.* \([0-9][0-9]*\) passed;.*/\1/p' <<<"$result")
  failed=$(sed -n 's/.* \([0-9][0-9]*\) failed;.*/\1/p' <<<"$result")
  skipped=$(sed -n 's/.* \([0-9][0-9]*\) filtered out;.*/\1/p' <<<"$result")
  if ((status != 0)) || [[ -z $passed ]] || ((passed == 0)); then
    tail -n 60 "$log" >&2
    echo "cross: $arch: unit tests failed (exit $status; whole log: $log)" >&2
    exit 1
  fi
  summary+=("$(printf '%-8s %5s passed, %s failed, %s skipped under %s (%ss with the build)' \
    "$arch" "$passed" "${failed:-0}" "${skipped:-0}" "$qemu" "$took")")
done
printf 'cross: unit %s\n' "${summary[@]}"
