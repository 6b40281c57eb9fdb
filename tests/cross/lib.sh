# shellcheck shell=bash disable=SC2034 # set here, read by the scripts that source this file
# Sourced by tests/cross/*.sh: the four architectures klm ships for and how
# each is built on a Debian 12 amd64 machine without downloading a toolchain.
#
#   amd64    rustup's host toolchain (the one that builds and tests everything
#            else), crt-static: the same build as tests/argo/static-klm.sh.
#   arm64,   Debian's rustc-web/cargo-web (1.96, bookworm-security) with its
#   ppc64le  packaged std for the target (libstd-rust-web-dev:arm64,
#            :ppc64el); rustup cannot add targets here (no toolchain download).
#   s390x    Debian's rustc-web building std itself from rust-web-src
#            (-Zbuild-std, RUSTC_BOOTSTRAP=1): Debian's packaged s390x std is
#            older (1.85) and a std must come from the compiler's own version.
#
# Every foreign binary is linked statically (glibc crt-static, Debian's cross
# gcc as linker and as C compiler for ring), so qemu-user runs it without a
# foreign sysroot.

cross_arches=(amd64 arm64 ppc64le s390x)
cross_foreign=(arm64 ppc64le s390x)
cross_version=$(sed -n '/^\[package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
cross_debian_rustc=/usr/bin/rustc
cross_debian_cargo=/usr/bin/cargo

# cross_target ARCH: sets triple, gnu (the cross tools' prefix), qemu (the
# qemu-user binary; none for the host), elf_machine (readelf's "Machine:"),
# elf_data (readelf's "Data:" byte order), toolchain (rustup, debian,
# build-std) and target_dir.
cross_target() {
  case $1 in
    amd64) triple=x86_64-unknown-linux-gnu gnu=x86_64-linux-gnu qemu='' \
      elf_machine='Advanced Micro Devices X86-64' elf_data='little endian' \
      toolchain=rustup target_dir=target/static ;;
    arm64) triple=aarch64-unknown-linux-gnu gnu=aarch64-linux-gnu qemu=qemu-aarch64-static \
      elf_machine=AArch64 elf_data='little endian' \
      toolchain=debian target_dir=target/cross/debian ;;
    ppc64le) triple=powerpc64le-unknown-linux-gnu gnu=powerpc64le-linux-gnu qemu=qemu-ppc64le-static \
      elf_machine=PowerPC64 elf_data='little endian' \
      toolchain=debian target_dir=target/cross/debian ;;
    s390x) triple=s390x-unknown-linux-gnu gnu=s390x-linux-gnu qemu=qemu-s390x-static \
      elf_machine='IBM S/390' elf_data='big endian' \
      toolchain=build-std target_dir=target/cross/build-std ;;
    *) echo "cross: unknown architecture $1 (one of: ${cross_arches[*]})" >&2; return 1 ;;
  esac
  # The release profile's binaries are kept apart from the rustup host's
  # target/static, which the rig's image uses.
  if [[ ${cross_profile:-dev} == release && $toolchain == rustup ]]; then
    target_dir=target/cross/rustup
  fi
}

# cross_cargo ARCH ARGS...: runs cargo for ARCH's target with its toolchain,
# static linking, its cross gcc, and qemu as the runner of test binaries.
# s390x builds std with the same flags. The host's build scripts and proc
# macros are built without them (cargo applies RUSTFLAGS to --target only).
cross_cargo() {
  local arch=$1
  shift
  cross_target "$arch" || return 1
  local env_triple=${triple//-/_}
  local upper=${env_triple^^}
  local cmd=(cargo)
  # env's -u options come before its assignments.
  local env=(
    -u CARGO_ENCODED_RUSTFLAGS -u CARGO_BUILD_RUSTFLAGS -u CARGO_BUILD_TARGET -u CARGO_TARGET_DIR
    -u RUSTC_WRAPPER -u RUSTC_WORKSPACE_WRAPPER -u RUSTUP_TOOLCHAIN -u RUSTC_BOOTSTRAP -u RUSTC
    RUSTFLAGS='-C target-feature=+crt-static'
    CARGO_PROFILE_DEV_DEBUG=0
  )
  case $toolchain in
    rustup) ;;
    debian | build-std)
      cmd=("$cross_debian_cargo")
      env+=(RUSTC="$cross_debian_rustc"
        "CARGO_TARGET_${upper}_LINKER=${gnu}-gcc"
        "CC_${env_triple}=${gnu}-gcc" "AR_${env_triple}=${gnu}-ar"
        "CARGO_TARGET_${upper}_RUNNER=${qemu}")
      ;;
  esac
  local extra=()
  if [[ $toolchain == build-std ]]; then
    env+=(RUSTC_BOOTSTRAP=1)
    extra=('-Zbuild-std=std,panic_abort')
  fi
  local sub=$1
  shift
  env "${env[@]}" "${cmd[@]}" "$sub" --locked "${extra[@]}" --target "$triple" --target-dir "$target_dir" "$@"
}

# cross_require_tools: the commands a build needs, with the script that
# installs them when one is missing.
cross_require_tools() {
  local missing=() tool
  for tool in "$cross_debian_rustc" "$cross_debian_cargo" readelf \
    aarch64-linux-gnu-gcc powerpc64le-linux-gnu-gcc s390x-linux-gnu-gcc \
    qemu-aarch64-static qemu-ppc64le-static qemu-s390x-static; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  [[ -e /usr/lib/rustlib/src/rust/library/Cargo.lock ]] || missing+=(rust-web-src)
  [[ -d /usr/lib/rustlib/aarch64-unknown-linux-gnu/lib ]] || missing+=(libstd-rust-web-dev:arm64)
  [[ -d /usr/lib/rustlib/powerpc64le-unknown-linux-gnu/lib ]] || missing+=(libstd-rust-web-dev:ppc64el)
  if ((${#missing[@]})); then
    echo "cross: missing ${missing[*]}; run 'bash tests/cross/packages.sh' (root) first" >&2
    return 1
  fi
}
