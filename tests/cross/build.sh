#!/usr/bin/env bash
# Builds a static klm for each architecture given (all four by default:
# amd64 arm64 ppc64le s390x; tests/cross/lib.sh says which toolchain builds
# which), checks each binary's ELF machine and byte order and that it is
# static, and runs it, under the matching qemu-user for a foreign one:
#   klm --version                        prints "klm <the crate's version>"
#   klm plan --help                      exits 0
#   klm select-nodes --batch-size 0      exits 2 (bad input, refused by the parser)
#   klm select-nodes --kubeconfig <none> exits 2 (bad input, from klm's runtime:
#                                        the error path, no cluster touched)
# Copies each binary to target/cross/bin/klm-linux-<arch> and prints a line
# per architecture with its build time and size.
#
#   bash tests/cross/build.sh [--release] [ARCH...]
#
# Debug builds (the default) share their dependencies with tests/cross/unit.sh;
# --release builds the shipped profile (thin LTO, stripped).
set -euo pipefail
cd "$(dirname "$0")/../.."
cross_profile=dev
if [[ ${1:-} == --release ]]; then
  cross_profile=release
  shift
fi
source tests/cross/lib.sh
cross_require_tools
arches=("$@")
((${#arches[@]})) || arches=("${cross_arches[@]}")
profile_args=()
profile_dir=debug
if [[ $cross_profile == release ]]; then
  profile_args=(--release)
  profile_dir=release
fi

fail() {
  echo "cross: $arch: $*" >&2
  exit 1
}

# check_elf BIN: the ELF header names the target's machine and byte order;
# static: no program interpreter and no shared library needed.
check_elf() {
  local header program dynamic
  header=$(readelf -h "$1")
  grep -q "Machine: *${elf_machine}\$" <<<"$header" ||
    fail "$1 is not a $elf_machine binary: $(grep 'Machine:' <<<"$header")"
  grep -q "Data: .*${elf_data}" <<<"$header" ||
    fail "$1 is not $elf_data: $(grep 'Data:' <<<"$header")"
  program=$(readelf -lW "$1")
  ! grep -q 'Requesting program interpreter' <<<"$program" ||
    fail "$1 is dynamically linked: $(grep 'program interpreter' <<<"$program")"
  dynamic=$(readelf -dW "$1")
  ! grep -q '(NEEDED)' <<<"$dynamic" ||
    fail "$1 needs shared libraries: $(grep '(NEEDED)' <<<"$dynamic" | tr -s ' ' | tr '\n' ' ')"
}

# expect CODE STDERR_PART ARGS...: runs klm (under qemu for a foreign one)
# and checks its exit code and, when given, a part of what it printed.
expect() {
  local code=$1 part=$2 out status
  shift 2
  set +e
  out=$(${qemu:+"$qemu"} "$bin" "$@" 2>&1)
  status=$?
  set -e
  ((status == code)) || fail "klm $* exited $status, not $code: $(head -n 5 <<<"$out")"
  [[ -z $part || $out == *"$part"* ]] || fail "klm $* did not print '$part': $(head -n 5 <<<"$out")"
}

mkdir -p target/cross/bin
summary=()
for arch in "${arches[@]}"; do
  cross_target "$arch"
  start=$SECONDS
  echo "cross: $arch: building $triple ($toolchain, $cross_profile) in $target_dir" >&2
  cross_cargo "$arch" build -q --bin klm "${profile_args[@]}"
  took=$((SECONDS - start))
  bin=$target_dir/$triple/$profile_dir/klm
  check_elf "$bin"
  version=$(${qemu:+"$qemu"} "$bin" --version) || fail "klm --version failed"
  [[ $version == "klm $cross_version" ]] || fail "klm --version printed '$version', not 'klm $cross_version'"
  expect 0 '' plan --help
  expect 2 'batch size 0' select-nodes --batch-size 0
  expect 2 'does not exist' select-nodes --kubeconfig /nonexistent/kubeconfig
  out=target/cross/bin/klm-linux-$arch
  [[ $cross_profile == release ]] && out+=-release
  ln -f "$bin" "$out" 2>/dev/null || cp "$bin" "$out"
  size=$(stat -c %s "$bin")
  summary+=("$(printf '%-8s %-32s %-9s %4ss  %6s MB  static, %s, smoke ok%s' \
    "$arch" "$triple" "$toolchain" "$took" "$(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1e6 }')" "$elf_machine" "${qemu:+ under $qemu}")")
done
printf 'cross: %s\n' "${summary[@]}"
