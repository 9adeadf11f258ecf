#!/usr/bin/env bash
# BGP convergence benchmark (issue 13, "Performance"): in a `--backend bgp` lab, node-3's
# speaker leaves (its session to the fabric's route reflector disabled: a Cease, so the router
# withdraws at once) and joins again, ROUNDS times; prints the time until the fabric router and
# node-1's kernel have lost / hold the route to node-3's podCIDR (medians, p90, max), the
# timers, and the machine. Asserts nothing (target: < 1 s with the lab's timers).
#
#   scripts/bench-bgp.sh            ROUNDS=20
#
# Uses the lab `bgpbench` (BENCH_LAB); removes it on exit, also on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
LAB=${BENCH_LAB:-bgpbench}
ROUNDS=${ROUNDS:-20}
./scripts/install-deps.sh >/dev/null
CARGO_INCREMENTAL=0 cargo build --release -q -p sarasa-cli --bin sarasa -p sarasa-cni --bin sarasa-cni
SARASA=$PWD/target/release/sarasa
s() { "$SARASA" --lab "$LAB" "$@"; }
cleanup() { s lab down >/dev/null 2>&1 || true; }
trap cleanup EXIT INT TERM
s lab down >/dev/null 2>&1 || true
s lab up --nodes 3 --backend bgp >/dev/null
cidr=$(s get nodes -o json | python3 -c 'import json,sys; print(next(n["spec"]["podCIDR"] for n in json.load(sys.stdin)["items"] if n["metadata"]["name"]=="node-3"))')
# The sessions come up after the agents; wait (bounded) for node-1 to hold node-3's route.
for _ in $(seq 1 300); do
  ip -n "sarasa-$LAB-node-1" route show "$cidr" proto bird | grep -q "$cidr" && break
  sleep 0.1
done
echo "machine: $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg); $(bird --version 2>&1)"
echo "timers: nodes keepalive 1 s, hold 3 s, connect delay 0 s, retry 1 s; router passive (dynamic neighbours)"
python3 bench/bgp_converge.py "$LAB" node-3 node-1 "$cidr" "$ROUNDS" "$SARASA"
