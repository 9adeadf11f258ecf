#!/usr/bin/env bash
# The reference path for the datapath benchmark, built by hand with `ip` and no sarasa: the same
# shape as a sarasa lab (fabric namespace with an underlay bridge, node namespaces on veth
# uplinks, in each node a bridge with a pod veth, pods in their own namespaces) and the same
# cross-node backend (vxlan: device id 1, dstport 8472, nolearning, static FDB + neighbour
# entries, onlink routes; host-gw: a route per remote podCIDR via the peer node). No firewall
# rules. Everything lives in namespaces named sarasa-hb-*; the root namespace is never touched.
#
#   bench/handbuilt.sh up vxlan|host-gw   build it (removes a leftover first)
#   bench/handbuilt.sh down               remove every sarasa-hb-* namespace
#   bench/handbuilt.sh check              ping pod-1 -> pod-2 (exit code says whether it works)
#
# Pods: namespaces sarasa-hb-pod-1 (10.77.1.2 on node-1) and sarasa-hb-pod-2 (10.77.2.2 on
# node-2). Underlay 192.168.77.0/24 (fabric .1, nodes .11 and .12); podCIDRs 10.77.N.0/24.
set -euo pipefail

P=sarasa-hb
UNDERLAY=192.168.77
PODNET=10.77
UPLINK_MTU=1500
VXLAN_OVERHEAD=50 # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14, as the agent computes

ns() { local n=$1; shift; ip netns exec "$n" "$@"; }

down() {
  local n
  for n in $(ip netns list | awk '{print $1}' | grep "^$P-" || true); do
    ip netns del "$n" 2>/dev/null || echo "handbuilt: could not remove netns $n" >&2
  done
}

up() {
  local backend=$1 mtu
  case $backend in
    vxlan) mtu=$((UPLINK_MTU - VXLAN_OVERHEAD)) ;;
    host-gw) mtu=$UPLINK_MTU ;;
    *) echo "handbuilt: backend must be vxlan or host-gw, got '$backend'" >&2; return 2 ;;
  esac
  down
  local fab=$P-fabric
  ip netns add "$fab"
  ns "$fab" ip link set lo up
  ns "$fab" ip link add underlay type bridge
  ns "$fab" ip addr add "$UNDERLAY.1/24" dev underlay
  ns "$fab" ip link set underlay up
  ns "$fab" sysctl -qw net.ipv4.ip_forward=1

  local i node pod
  for i in 1 2; do
    node=$P-node-$i
    pod=$P-pod-$i
    ip netns add "$node"
    ns "$node" ip link set lo up
    # Uplink: node eth0 <-> fabric port n$i on the underlay bridge.
    ns "$fab" ip link add "n$i" type veth peer name eth0 netns "$node"
    ns "$fab" ip link set "n$i" master underlay up
    ns "$node" ip addr add "$UNDERLAY.1$i/24" dev eth0
    ns "$node" ip link set eth0 up
    ns "$node" ip route add default via "$UNDERLAY.1" dev eth0
    ns "$node" sysctl -qw net.ipv4.ip_forward=1
    # Node bridge with the podCIDR's gateway address, as the CNI plugin's bridge mode makes it.
    ns "$node" ip link add sarasa0 type bridge
    ns "$node" ip addr add "$PODNET.$i.1/24" dev sarasa0
    ns "$node" ip link set sarasa0 up
    # Pod: eth0 in its own namespace, host end on the node bridge, pod MTU from the backend.
    ip netns add "$pod"
    ns "$pod" ip link set lo up
    ns "$node" ip link add "veth$i" mtu "$mtu" type veth peer name eth0 mtu "$mtu" netns "$pod"
    ns "$node" ip link set "veth$i" master sarasa0 up
    ns "$pod" ip addr add "$PODNET.$i.2/24" dev eth0
    ns "$pod" ip link set eth0 up
    ns "$pod" ip route add default via "$PODNET.$i.1" dev eth0
  done

  local j peer
  if [ "$backend" = vxlan ]; then
    for i in 1 2; do
      ns "$P-node-$i" ip link add sarasa.1 type vxlan id 1 dstport 8472 local "$UNDERLAY.1$i" \
        dev eth0 nolearning
      ns "$P-node-$i" ip link set sarasa.1 mtu "$mtu" up
      ns "$P-node-$i" ip addr add "$PODNET.$i.0/32" dev sarasa.1
    done
    for i in 1 2; do
      j=$((3 - i))
      node=$P-node-$i
      peer=$(ns "$P-node-$j" cat /sys/class/net/sarasa.1/address)
      ns "$node" bridge fdb append "$peer" dev sarasa.1 dst "$UNDERLAY.1$j"
      ns "$node" ip neigh replace "$PODNET.$j.0" lladdr "$peer" dev sarasa.1 nud permanent
      ns "$node" ip route add "$PODNET.$j.0/24" via "$PODNET.$j.0" dev sarasa.1 onlink
    done
  else
    for i in 1 2; do
      j=$((3 - i))
      ns "$P-node-$i" ip route add "$PODNET.$j.0/24" via "$UNDERLAY.1$j" dev eth0
    done
  fi
}

# A TCP exchange pod-1 -> pod-2 with bench/rr.py (no ping on every machine).
check() {
  local rr pidf rc=0
  rr="$(dirname "$0")/rr.py"
  pidf=$(mktemp /tmp/sarasa-hb-check.XXXXXX)
  ns "$P-pod-2" python3 "$rr" server --port 5399 --daemon --pidfile "$pidf" --lifetime 10
  ns "$P-pod-1" timeout 10 python3 "$rr" client --host "$PODNET.2.2" --port 5399 --duration 0.2 \
    --connect-timeout 3 >/dev/null || rc=$?
  kill "$(cat "$pidf")" 2>/dev/null || true
  rm -f "$pidf"
  return $rc
}

case ${1:-} in
  up) up "${2:-}" ;;
  down) down ;;
  check) check ;;
  *) echo "usage: $0 up vxlan|host-gw | down | check" >&2; exit 2 ;;
esac
