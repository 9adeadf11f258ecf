#!/usr/bin/env bash
# Cluster-set benchmark (issue 12, "Performance"): two labs joined with each cable in turn
# (CABLES, default "vxlan wireguard"); for each:
#  - ServiceExport to resolvable in the other cluster: a Service and its ServiceExport are
#    applied in east, ROUNDS times; the time until west's cluster DNS answers
#    <svc>.default.svc.clusterset.local (queried with dig from a west node) — median, p90, max;
#  - gateway failover: east's active gateway's WAN uplink is cut, ROUNDS_FAILOVER times; the
#    time until a new connection from west to east's pod succeeds again — median, max;
#  - the cable's throughput (iperf3, 5 s) from a west pod to an east pod, beside the same
#    client to a pod on another node of its own cluster (the in-cluster VXLAN path), and the
#    ratio;
#  - between pods on the two active gateways: throughput, TCP request/response rate (one
#    connection, sarasa probe --hold) and the machine's CPU seconds per Gbit (for WireGuard
#    also the gateways' agents' share); for vxlan beside the same path built by hand
#    (bench/reference.py), with the ratios (target >= 0.9); request/response RR_ROUNDS
#    times on each path, alternated, and the medians.
# Prints the machine; asserts nothing (targets: resolvable < 1 s, failover < 5 s).
#
#   scripts/bench-clusterset.sh            ROUNDS=20 ROUNDS_FAILOVER=5 RR_ROUNDS=3 CABLES="vxlan wireguard"
#
# Uses the labs csbench-e and csbench-w and the set csbench; removes them on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-20}
ROUNDS_FAILOVER=${ROUNDS_FAILOVER:-5}
CABLES=${CABLES:-vxlan wireguard}
E=csbench-e W=csbench-w SET=csbench
./scripts/install-deps.sh >/dev/null
CARGO_INCREMENTAL=0 cargo build --release -q -p sarasa-cli --bin sarasa -p sarasa-cni --bin sarasa-cni
SARASA=$PWD/target/release/sarasa
cleanup() {
  "$SARASA" clusterset delete "$SET" >/dev/null 2>&1 || true
  "$SARASA" --lab "$E" lab down >/dev/null 2>&1 || true
  "$SARASA" --lab "$W" lab down >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM
cleanup
"$SARASA" --lab "$E" lab up --nodes 3 --pod-cidr 10.245.0.0/16 --service-cidr 10.112.0.0/16 --cluster-id east >/dev/null
"$SARASA" --lab "$W" lab up --nodes 3 --cluster-id west >/dev/null
echo "machine: $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
for cable in $CABLES; do
  "$SARASA" clusterset join "$SET" --lab "$E" --lab "$W" --cable "$cable" >/dev/null
  echo "== cable $cable"
  python3 bench/clusterset.py "$SARASA" "$SET" "$E" "$W" "$ROUNDS" "$ROUNDS_FAILOVER" "$cable"
  "$SARASA" clusterset delete "$SET" >/dev/null
done
