#!/usr/bin/env bash
# Installs the Debian packages sarasa's lab and tests use (idempotent; skips what is present).
set -euo pipefail
pkgs=(nftables iproute2 podman runc containernetworking-plugins conntrack iperf3 busybox-static python3 graphviz dnsutils nsd dnsperf python3-venv curl jq bird2 iputils-ping tcpdump iptables)
# The lab_kubectl test drives a real kubectl: keep the machine's own when it has one.
[ -x /usr/bin/kubectl ] || pkgs+=(kubernetes-client)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
