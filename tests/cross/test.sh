#!/usr/bin/env bash
# The cross tier of `make test`: installs the Debian packages when missing
# (tests/cross/packages.sh), builds and smoke-runs static klm for all four
# architectures (tests/cross/build.sh), and runs the unit tests under qemu for
# the foreign architectures in CROSS_UNIT_ARCHES (default: all three, arm64
# ppc64le s390x; an empty list runs none). Where the packages cannot be had (not Debian 12 on amd64, or not
# root) it prints one line and is skipped; with CI=true on Debian 12 it must run.
set -euo pipefail
cd "$(dirname "$0")/../.."
status=0
bash tests/cross/packages.sh || status=$?
if ((status == 3)); then
  echo "cross: the cross tier is skipped (make cross runs it where the packages are)" >&2
  exit 0
fi
((status == 0)) || exit "$status"
bash tests/cross/build.sh
read -r -a unit_arches <<<"${CROSS_UNIT_ARCHES-arm64 ppc64le s390x}"
if ((${#unit_arches[@]})); then
  bash tests/cross/unit.sh "${unit_arches[@]}"
fi
