#!/usr/bin/env bash
# Installs the Debian packages the rig's real node needs (containerd, runc,
# containernetworking-plugins) and the rig's Prometheus (metric gates) when any is
# missing. Needs root and apt-get;
# prints one line and exits 0 when it cannot install (the tier's capability
# check then says what is missing), unless CI=true, where it fails.
set -euo pipefail
missing=()
command -v containerd >/dev/null 2>&1 || missing+=(containerd)
[[ -x /usr/sbin/runc || -x /usr/bin/runc ]] || missing+=(runc)
[[ -x /usr/lib/cni/loopback ]] || missing+=(containernetworking-plugins)
# The rig's Prometheus (metric gates): only the binary runs, on loopback.
[[ -x /usr/bin/prometheus ]] || missing+=(prometheus)
if ((${#missing[@]} == 0)); then
  exit 0
fi
if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "host-packages: cannot install ${missing[*]} (needs root and apt-get); the real-node tier will be skipped" >&2
  [[ ${CI:-} == true ]] && exit 1
  exit 0
fi
echo "host-packages: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
