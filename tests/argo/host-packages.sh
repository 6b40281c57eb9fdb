#!/usr/bin/env bash
# Installs the Debian packages the rig's real node needs (containerd, runc,
# containernetworking-plugins), its loopback registry (docker-registry, the
# distribution registry 2.8; apache2-utils' htpasswd for its Basic auth test) and the rig's Prometheus (metric gates) when any
# is missing. Needs root and apt-get;
# prints one line and exits 0 when it cannot install (the tier's capability
# check then says what is missing), unless CI=true, where it fails.
set -euo pipefail
missing=()
command -v containerd >/dev/null 2>&1 || missing+=(containerd)
[[ -x /usr/sbin/runc || -x /usr/bin/runc ]] || missing+=(runc)
[[ -x /usr/lib/cni/loopback ]] || missing+=(containernetworking-plugins)
[[ -x /usr/bin/docker-registry ]] || missing+=(docker-registry)
# htpasswd (bcrypt) for the registry test's Basic auth (tests/rig/tests/registry.rs).
command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
# The CA bundle the image carries (tests/image/build.sh, the rig's image).
[[ -s /etc/ssl/certs/ca-certificates.crt ]] || missing+=(ca-certificates)
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
# docker-registry's and prometheus's packages start system services (:5000
# and :9090, every interface); the rig runs its own on 127.0.0.1, so the
# packages' are never started (policy-rc.d denies it during the install) and
# are disabled.
policy=/usr/sbin/policy-rc.d
own_policy=false
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  own_policy=true
fi
status=0
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || status=$?
if $own_policy; then rm -f "$policy"; fi
((status == 0)) || exit "$status"
if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
  systemctl disable --now docker-registry.service prometheus.service >/dev/null 2>&1 || true
fi
