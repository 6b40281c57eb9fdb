#!/usr/bin/env bash
# Installs the Debian 12 packages that build and run klm for arm64, ppc64le
# and s390x on an amd64 machine (see tests/cross/lib.sh), when any is
# missing: the foreign architectures arm64 and ppc64el for dpkg, Debian's
# Rust 1.96 (rustc-web, cargo-web) with its std for aarch64 and powerpc64le
# and its sources (rust-web-src, for s390x's std), the cross gcc and glibc
# of each target, and qemu-user-static. Needs root and apt-get.
#
# Exits 0 when everything is there or was installed. Where it cannot install
# (not Debian 12 on amd64, not root) it prints one line and exits 3, or 1 with
# CI=true on Debian 12; `make cross-test` then skips the cross tier.
set -euo pipefail

# The std of the targets must be the exact version of rustc-web (Multi-Arch:
# same keeps them equal once installed).
packages=(
  rustc-web cargo-web rust-web-src
  libstd-rust-web-dev:arm64 libstd-rust-web-dev:ppc64el
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross
  gcc-powerpc64le-linux-gnu libc6-dev-ppc64el-cross
  gcc-s390x-linux-gnu libc6-dev-s390x-cross
  qemu-user-static
)
foreign=(arm64 ppc64el)

installed() {
  [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]
}

codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
if [[ $codename != bookworm ]] || [[ $(dpkg --print-architecture 2>/dev/null) != amd64 ]]; then
  echo "cross: needs Debian 12 (bookworm) on amd64 for its Rust and cross packages; this is ${codename:-not Debian} on $(uname -m): skipped" >&2
  exit 3
fi

missing=()
for package in "${packages[@]}"; do
  installed "$package" || missing+=("$package")
done
missing_arches=()
have_arches=" $(dpkg --print-foreign-architectures | tr '\n' ' ') "
for arch in "${foreign[@]}"; do
  [[ $have_arches == *" $arch "* ]] || missing_arches+=("$arch")
done
if ((${#missing[@]} == 0 && ${#missing_arches[@]} == 0)); then
  exit 0
fi
if [[ $(id -u) != 0 ]]; then
  need="${missing[*]}${missing_arches[*]:+ and the dpkg architectures ${missing_arches[*]}}"
  if [[ ${CI:-} == true ]]; then
    echo "cross: cannot install ${need# } (needs root)" >&2
    exit 1
  fi
  echo "cross: cannot install ${need# } (needs root): skipped" >&2
  exit 3
fi
export DEBIAN_FRONTEND=noninteractive
for arch in "${missing_arches[@]}"; do
  echo "cross: adding the dpkg architecture $arch" >&2
  dpkg --add-architecture "$arch"
done
echo "cross: installing ${missing[*]}" >&2
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
